"""body_buffer: a WSGI request body up to its size is read by the worker's loop before the app is
called, so a client that sends its body slowly holds no app thread."""

from __future__ import annotations

import json
import socket
import threading

from conftest import http_get, parse_response, raw_exchange, server_has_read, upload_across_a_stall, wait_until

HEAD = b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\nConnection: close\r\n"


def slow_upload(port: int) -> socket.socket:
    """A client that has sent its head and half of its body, and waits."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(HEAD + b"\r\n" + b"0123456789")
    return sock


def test_a_slow_body_holds_no_app_thread_and_arrives_whole(start_sockact):
    # One worker with one app thread: if the app were called at the head, it would sit in
    # wsgi.input.read() and every other request would wait for this client.
    server = start_sockact("testapps:echo", "--workers", "1", "--threads", "1", workers=1)
    with slow_upload(server.port) as sock:
        wait_until(lambda: server_has_read(sock), "the loop to read the head and half the body")
        # Answered before the rest of the body comes (it comes after them): an app thread waiting in
        # wsgi.input.read() would leave these unanswered until the client's timeout.
        for _ in range(5):
            assert http_get(server.port, "/other", timeout=10)[0] == 200
        status, _, body = parse_response(raw_exchange(sock, b"abcdefghij"))
    assert status == 200 and json.loads(body)["body"] == "0123456789abcdefghij"


def test_a_body_that_stops_coming_gets_408(start_sockact):
    server = start_sockact("testapps:echo", "--workers", "1", "--timeout", "2", workers=1)
    with slow_upload(server.port) as sock:
        status, headers, _ = parse_response(raw_exchange(sock, b""))
    assert (status, headers["connection"]) == (408, "close")
    assert http_get(server.port, "/")[0] == 200


def test_expect_100_continue_is_answered_before_the_body_is_read(start_sockact):
    server = start_sockact("testapps:echo", "--workers", "1", workers=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(HEAD + b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        status, _, body = parse_response(raw_exchange(sock, b"0123456789abcdefghij"))
    assert status == 200 and json.loads(body)["body"] == "0123456789abcdefghij"


def test_a_body_larger_than_the_buffer_still_streams_to_the_app(start_sockact):
    server = start_sockact("testapps:echo", "--workers", "1", "--body-buffer", "10", workers=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        status, _, body = parse_response(raw_exchange(sock, HEAD + b"\r\n" + b"x" * 20))
    assert status == 200 and json.loads(body)["body"] == "x" * 20


def test_a_stop_while_a_body_is_coming_finishes_that_request(start_sockact):
    server = start_sockact("testapps:echo", "--workers", "1", workers=1)
    box: dict = {}
    with slow_upload(server.port) as sock:
        wait_until(lambda: server_has_read(sock), "the loop to read the head and half the body")
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        server.wait_for_log("stopping: draining")  # the listener is closed, the worker drains
        box["answer"] = raw_exchange(sock, b"abcdefghij")
        stopper.join(30)
    status, _, body = parse_response(box["answer"])
    assert status == 200 and json.loads(body)["body"] == "0123456789abcdefghij"


def test_a_body_cut_short_by_the_client_is_answered_400(start_sockact):
    server = start_sockact("testapps:echo", "--workers", "1", workers=1)
    with slow_upload(server.port) as sock:
        sock.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
        status, _, _ = parse_response(answer)
    assert status == 400


def test_a_buffered_body_too_big_to_hand_back_waits_for_the_stalled_worker(start_sockact, tmp_path):
    # A head and 64 KiB of body less one byte, all buffered by the loop: more than one hand-off message
    # carries. When the worker stalls, the other connections go back to the supervisor; this one must
    # stay, not go in a message the supervisor reads cut short (and kills the worker for).
    server = start_sockact("testapps:slow", "--workers", "1", "--threads", "1", workers=1)
    upload_across_a_stall(server, tmp_path, b"Content-Length: 65536\r\n\r\n" + b"x" * 65535, b"x")
    assert b"bad message" not in server.log_path.read_bytes()
