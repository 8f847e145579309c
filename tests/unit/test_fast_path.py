"""The fast path of a WSGI response, and what falls back from it, against the general path.

A one-item list of bytes, returned after start_response, is sent by ``HTTPConnection._send_whole`` (the
engine's ``whole_response`` and ``body_done``); every other result goes through ``_send_any``. Each
case here is served twice over a real socketpair, once as it is and once with the fast path turned
off, and must give the same bytes (the Date field aside) and the same decision to keep the
connection. The engine's two fused steps are checked against the steps they stand for, with no
socket at all.
"""

from __future__ import annotations

import gc
import os
import re
import socket
import time as time_module
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sockact.http import Limits, Site
from sockact.http.engine import DONE, Connection
from sockact.http.events import END_OF_MESSAGE, PAUSED, Data, Request
from sockact.http.forwarded import Trust
from sockact.logs.access import GUNICORN_FORMAT, AccessLog
from sockact.wsgi.server import HTTPConnection

DATE = "Sat, 05 Dec 2026 00:00:00 GMT"
GET = b"GET /p HTTP/1.1\r\nHost: h\r\n\r\n"
App = Callable[[dict[str, Any], Any], Any]


# ---------------------------------------------------------------------- the engine, sans I/O


def _engine(raw: bytes) -> tuple[Connection, Request]:
    engine = Connection(Limits())
    engine.receive_data(raw)
    request = engine.next_event()
    assert isinstance(request, Request)
    return engine, request


