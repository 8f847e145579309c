"""The WebSocket Denial Response (ASGI's ``websocket.http.response`` extension), against the real sockact
with each WebSocket library: what a client gets when the app answers its handshake with an HTTP response,
and when the app gets that wrong. Raw sockets see the bytes; the ``websockets`` client, what a client
library makes of them."""

from __future__ import annotations

import socket
import struct

from conftest import http_get, parse_response, read_to_close
from test_asgi_limits import BOUND, MIB, memory, ws_handshake

CLOSE_1011 = b"\x88\x02\x03\xf3"  # a server's close frame with code 1011 and no reason
# asgiapps.WS_DENIAL_MISTAKES' paths.
MISTAKES = ("/start-after-accept", "/start-after-close", "/body-before-start", "/start-twice", "/status-101",
            "/status-str", "/header-crlf", "/header-str", "/body-str", "/accept-mid-denial", "/body-after-end",
            "/close-after-end")


def deny(port: int, path: str) -> bytes:
    """Everything the server sends to a handshake for ``path``, until it closes (within 10 s)."""
    with ws_handshake(port, path) as sock:
        sock.settimeout(10)
        return read_to_close(sock)


def test_a_denial_response_reaches_the_client_whole_then_the_connection_closes(start_sockact, ws_library):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    server = start_sockact("asgiapps:ws_deny", "--workers", "1", "--ws", ws_library, "--access-logfile", "-",
                           workers=1)
    # read_to_close returns: the connection closed after the response, while the app goes on (it waits
    # for a request to /release).
    status, headers, body = parse_response(deny(server.port, "/whole"))
    assert (status, body) == (401, b"no token, no socket")
    assert headers["x-denied-by"] == "the test app" and headers["content-type"] == "text/plain"
    # Its length, as a whole body's; the Date, Server and Connection: close sockact's answers all have.
    assert headers["content-length"] == str(len(body)) and "transfer-encoding" not in headers
    assert headers["connection"] == "close" and headers["server"] == "sockact" and headers["date"]
    # The session is over: the app's next receive() says so.
    server.wait_for_log("DENIED /whole websocket.disconnect 1006")
    assert "RELEASED" not in server.output()
    assert http_get(server.port, "/release")[2] == b"plain http"
    server.wait_for_log("RELEASED /whole")
    # Its access line: the app's status and body bytes, and no close code (the WebSocket never opened).
    line = server.wait_for_log("websocket close=").split("websocket close=")[0].splitlines()[-1]
    assert '"GET /whole HTTP/1.1" 401 19 ' in line, line
    assert server.output().split("websocket close=")[1].startswith("- in=0 out=19 ")
    try:
        connect(f"ws://127.0.0.1:{server.port}/whole", open_timeout=10)
        raise AssertionError("the handshake was accepted")
    except InvalidStatus as exc:
        assert exc.response.status_code == 401
        assert exc.response.headers["X-Denied-By"] == "the test app"
        assert exc.response.body == b"no token, no socket"
    assert http_get(server.port, "/")[2] == b"plain http"


def test_a_denial_body_in_parts_is_chunked_unless_the_app_gave_its_length(start_sockact, ws_library):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    server = start_sockact("asgiapps:ws_deny", "--workers", "1", "--ws", ws_library, workers=1)
    status, headers, body = parse_response(deny(server.port, "/parts"))
    assert status == 401 and headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    assert body == b"5\r\none, \r\n5\r\ntwo, \r\n5\r\nthree\r\n0\r\n\r\n"  # an empty part is no chunk (no end)
    status, headers, body = parse_response(deny(server.port, "/length"))
    assert (status, headers["content-length"], body) == (401, "11", b"hello world")
    assert "transfer-encoding" not in headers
    try:
        connect(f"ws://127.0.0.1:{server.port}/parts", open_timeout=10)
        raise AssertionError("the handshake was accepted")
    except InvalidStatus as exc:
        assert exc.response.body == b"one, two, three"
    server.wait_for_log("DENIED /length websocket.disconnect 1006")
    # An app that returns in the middle of its denial: the client sees it cut short (no last chunk), the
    # operator a line.
    status, headers, body = parse_response(deny(server.port, "/cut"))
    assert (status, headers["transfer-encoding"], body) == (401, "chunked", b"4\r\nhalf\r\n")
    server.wait_for_log("returned in the middle of its denial response to GET /cut HTTP/1.1")
    # One that returns after its start alone gets a 500, whatever the status it gave (a 403 too).
    assert parse_response(deny(server.port, "/start-403-only"))[0] == 500


