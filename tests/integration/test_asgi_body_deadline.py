"""An ASGI request body has a deadline for the whole of it, as a WSGI body_buffer body has.

Each receive() waited for the next byte for at most timeout, so a client that sent one byte a
second held its connection for as long as it liked (past 15 s with --timeout 4), and a few hundred
such clients used up the worker's file descriptors. The body must come within timeout of its head,
plus a second for each KiB received (a real upload's pace), else 408.
"""

from __future__ import annotations

import json
import socket
import time

from conftest import read_to_close, trickle


def test_an_asgi_body_trickled_in_gets_a_408_at_its_deadline(start_sockact):
    server = start_sockact("asgiapps:echo", "--workers", "1", "--timeout", "3", workers=1)
    [worker] = server.workers()
    # Well past timeout, well short of the body's end.
    answer = trickle(server.port, b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n", 12)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:60]
    assert server.workers() == [worker]


def test_an_asgi_body_sent_at_a_real_pace_may_take_longer_than_timeout(start_sockact):
    # A large upload over a slow link is not a trickle: each KiB received moves the deadline on a
    # second, so 48 KiB at 16 KiB/s (3 s, past a timeout of 2) is served whole.
    server = start_sockact("asgiapps:echo", "--workers", "1", "--timeout", "2", workers=1)
    piece = b"y" * 8192
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 49152\r\n\r\n")
        for _ in range(6):
            sock.sendall(piece)
            time.sleep(0.5)  # the client's pace, not a synchronisation
        answer = read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:60]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["body"] == "y" * 6 * len(piece)