RESPONSES = [
    (GET, "200 OK", [("Content-Type", "text/plain")], b"hello"),
    (GET, "200 OK", [("Content-Length", "5")], b"hello"),
    (GET, "200 OK", [("Content-Length", "3")], b"hello"),  # more than promised: cut, then close
    (GET, "200 OK", [("Content-Length", "9")], b"hello"),  # less than promised: close
    (GET, "200 OK", [("Connection", "close")], b"hello"),
    (GET, "204 No Content", [], b""),
    (GET, "304 Not Modified", [], b""),
    (GET, "200 OK", [], b""),
    (b"HEAD /p HTTP/1.1\r\nHost: h\r\n\r\n", "200 OK", [], b"hello"),
    (b"GET /p HTTP/1.0\r\n\r\n", "200 OK", [], b"hello"),
    (b"GET /p HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "200 OK", [], b"hello"),
    (b"POST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", "200 OK", [], b"hello"),  # body left unread
]


@pytest.mark.parametrize(("raw", "status", "headers", "body"), RESPONSES)
@pytest.mark.parametrize("close", [False, True])
def test_whole_response_is_start_send_and_end_in_one(raw, status, headers, body, close):
    # The second time, the head comes from what the first kept (engine._HEADS), with its own Date.
    for date in (DATE, "Sun, 06 Dec 2026 00:00:01 GMT"):
        fused, _ = _engine(raw)
        steps, _ = _engine(raw)
        head, rest = fused.whole_response(status, list(headers), body, date=date, close=close)
        expected = steps.start_response(status, list(headers), date=date, close=close, whole=len(body))
        expected_rest = (steps.send_data(body) if body else b"") + steps.end_response()
        assert (head, rest) == (expected, expected_rest)
        assert (fused.keep_alive, fused.body_sent, fused.response_ended) == (steps.keep_alive, steps.body_sent, True)


def test_a_new_connection_answers_from_the_last_kept_answer_only_when_it_is_the_same_answer():
    # The last answer a connection kept (engine._LAST_WHOLE) is where the next connection starts: a
    # Connection: close client's request is the one the last connection answered. The app's checked
    # headers are one object while it answers the same way (responses.remembering); each connection here
    # is new and answers as the general steps do, whichever request and answer came before it.
    heads = {}
    requests = [GET, b"GET /q HTTP/1.1\r\nHost: h\r\n\r\n", b"GET /p HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                b"GET /p HTTP/1.0\r\n\r\n", b"HEAD /p HTTP/1.1\r\nHost: h\r\n\r\n",
                b"GET /p HTTP/1.1\r\nConnection: close\r\n\r\n", GET]
    answers = [("200 OK", (), b"hello"), ("200 OK", (), b"hello!"), ("404 Not Found", (), b"hello"),
               ("200 OK", (("Content-Type", "text/plain"),), b"hello")]
    for _ in range(2):
        for status, fields, body in answers:
            for close in (False, True):
                for raw in requests:
                    headers = heads.setdefault(fields, list(fields))
                    fused, _ = _engine(raw)
                    steps, _ = _engine(raw)
                    head, rest = fused.whole_response(status, headers, body, date=DATE, close=close)
                    expected = steps.start_response(status, list(fields), date=DATE, close=close, whole=len(body))
                    expected_rest = (steps.send_data(body) if body else b"") + steps.end_response()
                    assert (head, rest) == (expected, expected_rest)
                    assert (fused.keep_alive, fused.body_sent) == (steps.keep_alive, steps.body_sent)


def test_a_kept_head_is_not_used_while_a_request_body_is_still_unread():
    raw = b"POST /p HTTP/1.1\r\nContent-Length: 99999\r\n\r\nhi"  # too large to drain: the answer closes
    for _ in range(2):
        fused, _ = _engine(raw)
        head, _ = fused.whole_response("200 OK", [], b"ok", date=DATE)
        assert b"Connection: close" in head and not fused.keep_alive
    idle, _ = _engine(b"POST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
    while idle.next_event() is not END_OF_MESSAGE:
        pass
    head, _ = idle.whole_response("200 OK", [], b"ok", date=DATE)  # the body was read: it persists
    assert b"Connection" not in head and idle.keep_alive


def test_body_done_ends_a_request_without_a_body_as_the_next_event_would():
    engine, _ = _engine(GET)
    assert engine.unparsed() == GET  # nobody has begun to serve it: a hand-back carries its head
    assert engine.body_done()
    assert engine.state == DONE and engine.unparsed() == b""
    assert engine.next_event() is PAUSED


def test_body_done_leaves_a_body_to_its_events():
    engine, _ = _engine(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
    assert not engine.body_done()  # whole in the buffer, but not read
    event = engine.next_event()
    assert isinstance(event, Data) and event.data == b"hi"
    assert engine.next_event() is END_OF_MESSAGE
    assert engine.body_done()

    chunked, _ = _engine(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert not chunked.body_done()  # chunked framing ends by its own events
    assert chunked.next_event() is END_OF_MESSAGE and chunked.body_done()


# ---------------------------------------------------------------------- the server, over a socketpair


_SEND_WHOLE, _SEND_ANY = HTTPConnection._send_whole, HTTPConnection._send_any


class Paths:
    """Which of the two ways each response went."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
        self.taken: list[str] = []
        whole, any_ = _SEND_WHOLE, _SEND_ANY

        def send_whole(conn: HTTPConnection, start: Any, body: bytes) -> bool:
            self.taken.append("whole")
            if not fast:  # as if the fast path did not exist: the general one sends the same list
                return any_(conn, [body], conn.request)
            return whole(conn, start, body)

        def send_any(conn: HTTPConnection, result: Any, request: Request) -> bool:
            self.taken.append("any")
            return any_(conn, result, request)

        monkeypatch.setattr(HTTPConnection, "_send_whole", send_whole)
        monkeypatch.setattr(HTTPConnection, "_send_any", send_any)


def _serve(app: App, raw: bytes) -> tuple[list[bool], bytes]:
    """Serve every request in ``raw`` (sent at once, then the client's side closed for writing)."""
    site = Site(app=app, limits=Limits(), header_timeout=5.0, io_timeout=5.0, access_log=False, listener="http")
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(raw)
        theirs.shutdown(socket.SHUT_WR)
        http = HTTPConnection(ours, site, peer=None, conn_id=1)
        http.receive(ours.recv(65536))
        keeps = []
        while isinstance(request := http.next_request(), Request):
            keeps.append(http.serve(request))
            if not keeps[-1]:
                break
        ours.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := theirs.recv(65536):
            out += chunk
    return keeps, re.sub(rb"Date: [^\r]*", b"Date: -", out)


def _app(result: Callable[[Callable[..., Any]], Any], status: str = "200 OK",
         headers: list[tuple[str, str]] | None = None, start: bool = True) -> App:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        write = start_response(status, list(headers or [])) if start else None
        return result(write)
    return app


def _gen(write: Any) -> Iterator[bytes]:
    yield b"he"
    yield b"llo"


def _raise(write: Any) -> Any:
    raise RuntimeError("the app failed")


def _reads_body(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"got " + body]


FAST = {
    "one item": (_app(lambda w: [b"hello"]), GET),
    "empty item": (_app(lambda w: [b""]), GET),
    "Content-Length given": (_app(lambda w: [b"hello"], headers=[("Content-Length", "5")]), GET),
    "Content-Length short": (_app(lambda w: [b"hello"], headers=[("Content-Length", "9")]), GET),
    "Connection: close": (_app(lambda w: [b"hello"], headers=[("Connection", "close")]), GET),
    "204": (_app(lambda w: [b""], status="204 No Content"), GET),
    "HEAD": (_app(lambda w: [b"hello"]), b"HEAD / HTTP/1.1\r\n\r\n"),
    "HTTP/1.0": (_app(lambda w: [b"hello"]), b"GET / HTTP/1.0\r\n\r\n"),
    "body whole, unread": (_app(lambda w: [b"hello"]), b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
    "body whole, read": (_reads_body, b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
    "body chunked, read": (_reads_body, b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    "body still coming": (_app(lambda w: [b"hello"]), b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc"),
    "pipelined": (_app(lambda w: [b"hello"]), GET * 3),
}
GENERAL = {
    "two items": (_app(lambda w: [b"he", b"llo"]), GET),
    "tuple": (_app(lambda w: (b"hello",)), GET),
    "generator": (_app(_gen), GET),
    "write()": (_app(lambda w: (w(b"hello"), [])[1]), GET),
    "write() then a list": (_app(lambda w: (w(b"he"), [b"llo"])[1]), GET),
    "str item": (_app(lambda w: ["hello"]), GET),
    "no start_response": (_app(lambda w: [b"hello"], start=False), GET),
    "empty list": (_app(lambda w: []), GET),
}
NEITHER = {"an exception": (_app(_raise), GET)}  # nothing to send: a 500


@pytest.mark.parametrize("case", [*FAST, *GENERAL, *NEITHER])
def test_each_result_is_answered_the_same_with_and_without_the_fast_path(case, monkeypatch):
    app, raw = {**FAST, **GENERAL, **NEITHER}[case]
    general = Paths(monkeypatch, fast=False)
    expected = _serve(app, raw)
    fast = Paths(monkeypatch, fast=True)
    assert _serve(app, raw) == expected
    assert fast.taken == general.taken
    assert set(fast.taken) == ({"whole"} if case in FAST else {"any"} if case in GENERAL else set())


# ---------------------------------------------------------------------- a head repeated on one connection


def test_a_repeated_head_gets_a_fresh_environ_and_its_own_body():
    """The same head again is given the same request (engine) and a copy of the same environ (the
    server): what an app changed in one request's environ, and one request's body, never reach the next."""
    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.append(dict(environ))
        body = environ["wsgi.input"].read()
        environ["PATH_INFO"] = "/changed"
        environ["app.note"] = len(seen)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    post = b"POST /p?q=1 HTTP/1.1\r\nHost: h:81\r\nContent-Length: 3\r\n\r\n"
    keeps, out = _serve(app, post + b"abc" + post + b"def" + post + b"ghi")
    assert keeps == [True, True, True]
    assert out.count(b"HTTP/1.1 200 OK") == 3 and out.endswith(b"ghi") and b"abc" in out and b"def" in out
    assert [e["PATH_INFO"] for e in seen] == ["/p"] * 3
    assert not any("app.note" in e for e in seen)
    assert len({id(e["wsgi.input"]) for e in seen}) == 3
    first = {k: v for k, v in seen[0].items() if k != "wsgi.input"}
    assert all({k: v for k, v in e.items() if k != "wsgi.input"} == first for e in seen)
    assert (first["QUERY_STRING"], first["SERVER_NAME"], first["SERVER_PORT"]) == ("q=1", "h", "81")


def test_heads_that_differ_by_their_request_line_get_the_environ_a_fresh_connection_gives():
    """Heads with the same fields and new request lines share the parse of their fields (engine) and
    the environ those give (server): each environ is what the request gets on a connection of its own,
    and what an app changes in one never reaches the next."""
    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.append({k: v for k, v in environ.items() if k not in ("wsgi.input", "wsgi.errors")})
        environ["HTTP_COOKIE"] = "changed"
        environ["app.note"] = len(seen)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["wsgi.input"].read()]

    fields = b"\r\nHost: h:81\r\nCookie: a=1\r\nCookie: b=2\r\nX-Y: z\r\nContent-Type: text/plain\r\n\r\n"
    lines = [b"GET /?n=1 HTTP/1.1", b"GET /p?n=2 HTTP/1.1", b"HEAD /%7Eq HTTP/1.1", b"GET /?n=1 HTTP/1.1",
             b"GET http://other/abs?z HTTP/1.1", b"OPTIONS * HTTP/1.1", b"GET /last HTTP/1.0"]
    keeps, _ = _serve(app, b"".join(line + fields for line in lines))
    assert keeps == [True] * (len(lines) - 1) + [False]
    together, seen[:] = list(seen), []
    for line in lines:
        _serve(app, line + fields)
    assert together == seen
    assert [e["HTTP_COOKIE"] for e in together] == ["a=1; b=2"] * len(lines)
    assert [e["PATH_INFO"] for e in together] == ["/", "/p", "/~q", "/", "/abs", "", "/last"]


@pytest.mark.parametrize("access_log", [False, True])
def test_a_released_connection_is_freed_without_the_cyclic_collector(access_log, monkeypatch):
    """Its methods bound once, its StartResponse and its error stream all point back at it: released (its
    runner's close), a served connection's state goes with its last reference, not at a collection, while
    an app that kept its environ can still write to wsgi.errors."""
    kept: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        kept.append(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hi"]

    site = Site(app=app, limits=Limits(), header_timeout=5.0, io_timeout=5.0, access_log=access_log, listener="http",
                access=AccessLog(GUNICORN_FORMAT, os.devnull) if access_log else None)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        http = HTTPConnection(ours, site, peer=("192.0.2.7", 5000), conn_id=1)
        http.receive(GET)
        request = http.next_request()
        assert isinstance(request, Request) and http.serve(request)
        state, engine = weakref.ref(http), weakref.ref(http.engine)
        http.release()
        gc.disable()
        try:
            del http, request
            assert state() is not None  # the environ the app kept holds its streams, which hold it
            kept[0]["wsgi.errors"].write("late\n")
            kept.clear()
            assert state() is None and engine() is None
        finally:
            gc.enable()


def test_a_connections_last_request_gets_the_environ_a_kept_one_gets():
    """A request after which the connection closes (Connection: close, HTTP/1.0) has an environ made for
    it alone, with no copy kept (server._renew_environ): the same keys and values a request that keeps the
    connection gets, alone or after others whose apps changed theirs."""
    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.append({k: v for k, v in environ.items() if k not in ("wsgi.input", "wsgi.errors")})
        environ["PATH_INFO"] = "/changed"
        environ["HTTP_HOST"] = "changed"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["wsgi.input"].read()]

    fields = b"\r\nHost: h:81\r\nX-Y: z\r\n"
    kept, _ = _serve(app, b"GET /p?q=1 HTTP/1.1" + fields + b"\r\n")
    keeps, _ = _serve(app, b"GET /p?q=1 HTTP/1.1" + fields + b"\r\n" + b"GET /p?q=1 HTTP/1.1" + fields
                      + b"Connection: close\r\n\r\n")
    alone, _ = _serve(app, b"GET /p?q=1 HTTP/1.1" + fields + b"Connection: close\r\n\r\n")
    assert kept == [True] and keeps == [True, False] and alone == [False]
    first, before_last, last, last_alone = seen
    assert before_last == first
    assert last == last_alone == dict(first, HTTP_CONNECTION="close")
    assert (last["PATH_INFO"], last["HTTP_HOST"], last["QUERY_STRING"]) == ("/p", "h:81", "q=1")


# ---------------------------------------------------------------------- Connection: close clients, one after another


def _close_environs(app: App, heads: list[tuple[bytes, Any]], trust: Any = None,
                    root_path: str = "") -> list[dict[str, Any]]:
    """Serve each (head, peer) on a connection of its own, one site for all, as a worker's Connection: close
    clients come: what the app saw for each, a copy taken at its call."""
    seen: list[dict[str, Any]] = []

    def keep(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        seen.append(dict(environ))
        return app(environ, start_response)

    extra = {} if trust is None else {"trust": trust}
    site = Site(app=keep, limits=Limits(), header_timeout=5.0, io_timeout=5.0, access_log=True, listener="http",
                access=AccessLog(GUNICORN_FORMAT, os.devnull), root_path=root_path, **extra)
    for conn_id, (head, peer) in enumerate(heads, 1):
        ours, theirs = socket.socketpair()
        with ours, theirs:
            http = HTTPConnection(ours, site, peer=peer, conn_id=conn_id, environ_extra={"sockact.conn_id": conn_id})
            http.receive(head)
            step = http.next_request()
            if isinstance(step, Request):
                assert not http.serve(step)  # Connection: close
            http.release()
    return seen


CLOSE = b"GET /p?q=1 HTTP/1.1\r\nHost: h.test:8080\r\nUser-Agent: t\r\nConnection: close\r\n\r\n"


def _mutates(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    environ["PATH_INFO"] = "/changed"
    environ["HTTP_HOST"] = "other"
    environ["mine"] = "kept"
    del environ["REMOTE_ADDR"]
    start_response("200 OK", [])
    return [b"x"]


def test_each_close_client_sees_its_own_environ_though_the_head_repeats():
    """The same head from three clients (the engine gives each the same Request): each environ is whole and its
    own (its peer, its connection), and what one app call changed in its environ is not in the next one's."""
    peers = [("192.0.2.1", 1001), ("192.0.2.2", 1002), ("198.51.100.3", 1003)]
    seen = _close_environs(_mutates, [(CLOSE, peer) for peer in peers])
    assert [(e["REMOTE_ADDR"], e["REMOTE_PORT"], e["sockact.conn_id"]) for e in seen] == [
        ("192.0.2.1", "1001", 1), ("192.0.2.2", "1002", 2), ("198.51.100.3", "1003", 3)]
    for environ in seen:
        assert (environ["PATH_INFO"], environ["QUERY_STRING"], environ["HTTP_HOST"]) == ("/p", "q=1", "h.test:8080")
        assert (environ["SERVER_NAME"], environ["SERVER_PORT"], environ["HTTP_USER_AGENT"]) == ("h.test", "8080", "t")
        assert "mine" not in environ
    errors = {id(e["wsgi.errors"]) for e in seen}
    assert len(errors) == 3  # each connection's own error stream


def test_a_close_request_after_another_head_or_a_cut_one_is_its_own():
    """A Connection: close client after one with another head, after one cut mid-head, and under a root path:
    each environ is what that request says, and the request made before it leaves nothing in it."""
    other = b"GET /a/x HTTP/1.1\r\nHost: a.test\r\nX-Only: 1\r\nConnection: close\r\n\r\n"
    seen = _close_environs(_app(lambda write: [b"x"]), [
        (other, ("192.0.2.1", 1)), (b"GET /cut HTTP/1.1\r\nHost: cut", ("192.0.2.2", 2)),
        (CLOSE, ("192.0.2.3", 3)), (other, ("192.0.2.4", 4))], root_path="/a")
    assert [(e["REMOTE_ADDR"], e["SCRIPT_NAME"], e["PATH_INFO"], e["HTTP_HOST"]) for e in seen] == [
        ("192.0.2.1", "/a", "/x", "a.test"), ("192.0.2.3", "", "/p", "h.test:8080"),
        ("192.0.2.4", "/a", "/x", "a.test")]
    assert "HTTP_X_ONLY" not in seen[1] and "HTTP_USER_AGENT" not in seen[2]


def test_a_close_request_with_forwarded_fields_is_told_by_its_own_peer():
    """The same head with X-Forwarded-For from a trusted peer and then from an untrusted one: only the trusted
    peer's request takes the client it names."""
    head = b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n"
    seen = _close_environs(_app(lambda write: [b"x"]), [(head, ("127.0.0.1", 1)), (head, ("192.0.2.8", 2)),
                                                        (head, ("127.0.0.1", 3))], trust=Trust.parse("127.0.0.1"))
    assert [e["REMOTE_ADDR"] for e in seen] == ["203.0.113.9", "192.0.2.8", "203.0.113.9"]


def test_a_close_request_without_host_names_its_own_socket():
    """No Host: SERVER_NAME and SERVER_PORT come from each connection's own socket (here a Unix one: its path)."""
    seen = _close_environs(_app(lambda write: [b"x"]), [(b"GET / HTTP/1.0\r\n\r\n", ("192.0.2.1", 1))] * 2)
    assert len(seen) == 2 and all(e["SERVER_NAME"] == "" and e["SERVER_PORT"] == "" for e in seen)


def test_listeners_that_share_their_limits_each_give_their_own_scheme_and_root():
    """Two listeners with one Limits (the engine gives both the same Request for the same head), one https under
    /p: a close request's environ is its own listener's, whichever listener served the head last."""
    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.append(dict(environ))
        start_response("200 OK", [])
        return [b"x"]

    limits = Limits()
    plain = Site(app=app, limits=limits, header_timeout=5.0, io_timeout=5.0, access_log=False, listener="a")
    mounted = Site(app=app, limits=limits, header_timeout=5.0, io_timeout=5.0, access_log=False, listener="b",
                   url_scheme="https", root_path="/p")
    for conn_id, site in enumerate([plain, mounted, mounted, plain], 1):
        ours, theirs = socket.socketpair()
        with ours, theirs:
            http = HTTPConnection(ours, site, peer=("192.0.2.1", conn_id), conn_id=conn_id)
            http.receive(CLOSE)
            request = http.next_request()
            assert isinstance(request, Request) and not http.serve(request)
            http.release()
    assert [(e["wsgi.url_scheme"], e["SCRIPT_NAME"], e["PATH_INFO"]) for e in seen] == [
        ("http", "", "/p"), ("https", "/p", ""), ("https", "/p", ""), ("http", "", "/p")]


def _close_lines(tmp_path: Path, heads: list[tuple[bytes, Any]], name: str) -> list[str]:
    """Serve each (head, peer) on a connection of its own with the access log on; the lines written."""
    path = tmp_path / name
    access = AccessLog(GUNICORN_FORMAT, str(path))
    site = Site(app=_mutates, limits=Limits(), header_timeout=5.0, io_timeout=5.0, access_log=True, listener="http",
                access=access, trust=Trust.parse("192.0.2.9"))
    for conn_id, (head, peer) in enumerate(heads, 1):
        ours, theirs = socket.socketpair()
        with ours, theirs:
            http = HTTPConnection(ours, site, peer=peer, conn_id=conn_id)
            http.receive(head)
            while isinstance(step := http.next_request(), Request) and http.serve(step):
                pass
            http.release()
    access.flush()
    return path.read_text().splitlines()


def test_a_close_clients_line_given_again_is_the_line_its_own_entry_makes(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """A connection's first line may be the last one another connection's memo kept (AccessLog.log_again),
    with no entry made for it: the lines are those the general path writes, whatever changes from one
    connection to the next (the client, a trusted proxy's client, the request, its fields, keep-alive)."""
    monkeypatch.setattr(time_module, "time", lambda: 1_700_000_000.25)
    proxied = CLOSE.replace(b"User-Agent: t\r\n", b"User-Agent: t\r\nX-Forwarded-For: 203.0.113.5\r\n")
    other = CLOSE.replace(b"/p?q=1", b"/o")
    fields = CLOSE.replace(b"User-Agent: t", b"User-Agent: u")
    kept = CLOSE.replace(b"Connection: close\r\n", b"") * 2 + CLOSE
    heads = [(CLOSE, ("192.0.2.1", 1001)), (CLOSE, ("192.0.2.1", 1002)), (CLOSE, ("192.0.2.2", 1003)),
             (proxied, ("192.0.2.9", 1004)), (proxied, ("192.0.2.9", 1005)), (CLOSE, ("192.0.2.9", 1006)),
             (other, ("192.0.2.2", 1007)), (CLOSE, ("192.0.2.2", 1008)), (fields, ("192.0.2.2", 1009)),
             (kept, ("192.0.2.2", 1010)), (CLOSE, ("192.0.2.2", 1011))]
    lines = _close_lines(tmp_path, heads, "shared.log")
    monkeypatch.setattr(AccessLog, "log_again", lambda *_: False)
    assert lines == _close_lines(tmp_path, heads, "own.log")
    assert len(lines) == 13 and "203.0.113.5" in lines[3] and "192.0.2.9" in lines[5]