def test_a_denial_cut_short_by_the_clients_leaving_logs_the_body_bytes_that_went_out(start_sockact, ws_library):
    # The app sends part of its denial, then waits in receive() until the client, which read that part,
    # leaves: its access line counts that part, as it does for an app that returns in the middle.
    server = start_sockact("asgiapps:ws_deny", "--workers", "1", "--ws", ws_library, "--access-logfile", "-",
                           workers=1)
    with ws_handshake(server.port, "/half-then-wait") as sock:
        answer = b""
        while not answer.endswith(b"4\r\nhalf\r\n"):
            answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401 "), answer
    server.wait_for_log("DENIED /half-then-wait websocket.disconnect 1006")
    line = server.wait_for_log("websocket close=").split("websocket close=")[0].splitlines()[-1]
    assert '"GET /half-then-wait HTTP/1.1" 401 4 ' in line, line
    assert server.output().split("websocket close=")[1].startswith("- in=0 out=4 ")
    assert http_get(server.port, "/")[2] == b"plain http"


def test_each_misuse_of_the_denial_response_is_the_apps_error_and_the_worker_serves_on(start_sockact, ws_library):
    server = start_sockact("asgiapps:ws_deny", "--workers", "1", "--ws", ws_library, workers=1)
    for path in MISTAKES:
        answer = deny(server.port, path)
        status, headers, body = parse_response(answer)
        if path == "/start-after-accept":
            assert status == 101 and body.endswith(CLOSE_1011), answer  # an open WebSocket's app error
        elif path == "/start-after-close":
            assert status == 403, answer
        elif path == "/accept-mid-denial":
            # Its head and first part went out: the response is cut short, which its framing shows.
            assert status == 401 and headers["transfer-encoding"] == "chunked", answer
            assert body == b"6\r\ndenied\r\n", answer
        elif path.endswith("-after-end"):
            assert (status, body) == (401, b"denied"), answer  # whole: the mistake came after it
        else:
            assert status == 500 and b"x-injected" not in answer.lower(), (path, answer)  # nothing of it went out
        said = server.wait_for_log(f"application error on websocket {path!r}")
        assert "InvalidResponse" in said.split(f"application error on websocket {path!r}")[1], path
        assert http_get(server.port, "/")[2] == b"plain http"


def test_a_client_that_leaves_mid_denial_stops_the_apps_sends(start_sockact, ws_library):
    server = start_sockact("asgiapps:ws_deny", "--workers", "1", "--ws", ws_library, workers=1)
    with ws_handshake(server.port, "/stream") as sock:
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 401 "), head
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() resets
    server.wait_for_log("DENIAL STOPPED: ClientDisconnected")
    assert "application error" not in server.output()  # the client's leaving, not the app's error
    assert http_get(server.port, "/")[2] == b"plain http"


def test_a_denial_body_the_client_does_not_read_waits_and_the_client_is_let_go(start_sockact, ws_library):
    server = start_sockact("asgiapps:ws_deny", "--workers", "1", "--ws", ws_library, "--send-timeout", "1",
                           workers=1)
    [worker] = server.workers()
    before = memory(worker)["VmRSS"]
    with ws_handshake(server.port, "/stream", rcvbuf=4096) as sock:
        server.wait_for_log("the client took nothing for send_timeout (1s)")
        server.wait_for_log("DENIAL STOPPED: ClientDisconnected")
        answer = read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 401 ") and len(answer) < 8 * MIB
    peak = memory(worker)["VmHWM"]
    assert peak - before < BOUND, f"worker grew by {(peak - before) / MIB:.0f} MiB"
    assert http_get(server.port, "/")[2] == b"plain http"


