"""header_timeout against the real sockact process under a load that stalls every worker: a
partial head handed back from worker to worker still gets its 408 on time."""

from __future__ import annotations

import socket
import threading
import time

from conftest import http_get, read_to_close


def test_a_partial_head_handed_back_under_a_stalling_load_gets_its_408_on_time(start_sockact):
    header_timeout = 2.0
    server = start_sockact("testapps:slow", "--workers", "2", "--threads", "1", "--header-timeout",
                           str(header_timeout), workers=2)
    done = threading.Event()

    def load() -> None:
        # Both workers' one app thread sits in a call most of the time, so each worker stalls and
        # hands its waiting connections back, over and over.
        while not done.is_set():
            http_get(server.port, "/slow?s=0.4", timeout=30)

    loaders = [threading.Thread(target=load) for _ in range(4)]
    for thread in loaders:
        thread.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            started = time.monotonic()
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n")  # and never the blank line
            answer = read_to_close(sock)
            took = time.monotonic() - started
    finally:
        done.set()
        for thread in loaders:
            thread.join(30)
    print(f"408 after {took:.2f}s (header_timeout {header_timeout}s)")
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert took <= header_timeout + 1, took
