"""A client that sends a large WSGI body slowly may not get its worker killed.

A body larger than body_buffer is read by the app as it comes (wsgi.input). A client that sends
it one byte at a time keeps each read within its timeout, so the app thread stays in the call
until `timeout`, and the supervisor then kills the whole worker as stuck: the slow client gets a
504, and every other request that worker was serving gets a 502. Nothing a client sends may kill
a worker: the read gives up on its own, before timeout, and the client gets a 408 while the
worker lives on.
"""

from __future__ import annotations

from conftest import trickle


def test_a_large_body_trickled_in_gets_a_408_and_kills_no_worker(start_sockact):
    server = start_sockact("testapps:echo", "--workers", "1", "--threads", "2", "--timeout", "3", workers=1)
    before = sorted(server.workers())
    # Past timeout, well short of the body's end (100,000 bytes, over body_buffer).
    answer = trickle(server.port, b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n", 10)
    assert sorted(server.workers()) == before, "the worker was killed"
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:60]
