"""header_timeout holds for a connection that waits because every worker is busy.

With one worker of one app thread in a long call, a new connection waits (in the supervisor's
queue, or handed back to it) until the call ends. A partial head must still get its 408, and a
connection that sent nothing must still be closed, at header_timeout: neither when a worker is free
again, nor after keepalive as if it were an idle keep-alive connection.

Both failed once:
- the supervisor checked a head's deadline only when it handed the connection to a worker, and
  nothing looked at the connections that waited meanwhile (now its timer does too);
- a connection that arrived while the worker's only thread was entering a call (within
  handback_after) was handed back with nothing read, and the supervisor kept it for keepalive
  (75 s by default), not header_timeout (now its deadline travels with it, from its accept).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from conftest import read_to_close, wait_until

HEADER_TIMEOUT = 1.0


def busy_worker(start_sockact, tmp_path: Path, seconds: float, *extra: str):
    """A server of one worker whose only app thread is in a call of ``seconds``; and that call's client."""
    server = start_sockact("testapps:slow", "--workers", "1", "--header-timeout", str(HEADER_TIMEOUT),
                           "--timeout", "30", *extra, workers=1)
    began = tmp_path / "began"
    busy = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    busy.sendall(f"GET /?s={seconds}&started={began} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    wait_until(began.exists, "the long call to begin")
    return server, busy


def closed_after(sock: socket.socket, started: float) -> tuple[bytes, float]:
    """What the server sent until it closed, and when; b"(open)" if it was still open at the socket's timeout."""
    with sock:
        try:
            answer = read_to_close(sock)
        except TimeoutError:
            answer = b"(open)"
    return answer, time.monotonic() - started


def test_a_partial_head_waiting_for_a_busy_worker_gets_its_408_at_header_timeout(start_sockact, tmp_path):
    server, busy = busy_worker(start_sockact, tmp_path, 8)
    partial = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    partial.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")  # the head never ends
    answer, waited = closed_after(partial, time.monotonic())
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:60]
    assert waited < HEADER_TIMEOUT + 2, f"the 408 came after {waited:.1f}s, when the 8 s call ended"
    with busy:
        assert read_to_close(busy).startswith(b"HTTP/1.1 200 ")


def test_a_silent_connection_that_came_as_the_worker_got_busy_is_not_kept_for_keepalive(start_sockact, tmp_path):
    # The call lasts 2 s and keepalive is 20 s: closed at header_timeout, or at worst when the call
    # ends (the queue's own defect, above), it is closed well before 10 s; kept as a parked
    # keep-alive connection, only after 20 s.
    # handback_after 1 s: the connection surely comes while the worker still takes new ones.
    server, busy = busy_worker(start_sockact, tmp_path, 2, "--keepalive", "20", "--handback-after", "1")
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    answer, waited = closed_after(silent, time.monotonic())
    assert answer == b"", answer[:60]  # no request begun: closed without a word, and before the timeout
    assert waited < 10, f"closed after {waited:.1f}s"
    with busy:
        assert read_to_close(busy).startswith(b"HTTP/1.1 200 ")
