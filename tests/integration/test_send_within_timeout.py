"""A client that never reads its response may not get its worker killed, whatever send_timeout is.

A WSGI app thread waits in the write for the client to read. When timeout is at or under
send_timeout (10 s by default, so any `--timeout` up to 10), a write that only gave up after
send_timeout kept the call running into timeout, and the supervisor killed the worker (504). The
write gives up in time instead: a call's waits on its client end before timeout.
"""

from __future__ import annotations

import socket

from conftest import http_get


def test_a_client_that_never_reads_is_dropped_before_a_timeout_under_send_timeout(start_sockact):
    # timeout 4, send_timeout its default 10: the write must not wait for send_timeout.
    server = start_sockact("testapps:big", "--workers", "1", "--timeout", "4", workers=1)
    [worker] = server.workers()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /?mb=64 HTTP/1.1\r\nHost: test\r\n\r\n" * 3)  # pipelined, and never read
        said = server.wait_for_log("connection closed", timeout=15)
    assert "the client took the response to GET /?mb=64 HTTP/1.1 too slowly to end before timeout" in said, said
    status, _, body = http_get(server.port, "/?mb=1")
    assert status == 200 and len(body) == 1 << 20
    assert server.workers() == [worker] and "stuck" not in server.output()
