"""What an app does wrong on the response side, against the real sockact process: its client gets a
well-formed answer or a closed connection (a WebSocket's, a close frame), never one request's bytes in
another's response, and the operator the traceback."""

from __future__ import annotations

import os
import socket

import pytest
from conftest import http_get, read_to_close, server_has_read


def test_a_close_that_raises_after_the_body_leaves_the_response_whole_and_closes(start_sockact):
    server = start_sockact("testapps:misbehaves", "--workers", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /close-raises HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = read_to_close(sock)
    # the chunked body with its last chunk: the client knows it has it all; then the connection closes
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in answer, answer
    assert answer.endswith(b"\r\n\r\n6\r\nwhole \r\n4\r\nbody\r\n0\r\n\r\n"), answer
    said = server.wait_for_log("application error on GET /close-raises")
    assert "RuntimeError: close() failed" in said
    assert http_get(server.port, "/")[0] == 200


def test_a_write_kept_past_its_response_writes_nothing_into_the_next_one(start_sockact):
    server = start_sockact("testapps:misbehaves", "--workers", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /keep-write HTTP/1.1\r\nHost: t\r\n\r\n"
                     b"GET /kept-write HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answer = read_to_close(sock)
    first, _, second = answer.partition(b"\r\n\r\nfirst")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"INJECTED" not in answer, answer
    said = b"InvalidResponse: write() called after its response ended (the application had returned)"
    assert second.startswith(b"HTTP/1.1 200 OK\r\n") and second.endswith(b"\r\n\r\n" + said), answer
    assert f"Content-Length: {len(said)}\r\n".encode() in second


# asgiapps.WS_MISTAKES: what the app sends once it has accepted
@pytest.mark.parametrize("path", ["/code-5000", "/code-1005", "/code-str", "/long-reason", "/text-of-bytes",
                                  "/neither"])
def test_a_websocket_message_no_frame_may_carry_is_an_app_error_closed_with_1011(start_sockact, ws_library, path):
    from websockets.exceptions import ConnectionClosedError
    from websockets.sync.client import connect

    server = start_sockact("asgiapps:ws_misbehaves", "--workers", "1", "--ws", ws_library)
    with connect(f"ws://127.0.0.1:{server.port}{path}") as ws, pytest.raises(ConnectionClosedError) as closed:
        ws.recv(timeout=10)  # nothing of what the app sent: it sent no message
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011, closed.value
    said = server.wait_for_log(f"application error on websocket {path!r}")
    assert "InvalidResponse: websocket." in said
    assert http_get(server.port, "/")[2] == b"plain http"


def test_an_asgi_app_that_returns_without_a_response_is_an_error_unless_its_client_left(start_sockact):
    server = start_sockact("asgiapps:long_poll", "--workers", "1", activation=False, wait=False)  # it answers no check
    server.wait_for_log("ready:")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /poll HTTP/1.1\r\nHost: t\r\n\r\n")
        server.waiting(lambda: server_has_read(sock), "the request read")
    said = server.wait_for_log("returned without a response to GET /poll")
    assert "INFO sockact.http: conn" in said.split("returned without a response to GET /poll")[0].splitlines()[-1]
    server = start_sockact("asgiapps:no_response", "--workers", "1")
    assert http_get(server.port, "/none")[0] == 500
    said = server.wait_for_log("returned without a response to GET /none")
    assert "ERROR sockact.http: conn" in said.split("returned without a response to GET /none")[0].splitlines()[-1]


def test_pathsend_of_what_is_no_regular_file_is_a_500_and_holds_no_loop(start_sockact, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    server = start_sockact("asgiapps:pathsend", "--workers", "1")
    (worker,) = server.workers()
    # A FIFO's open() waited for a writer, on the worker's loop; /dev/zero was read without end.
    for path in (fifo, "/dev/zero"):
        assert http_get(server.port, f"/?path={path}")[0] == 500
        said = server.wait_for_log(f"{path}' is not a regular file")
        assert f"InvalidResponse: http.response.pathsend: '{path}' is not a regular file" in said
    blob = tmp_path / "blob"
    blob.write_bytes(b"served")
    assert http_get(server.port, f"/?path={blob}")[2] == b"served"
    assert server.workers() == [worker]
