"""serve_connection over real sockets (a socketpair and TCP loopback), with raw client bytes."""

from __future__ import annotations

import fcntl
import io
import os
import select
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import wait_until

from sockact.http import Limits, Site
from sockact.logs.access import GUNICORN_FORMAT, AccessLog
from sockact.wsgi.blocking import Outcome, serve_connection

Response = tuple[int, dict[str, str], bytes]


def parse_responses(data: bytes) -> list[Response]:
    """Split raw bytes into (status, fields, body) by Content-Length, chunked, or to the end."""
    out = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
        if status < 200:
            continue
        if "content-length" in fields:
            n = int(fields["content-length"])
            body, data = data[:n], data[n:]
        elif fields.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size, _, data = data.partition(b"\r\n")
                n = int(size, 16)
                body, data = body + data[:n], data[n + 2 :]
                if not n:
                    break
        else:
            body, data = data, b""
        out.append((status, fields, body))
    return out


@pytest.fixture(params=["socketpair", "tcp"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket, Any]]:
    """(server side, client side, peer) of a connected stream socket."""
    if request.param == "socketpair":
        server, client = socket.socketpair()
        peer: Any = None
    else:
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname())
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small writes leave at once
        server, peer = listener.accept()
        listener.close()
    client.settimeout(5)
    yield server, client, peer
    server.close()
    client.close()


class Served:
    """serve_connection running in a thread on the server side of ``pair``."""

    def __init__(self, pair: tuple[socket.socket, socket.socket, Any], app: Callable[..., Any],
                 **kwargs: Any) -> None:
        self.server, self.client, peer = pair
        limits = kwargs.pop("limits", Limits())
        access = kwargs.pop("access", None)
        deadlines = {key: kwargs.pop(key) for key in ("send_timeout", "client_budget") if key in kwargs}
        self.site = Site(app=app, limits=limits, header_timeout=kwargs.pop("header_timeout", 0.3),
                         io_timeout=1.0, access_log=access is not None, listener="test", access=access, **deadlines)
        self.outcome: Outcome | None = None
        self.thread = threading.Thread(target=self._run, args=(peer, kwargs), daemon=True)
        self.thread.start()

    def _run(self, peer: Any, kwargs: dict[str, Any]) -> None:
        self.outcome = serve_connection(self.server, self.site, peer=peer, conn_id=7, **kwargs)

    def finish(self) -> tuple[Outcome | None, bytes]:
        """Wait for the outcome, then read everything the server sent."""
        self.thread.join(5)
        assert not self.thread.is_alive()
        self.server.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := self.client.recv(65536):
            data += chunk
        return self.outcome, data


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} ".encode() + body]


def test_keep_alive_request_parks(pair: Any) -> None:
    pair[1].sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    outcome, data = Served(pair, hello).finish()
    assert outcome is Outcome.PARK
    [(status, fields, body)] = parse_responses(data)
    assert (status, body) == (200, b"GET /a ")
    assert fields["content-length"] == "7" and "connection" not in fields
    assert fields["server"] == "sockact" and fields["date"].endswith(" GMT")


def test_pipelined_requests_then_park(pair: Any) -> None:
    pair[1].sendall(b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
                    b"POST /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nyo\r\n0\r\n\r\n")
    outcome, data = Served(pair, hello).finish()
    assert outcome is Outcome.PARK
    assert [r[2] for r in parse_responses(data)] == [b"GET /1 ", b"POST /2 hi", b"POST /3 yo"]


