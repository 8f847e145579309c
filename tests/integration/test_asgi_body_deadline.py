"""An ASGI request body has a deadline for the whole of it, as a WSGI body_buffer body has.

Each receive() waited for the next byte for at most timeout, so a client that sent one byte a
second held its connection for as long as it liked (past 15 s with --timeout 4), and a few hundred
such clients used up the worker's file descriptors. The whole body must come within timeout of its
head, else 408.
"""

from __future__ import annotations

from conftest import trickle


def test_an_asgi_body_trickled_in_gets_a_408_at_its_deadline(start_sockact):
    server = start_sockact("asgiapps:echo", "--workers", "1", "--timeout", "3", workers=1)
    [worker] = server.workers()
    # Well past timeout, well short of the body's end.
    answer = trickle(server.port, b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n", 12)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:60]
    assert server.workers() == [worker]