def around_a_receive(port: int, path: str, websocket: bool) -> socket.socket:
    """A raw socket that has sent asgiapps.ws_deny a request for ``path``: a WebSocket handshake, or a plain
    request (which the app answers as it does the handshake, with an HTTP response)."""
    if websocket:
        return ws_handshake(port, path)
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    return sock


def test_a_client_that_half_closes_mid_denial_reads_it_whole_as_it_does_an_http_response(start_sockact,
                                                                                          ws_library):
    # The app sends the first part, then waits in receive(), which the client's half-close ends (disconnect),
    # then sends the rest: a client that still reads gets it, a denial's as an HTTP response's. Their access
    # lines say the same, the response's header fields included.
    server = start_sockact("asgiapps:ws_deny", "--workers", "1", "--ws", ws_library, "--access-logfile", "-",
                           "--access-logformat", '"%(r)s" %(s)s %(b)s %({content-type}o)s %({x-denied-by}o)s',
                           workers=1)
    for websocket, kind in ((True, "websocket.http.response"), (False, "http.response")):
        with around_a_receive(server.port, "/half-close", websocket) as sock:
            answer = b""
            while not answer.endswith(b"first, \r\n"):
                answer += sock.recv(4096)
            sock.shutdown(socket.SHUT_WR)
            answer += read_to_close(sock)
        server.wait_for_log(f"AROUND {kind} /half-close {kind.split('.')[0]}.disconnect")
        status, headers, body = parse_response(answer)
        assert (status, headers["transfer-encoding"]) == (401, "chunked"), answer
        assert body == b"7\r\nfirst, \r\n6\r\nsecond\r\n0\r\n\r\n", (kind, answer)
    assert "ClientDisconnected" not in server.output()
    server.waiting(lambda: server.output().count('"GET /half-close HTTP/1.1" 401 13 text/plain the test app') == 2,
                   "both access lines, whole and with the app's fields")


def test_a_denial_whose_head_never_went_out_logs_the_apps_status_as_an_http_response_does(start_sockact,
                                                                                          ws_library):
    # The app's start is taken (its head waits for the body); the client resets the connection before the
    # body comes, and the app's send of it raises. The line has the app's status and no body bytes.
    server = start_sockact("asgiapps:ws_deny", "--workers", "1", "--ws", ws_library, "--access-logfile", "-",
                           workers=1)
    for websocket, kind in ((True, "websocket.http.response"), (False, "http.response")):
        with around_a_receive(server.port, "/start-then-wait", websocket) as sock:
            server.wait_for_log(f"AROUND {kind} /start-then-wait started")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() resets
        server.wait_for_log(f"AROUND {kind} /start-then-wait ClientDisconnected")
    server.waiting(lambda: server.output().count('"GET /start-then-wait HTTP/1.1" 401 - ') == 2,
                   "both access lines, with the app's status")
    assert "application error" not in server.output()  # the client's leaving, not the app's error


def test_a_handshake_answered_after_a_half_close_still_reaches_the_client(start_sockact, ws_library):
    # The app waits in receive() before it answers the handshake; the client's half-close ends the wait
    # (websocket.disconnect). Its close then refuses the handshake (403), and its return without an answer
    # is a 500, as an HTTP call's is: the client still reads.
    server = start_sockact("asgiapps:ws_deny", "--workers", "1", "--ws", ws_library, workers=1)
    for path, status in (("/close-after-disconnect", 403), ("/return-after-disconnect", 500)):
        with ws_handshake(server.port, path) as sock:
            sock.shutdown(socket.SHUT_WR)
            answer = read_to_close(sock)
        server.wait_for_log(f"UNANSWERED {path} websocket.disconnect")
        assert parse_response(answer)[0] == status, (path, answer)