@pytest.mark.parametrize("request_head", [b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n"])
def test_close_requested(pair: Any, request_head: bytes) -> None:
    pair[1].sendall(request_head)
    outcome, data = Served(pair, hello).finish()
    assert outcome is Outcome.CLOSE
    assert parse_responses(data)[0][1]["connection"] == "close"


def unread(sock: socket.socket) -> int:
    """Bytes waiting in ``sock``'s receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def test_partial_next_request_is_read_not_parked(pair: Any) -> None:
    server, client, _ = pair
    client.sendall(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HT")
    served = Served(pair, hello)
    first = b""
    while not first.endswith(b"GET /1 "):
        first += client.recv(65536)
    # The server has answered /1 and read the start of /2: it must wait for the rest, not park.
    wait_until(lambda: unread(server) == 0, "the server to read the partial head")
    assert served.thread.is_alive()
    client.sendall(b"TP/1.1\r\n\r\n")
    outcome, data = served.finish()
    assert outcome is Outcome.PARK
    assert [r[2] for r in parse_responses(first + data)] == [b"GET /1 ", b"GET /2 "]


def test_pending_bytes_are_served_first(pair: Any) -> None:
    outcome, data = Served(pair, hello, pending=b"GET /pending HTTP/1.1\r\n\r\n").finish()
    assert outcome is Outcome.PARK
    assert parse_responses(data)[0][2] == b"GET /pending "


def test_header_timeout_silent_without_bytes(pair: Any) -> None:
    started = time.monotonic()
    outcome, data = Served(pair, hello).finish()
    assert outcome is Outcome.CLOSE and data == b""
    assert 0.25 < time.monotonic() - started < 5  # the bound is the behaviour: not before the timeout


def test_header_timeout_is_a_deadline_408(pair: Any) -> None:
    client = pair[1]
    served = Served(pair, hello)
    client.sendall(b"GET / HTTP/1.1\r\nX: ")
    # Trickle a head that never ends, a byte every 50 ms (the timeout is 300 ms): a deadline answers
    # 408 while the client is still sending; a timer that each byte restarted never would.
    started = time.monotonic()
    while not select.select([client], [], [], 0.05)[0]:
        assert time.monotonic() - started < 5, "no 408 while the client kept trickling"
        client.sendall(b"x")
    outcome, data = served.finish()
    assert outcome is Outcome.CLOSE
    assert parse_responses(data)[0][0] == 408


def test_garbage_gets_400_and_close(pair: Any) -> None:
    pair[1].sendall(b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n")
    outcome, data = Served(pair, hello).finish()
    assert outcome is Outcome.CLOSE
    status, fields, _ = parse_responses(data)[0]
    assert status == 400 and fields["connection"] == "close"


def test_body_over_limit_is_413_before_reading(pair: Any) -> None:
    pair[1].sendall(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n")
    outcome, data = Served(pair, hello, limits=Limits(body=10)).finish()
    assert outcome is Outcome.CLOSE
    assert parse_responses(data)[0][0] == 413


def test_chunked_body_over_limit_is_413_while_reading(pair: Any) -> None:
    pair[1].sendall(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n")
    outcome, data = Served(pair, hello, limits=Limits(body=10)).finish()
    assert outcome is Outcome.CLOSE
    assert parse_responses(data)[0][0] == 413


def test_100_continue_sent_when_the_app_reads(pair: Any) -> None:
    client = pair[1]
    client.sendall(b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    served = Served(pair, hello)
    assert client.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.sendall(b"data")
    outcome, data = served.finish()
    assert outcome is Outcome.PARK
    assert parse_responses(data)[0][2] == b"POST /up data"


def ignores_body(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("403 Forbidden", [])
    return [b"no"]


def test_no_100_continue_when_the_app_does_not_read(pair: Any) -> None:
    pair[1].sendall(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    outcome, data = Served(pair, ignores_body).finish()
    assert outcome is Outcome.CLOSE
    assert not data.startswith(b"HTTP/1.1 100")
    status, fields, body = parse_responses(data)[0]
    assert (status, fields["connection"], body) == (403, "close", b"no")


def test_small_unread_body_is_drained_and_parks(pair: Any) -> None:
    pair[1].sendall(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\n\r\n")
    outcome, data = Served(pair, ignores_body).finish()
    assert outcome is Outcome.PARK
    assert len(parse_responses(data)) == 2


def test_file_wrapper_uses_sendfile(pair: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(300_000))
    calls = []
    real = os.sendfile

    def counting(*args: Any) -> int:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(os, "sendfile", counting)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        f = open(path, "rb")  # noqa: SIM115 -- the wrapper's close() closes it
        f.seek(1000)
        return environ["wsgi.file_wrapper"](f)

    pair[1].sendall(b"GET / HTTP/1.1\r\n\r\n")
    served = Served(pair, app)
    data = b""
    while len(data) < 299_000:  # read while it is sent: the file is larger than the socket buffers
        data += pair[1].recv(65536)
    outcome, rest = served.finish()
    assert outcome is Outcome.PARK and calls
    [(_, fields, body)] = parse_responses(data + rest)
    assert fields["content-length"] == "299000"
    assert body == path.read_bytes()[1000:]


def test_a_file_sent_to_a_client_that_never_reads_ends_at_the_calls_deadline(pair: Any, tmp_path: Any) -> None:
    # send_timeout far past the call's budget: sendfile() waits in the kernel, bounded by what is
    # left of the budget, not by send_timeout (under which timeout would kill the worker).
    path = tmp_path / "blob"
    with open(path, "wb") as f:
        f.truncate(64 << 20)  # far more than the socket buffers hold

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))  # the wrapper closes it

    pair[1].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    pair[1].sendall(b"GET / HTTP/1.1\r\n\r\n")  # and reads nothing until the call is over
    served = Served(pair, app, send_timeout=60.0, client_budget=0.5)
    served.thread.join(5)  # not finish(): it would read all the kernel holds, through a tiny window
    assert not served.thread.is_alive() and served.outcome is Outcome.CLOSE


def test_file_wrapper_without_a_file_iterates(pair: Any) -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"x" * 20000), 4096)

    pair[1].sendall(b"GET / HTTP/1.1\r\n\r\n")
    _, data = Served(pair, app).finish()
    [(_, fields, body)] = parse_responses(data)
    assert fields["transfer-encoding"] == "chunked" and body == b"x" * 20000


def test_app_error_before_headers_is_500(pair: Any, caplog: pytest.LogCaptureFixture) -> None:
    def broken(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raise RuntimeError("boom")

    pair[1].sendall(b"GET / HTTP/1.1\r\n\r\n")
    outcome, data = Served(pair, broken).finish()
    assert outcome is Outcome.CLOSE
    assert parse_responses(data)[0][0] == 500
    assert any(r.name == "sockact.http" and r.exc_info for r in caplog.records)


def test_app_error_after_headers_closes(pair: Any) -> None:
    def broken(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"partial"
        raise RuntimeError("boom")

    pair[1].sendall(b"GET / HTTP/1.1\r\n\r\n")
    outcome, data = Served(pair, broken).finish()
    assert outcome is Outcome.CLOSE
    assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"7\r\npartial\r\n")  # no last chunk


def test_invalid_response_header_is_500(pair: Any) -> None:
    def bad(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("X-Bad", "a\r\nInjected: 1")])
        return [b"x"]

    pair[1].sendall(b"GET / HTTP/1.1\r\n\r\n")
    outcome, data = Served(pair, bad).finish()
    assert outcome is Outcome.CLOSE
    assert parse_responses(data)[0][0] == 500 and b"Injected" not in data


def test_stopping_closes_after_the_response(pair: Any) -> None:
    pair[1].sendall(b"GET / HTTP/1.1\r\n\r\n")
    outcome, data = Served(pair, hello, stopping=lambda: True).finish()
    assert outcome is Outcome.CLOSE
    assert parse_responses(data)[0][1]["connection"] == "close"


def test_access_log(pair: Any) -> None:
    records: list[tuple[str, ...]] = []
    access = AccessLog(GUNICORN_FORMAT, None, lambda *fields: records.append(fields))
    pair[1].sendall(b"GET /p?q=1 HTTP/1.1\r\nUser-Agent: t/1\r\n\r\n")
    Served(pair, hello, access=access).finish()
    access.flush()
    [record] = records
    fields = dict(item.split("=", 1) for item in record)
    took = fields["DURATION_US"]
    assert fields["MESSAGE"].endswith(f'"GET /p?q=1 HTTP/1.1" 200 7B {took}us pid={os.getpid()}')
    assert {k: fields[k] for k in ("SOCKACT_CONN_ID", "HTTP_METHOD", "HTTP_PATH", "HTTP_STATUS", "BYTES_SENT",
                                   "SOCKACT_LISTENER", "HTTP_PROTOCOL", "HTTP_USER_AGENT", "PRIORITY")} == {
        "SOCKACT_CONN_ID": "7", "HTTP_METHOD": "GET", "HTTP_PATH": "/p?q=1", "HTTP_STATUS": "200",
        "BYTES_SENT": "7", "SOCKACT_LISTENER": "test", "HTTP_PROTOCOL": "HTTP/1.1", "HTTP_USER_AGENT": "t/1",
        "PRIORITY": "6"}
    assert int(fields["DURATION_US"]) >= 0 and "REMOTE_ADDR" in fields


def test_environ_addresses(pair: Any) -> None:
    seen = {}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.update(environ)
        start_response("200 OK", [])
        return []

    pair[1].sendall(b"GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\nGET / HTTP/1.0\r\n\r\n")
    Served(pair, app, environ_extra={"sockact.conn_id": 7}).finish()
    assert seen["sockact.conn_id"] == 7
    assert seen["SERVER_PROTOCOL"] == "HTTP/1.0"  # the second request, without Host
    if pair[2] is None:
        # an unnamed Unix-socket peer is known by its credentials (this process, both ends)
        assert seen["REMOTE_ADDR"] == f"unix:pid={os.getpid()},uid={os.getuid()}" and "REMOTE_PORT" not in seen
        assert seen["SERVER_PORT"] == ""
    else:
        assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("127.0.0.1", str(pair[2][1]))
        assert (seen["SERVER_NAME"], seen["SERVER_PORT"]) == ("127.0.0.1", str(pair[0].getsockname()[1]))


def test_client_reset_returns_close(pair: Any) -> None:
    def slow(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        start_response("200 OK", [])
        for _ in range(200):
            yield b"x" * 65536

    pair[1].sendall(b"GET / HTTP/1.1\r\n\r\n")
    served = Served(pair, slow)
    pair[1].recv(1000)
    pair[1].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    pair[1].close()
    served.thread.join(5)
    assert served.outcome is Outcome.CLOSE


def test_validated_app_with_write_over_the_wire(pair: Any) -> None:
    from wsgiref.validate import validator

    @validator
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"<" + environ["wsgi.input"].read(100) + b">")
        yield b"!"

    pair[1].sendall(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                    b"HEAD / HTTP/1.1\r\n\r\n")
    outcome, data = Served(pair, app).finish()
    assert outcome is Outcome.PARK
    first, rest = data.split(b"\r\n0\r\n\r\n", 1)
    assert first.endswith(b"5\r\n<abc>\r\n1\r\n!")  # chunked: write() and the iterable, each sent at once
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n") and rest.endswith(b"\r\n\r\n")  # HEAD: no body


def test_an_error_answer_to_head_has_no_body(pair: Any) -> None:
    def broken(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        raise RuntimeError("a bug")

    pair[1].sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
    _, data = Served(pair, broken).finish()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ") and b"Content-Length: " in head  # the GET's length
    assert body == b""  # and no body: the client would read it as the next response


def test_a_head_whose_app_wrote_nothing_says_no_length(pair: Any) -> None:
    # The app may leave out a HEAD's body of any length: "Content-Length: 0" would be a claim
    # about the GET that the app never made.
    def head_only(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return []

    pair[1].sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    _, data = Served(pair, head_only).finish()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b""
    assert b"content-length" not in head.lower()


@pytest.mark.parametrize(("length", "sent", "to_buffer"), [
    (20, 10, 10),  # 20 bytes in all, within the buffer: the loop reads the 10 still to come
    (30, 15, 0),  # 15 to come is within it, but the body is 30 in all: the app streams it
    (21, 0, 0),
])
def test_body_buffer_counts_the_body_bytes_already_read(pair: Any, length: int, sent: int, to_buffer: int) -> None:
    from sockact.http.events import Request
    from sockact.wsgi.server import HTTPConnection

    site = Site(app=hello, limits=Limits(), header_timeout=1.0, io_timeout=1.0, access_log=False, listener="test",
                body_buffer=20)
    http = HTTPConnection(pair[0], site, peer=None, conn_id=1)
    http.receive(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % length + b"x" * sent)
    assert isinstance(http.next_request(), Request)
    assert http.body_to_buffer() == to_buffer
