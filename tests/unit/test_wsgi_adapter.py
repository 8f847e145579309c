"""The PEP 3333 adapter without sockets: environ, start_response, wsgi.input, file_wrapper."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.validate import validator

import pytest

from sockact.errors import InvalidResponse
from sockact.http.engine import Connection, Data, Request
from sockact.http.limits import Limits
from sockact.http.requests import line_text
from sockact.wsgi.environ import (
    FileWrapper,
    InputStream,
    StartResponse,
    check_response,
    close_iterable,
    connection_environ,
    request_environ,
    request_part,
    site_environ,
)


def _request(raw: bytes) -> tuple[Connection, Request]:
    conn = Connection(Limits())
    conn.receive_data(raw)
    request = conn.next_event()
    assert isinstance(request, Request)
    return conn, request


def _pull(conn: Connection) -> Callable[[], bytes]:
    def pull() -> bytes:
        event = conn.next_event()
        return event.data if isinstance(event, Data) else b""

    return pull


def environ_for(raw: bytes, peer: Any = ("10.0.0.1", 4321), scheme: str = "http",
                extra: dict[str, Any] | None = None, root_path: str = "") -> dict[str, Any]:
    conn, request = _request(raw)
    conn_env = connection_environ(site_environ(scheme, root_path), peer, extra)
    return request_environ(conn_env, request, InputStream(_pull(conn)), lambda: ("local.example", "8000"))


def call(app: Callable[..., Any], raw: bytes) -> tuple[StartResponse, bytes]:
    """Run ``app`` as serve_connection does, collecting the body instead of sending it."""
    written: list[bytes] = []
    start = StartResponse(written.append)
    result = app(environ_for(raw), start)
    try:
        for chunk in result:
            start.headers_sent = start.headers_sent or bool(chunk)
            written.append(chunk)
    finally:
        close_iterable(result)
    return start, b"".join(written)


# -- environ


def test_required_keys() -> None:
    env = environ_for(b"POST /a%20b/c?x=%20&y HTTP/1.1\r\nHost: example.com\r\nContent-Type: text/plain\r\n"
                      b"Content-Length: 3\r\n\r\nabc")
    assert {k: env[k] for k in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE",
                                "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR",
                                "REMOTE_PORT", "HTTP_HOST")} == {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/a b/c", "QUERY_STRING": "x=%20&y",
        "CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "3", "SERVER_NAME": "example.com", "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.1", "REMOTE_PORT": "4321", "HTTP_HOST": "example.com"}
    assert env["wsgi.version"] == (1, 0) and env["wsgi.url_scheme"] == "http"
    assert (env["wsgi.multithread"], env["wsgi.multiprocess"], env["wsgi.run_once"]) == (False, True, False)
    assert env["wsgi.input_terminated"] is True and env["wsgi.errors"] is sys.stderr
    assert env["wsgi.file_wrapper"] is FileWrapper
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["wsgi.input"].read() == b"abc"


def test_path_info_is_decoded_bytes_in_latin1() -> None:
    env = environ_for(b"GET /caf%C3%A9/%2Fx HTTP/1.1\r\n\r\n")
    assert env["PATH_INFO"] == "/caf\u00c3\u00a9//x"
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café//x"
    assert env["RAW_URI"] == "/caf%C3%A9/%2Fx"


@pytest.mark.parametrize(("target", "script_name", "path_info"), [
    ("/app/env", "/app", "/env"),
    ("/app", "/app", ""),
    ("/app/", "/app", "/"),
    ("/app%2Fenv", "/app", "/env"),  # PATH_INFO is decoded before the prefix is cut, as gunicorn does
    ("/application", "", "/application"),  # not under the mount: the app sees the whole path
    ("/other", "", "/other"),
])
def test_root_path_is_script_name_and_cut_from_path_info(target: str, script_name: str, path_info: str) -> None:
    env = environ_for(f"GET {target}?q=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode(), root_path="/app")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == (script_name, path_info, "q=1")


def test_absolute_form_target() -> None:
    env = environ_for(b"GET http://example.com:81/p/q?z=1 HTTP/1.1\r\nHost: example.com:81\r\n\r\n")
    assert (env["PATH_INFO"], env["QUERY_STRING"], env["SERVER_PORT"]) == ("/p/q", "z=1", "81")


def test_repeated_fields_are_joined_and_underscores_dropped() -> None:
    env = environ_for(b"GET / HTTP/1.1\r\nAccept: a\r\nAccept: b\r\nCookie: c=1\r\nCookie: d=2\r\n"
                      b"X_Forwarded_For: evil\r\nX-Forwarded-For: good\r\n\r\n")
    assert env["HTTP_ACCEPT"] == "a, b"
    assert env["HTTP_COOKIE"] == "c=1; d=2"
    assert env["HTTP_X_FORWARDED_FOR"] == "good"


@pytest.mark.parametrize(("host", "scheme", "name", "port"), [
    ("example.com", "http", "example.com", "80"),
    ("example.com", "https", "example.com", "443"),
    ("example.com:8080", "http", "example.com", "8080"),
    ("[::1]:8443", "https", "[::1]", "8443"),
    ("[::1]", "http", "[::1]", "80"),
])
def test_server_name_from_host(host: str, scheme: str, name: str, port: str) -> None:
    env = environ_for(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode(), scheme=scheme)
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["wsgi.url_scheme"]) == (name, port, scheme)


def test_without_host_the_local_address_is_used() -> None:
    env = environ_for(b"GET / HTTP/1.0\r\n\r\n")
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["SERVER_PROTOCOL"]) == ("local.example", "8000", "HTTP/1.0")


@pytest.mark.parametrize(("peer", "addr", "port"), [(("::1", 9, 0, 0), "::1", "9"), ("", "", None),
                                                    (None, "", None), ("/run/client.sock", "/run/client.sock", None)])
def test_remote_address(peer: Any, addr: str, port: str | None) -> None:
    env = environ_for(b"GET / HTTP/1.1\r\n\r\n", peer=peer, extra={"sockact.conn_id": 3})
    assert (env["REMOTE_ADDR"], env.get("REMOTE_PORT"), env["sockact.conn_id"]) == (addr, port, 3)


# -- PEP 3333 through wsgiref's validator


def _validated(app: Callable[..., Any]) -> Callable[..., Any]:
    return validator(app)


def test_validator_accepts_environ_and_input() -> None:
    @_validated
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = environ["wsgi.input"]
        lines = [body.readline(), body.readline(2), *body.readlines()]
        environ["wsgi.errors"].write("")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return lines

    start, body = call(app, b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"4\r\nab\nc\r\n5\r\nd\nef\n\r\n0\r\n\r\n")
    assert start.status == "200 OK" and body == b"ab\ncd\nef\n"


def test_validator_accepts_write_and_file_wrapper() -> None:
    @_validated
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"first ")
        return environ["wsgi.file_wrapper"](io.BytesIO(b"then the file"), 4)

    _, body = call(app, b"GET / HTTP/1.1\r\n\r\n")
    assert body == b"first then the file"


# -- start_response and exc_info


def test_second_start_response_needs_exc_info() -> None:
    start = StartResponse(lambda data: None)
    start("200 OK", [])
    with pytest.raises(InvalidResponse):
        start("500 Oops", [])


def test_exc_info_replaces_before_headers_are_sent() -> None:
    start = StartResponse(lambda data: None)
    start("200 OK", [("X-A", "1")])
    try:
        raise ValueError("app failed")
    except ValueError:
        start("500 Internal Server Error", [("X-B", "2")], sys.exc_info())
    assert (start.status, start.headers) == ("500 Internal Server Error", [("X-B", "2")])


def test_exc_info_reraises_after_headers_are_sent() -> None:
    start = StartResponse(lambda data: None)
    start("200 OK", [])
    start.headers_sent = True
    with pytest.raises(ValueError, match="app failed"):
        try:
            raise ValueError("app failed")
        except ValueError:
            start("500 Internal Server Error", [], sys.exc_info())


@pytest.mark.parametrize(("status", "headers"), [
    ("099", []), ("101", []), ("\u0968\u0966\u0966", []), ("20", []), ("OK", []), (b"200 OK", []),
    ("2000 OK", []), ("099 Low", []), ("200 OK\r\nX: y", []),
    ("200 OK", ()), ("200 OK", [("X", 1)]), ("200 OK", [(b"X", "1")]), ("200 OK", [("X",)]),
    ("200 OK", [("Bad Name", "1")]), ("200 OK", [("X", "a\r\nb")]), ("200 OK", [("X", "a\nb")]),
    ("200 OK", [("X", "a\0b")]), ("200 OK", [("X", "\u20ac")]), ("200 OK", [("Transfer-Encoding", "chunked")]),
    ("200 OK", [("Keep-Alive", "5")]), ("200 OK", [("Upgrade", "h2c")]), ("200 OK", [("Connection", "keep-alive")]),
    ("200 OK", [("Content-Length", "x")]), ("200 OK", [("Content-Length", "1"), ("Content-Length", "2")]),
])
def test_invalid_responses(status: Any, headers: Any) -> None:
    with pytest.raises(InvalidResponse):
        check_response(status, headers)


def test_a_status_of_its_code_alone_gets_the_usual_phrase() -> None:
    # As gunicorn takes it; the status line needs the space before the (maybe empty) phrase.
    for _ in range(2):  # remembered alike
        assert check_response("200", []) == ("200 OK", [])
        assert check_response("503", [("X", "1")]) == ("503 Service Unavailable", [("X", "1")])
        assert check_response("299", []) == ("299 ", [])


def test_connection_close_passes_to_the_engine_and_length_copies_become_one() -> None:
    # The engine honours "Connection: close" and frames by Content-Length (test_http_engine.py).
    status, headers = check_response(
        "200 OK", [("Connection", "close"), ("Content-Length", "3"), ("content-length", "3"), ("X-Y", "é")])
    assert (status, headers) == ("200 OK", [("Connection", "close"), ("Content-Length", "3"), ("X-Y", "é")])


def test_a_response_checked_before_is_checked_alike_again() -> None:
    # What passed is remembered (wsgi._CHECKED_*), so the second answer must equal the first, and the
    # fields that need more than a yes are checked again each time.
    for _ in range(2):
        assert check_response("200 OK", [("X-A", "1"), ("Content-Length", "3"), ("Connection", "close")]) == (
            "200 OK", [("X-A", "1"), ("Content-Length", "3"), ("Connection", "close")])
        with pytest.raises(InvalidResponse):
            check_response("200 OK", [("X-A", "1"), ("Content-Length", "3"), ("Content-Length", "4")])
        with pytest.raises(InvalidResponse):
            check_response("200 OK", [("Content-Length", "4"), ("Content-Length", "3")])
        assert check_response("200 OK", [("Content-Length", "3"), ("Content-Length", " 3")]) == (
            "200 OK", [("Content-Length", "3")])
        assert check_response("200 OK", [("Content-Length", " 3")]) == ("200 OK", [("Content-Length", "3")])
        with pytest.raises(InvalidResponse):
            check_response("200 OK", [("X-A", "1"), ("Connection", "keep-alive")])
        with pytest.raises(InvalidResponse):
            check_response("200 OK", [["X-A", "1"]])


def test_the_same_answer_again_is_checked_alike_and_a_changed_list_anew() -> None:
    # The last answer is remembered whole (responses._last): equal again, it gives the same result; the
    # app's own list, changed after its call, is checked as it is now.
    headers = [("X-A", "1"), ("Content-Length", "3"), ("Content-Length", "3")]
    first = check_response("200 OK", headers)
    assert check_response("200 OK", [("X-A", "1"), ("Content-Length", "3"), ("Content-Length", "3")]) == first
    assert first == ("200 OK", [("X-A", "1"), ("Content-Length", "3")])
    headers.append(("X-B", "a\r\nb"))
    with pytest.raises(InvalidResponse):
        check_response("200 OK", headers)
    with pytest.raises(InvalidResponse):
        check_response("200 OK", [["X-A", "1"], ["Content-Length", "3"], ["Content-Length", "3"]])
    with pytest.raises(InvalidResponse):
        check_response(b"200 OK", [("X-A", "1"), ("Content-Length", "3"), ("Content-Length", "3")])


def test_close_is_called_even_when_iteration_fails() -> None:
    closed = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"a"
            raise RuntimeError("boom")

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Body:
        start_response("200 OK", [])
        return Body()

    with pytest.raises(RuntimeError):
        call(app, b"GET / HTTP/1.1\r\n\r\n")
    assert closed == [True]


# -- wsgi.input and the file wrapper


def _stream(*pieces: bytes) -> InputStream:
    feed = iter(pieces)
    return InputStream(lambda: next(feed, b""))


def test_input_read_sizes() -> None:
    stream = _stream(b"ab", b"cdef", b"g")
    assert stream.read(3) == b"abc"
    assert stream.read(0) == b""
    assert stream.read(None) == b"defg"
    assert stream.read() == b"" and stream.read(5) == b""


def test_input_readline_and_iteration() -> None:
    stream = _stream(b"one\ntw", b"o\nthr", b"ee")
    assert stream.readline(2) == b"on"
    assert stream.readline() == b"e\n"
    assert list(stream) == [b"two\n", b"three"]
    assert stream.readline() == b""
    assert _stream(b"a\nb\nc\n").readlines(3) == [b"a\n", b"b\n"]


def test_input_reads_only_when_asked() -> None:
    pulls = []

    def pull() -> bytes:
        pulls.append(1)
        return b"x\n" if len(pulls) < 3 else b""

    stream = InputStream(pull)
    assert pulls == []
    stream.readline()
    assert len(pulls) == 1


def test_file_wrapper_iterates_in_blocks_and_closes() -> None:
    f = io.BytesIO(b"abcdefg")
    wrapper = FileWrapper(f, 3)
    assert list(wrapper) == [b"abc", b"def", b"g"]
    wrapper.close()
    assert f.closed


@pytest.mark.parametrize(("raw", "scheme", "root"), [
    (b"GET /a%20b?x=1 HTTP/1.1\r\nHost: h:81\r\nCookie: a=1\r\nCookie: b=2\r\nX_Bad: 1\r\n\r\n", "http", ""),
    (b"POST /app/x HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n", "https", "/app"),
    (b"GET /other HTTP/1.0\r\nHost: [::1]:8443\r\n\r\n", "https", "/app"),
    (b"GET http://a.test:9/p?q HTTP/1.1\r\nHost: ignored\r\n\r\n", "http", ""),
])
def test_a_request_part_over_a_connection_is_the_request_environ(raw: bytes, scheme: str, root: str) -> None:
    """request_part: what a request's fields and line give, alone; updated onto any connection's environ, it is
    that request's environ there, peer and all."""
    _, request = _request(raw)
    part = request_part(request.headers, line_text(request), scheme, root)
    assert part is not None
    for peer in [("10.0.0.1", 4321), ("192.0.2.9", 1)]:
        conn = connection_environ(site_environ(scheme, root), peer, {"sockact.conn_id": 7})
        whole = request_environ(conn, request, None, lambda: ("local", "1"))
        del whole["wsgi.input"]
        assert {**conn, **part} == whole


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.0\r\n\r\n",  # no Host: the connection's socket names the server
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.1\r\n\r\n",  # a trusted peer's would change it
    b"GET / HTTP/1.1\r\nHost: h\r\nForwarded: for=203.0.113.1\r\n\r\n",
])
def test_a_request_that_depends_on_its_connection_has_no_part(raw: bytes) -> None:
    _, request = _request(raw)
    assert request_part(request.headers, line_text(request), "http", "") is None


def test_a_spooled_body_goes_to_tmpdir_else_to_var_tmp_not_to_a_tmpfs_tmp() -> None:
    from sockact.wsgi.server import spool_dir

    assert spool_dir({"TMPDIR": "/srv/spool"}) == "/srv/spool"
    # /tmp is a tmpfs on Debian 13: a body there would be held in memory, charged to the service.
    assert spool_dir({}) == ("/var/tmp" if os.access("/var/tmp", os.W_OK | os.X_OK) else None)
    assert spool_dir({"TMPDIR": ""}) == spool_dir({})


def test_a_workers_spool_budget_refuses_what_would_pass_it_and_takes_nothing_then() -> None:
    from sockact.http.limits import SpoolBudget, SpoolFull

    budget = SpoolBudget(3000)
    budget.take(2000)
    with pytest.raises(SpoolFull, match="body_spool_total"):
        budget.take(1001)
    assert budget.used == 2000
    budget.take(1000)  # up to the bound itself
    budget.give(2000)
    budget.take(2000)
    assert budget.used == 3000
    unbounded = SpoolBudget(0)
    unbounded.take(10**12)
    assert unbounded.used == 10**12
