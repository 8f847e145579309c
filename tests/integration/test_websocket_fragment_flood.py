"""One WebSocket client may not take its worker's event loop from everyone else.

A client that streams a message as one-byte continuation frames (7 bytes on the wire for each byte
of payload, well within ws_max_size) makes the worker parse frames as fast as it can send them.
The worker's other connections must still be served: here, plain requests to the same workers are
answered within a generous bound, with one worker and one flooder, and two of each.

Before each session's parsing was bounded per turn of the loop, a plain request waited 10 s and more
behind one flooder with wsproto (or was closed unanswered), and up to 2.8 s with websockets, two
workers and two flooders.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
from conftest import http_get

HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
FIRST = bytes([0x02, 0x81, 0, 0, 0, 0]) + b"x"  # a binary frame, not final, masked with a zero key
MORE = bytes([0x00, 0x81, 0, 0, 0, 0]) + b"z"  # a continuation frame, not final
BOUND = 3.0  # seconds; an idle worker answers in milliseconds



def flooder(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(HANDSHAKE)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101 "), head
    sock.sendall(FIRST)
    return sock


def flood(sock: socket.socket, stop: threading.Event) -> None:
    burst = MORE * 10_000
    deadline = time.monotonic() + 30  # bounded, whatever happens to the test
    with contextlib.suppress(OSError):
        while not stop.is_set() and time.monotonic() < deadline:
            sock.sendall(burst)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_fragment_flood_does_not_hold_up_the_workers_other_clients(start_sockact, ws_library, workers):
    server = start_sockact("asgiapps:ws_echo", "--workers", str(workers), "--ws", ws_library, workers=workers)
    socks = [flooder(server.port) for _ in range(workers)]
    stop = threading.Event()
    threads = [threading.Thread(target=flood, args=(sock, stop)) for sock in socks]
    for thread in threads:
        thread.start()
    waits = []
    try:
        time.sleep(1)  # the flood is under way
        for _ in range(5):
            started = time.monotonic()
            status, _, _ = http_get(server.port, "/", timeout=15)
            waits.append(time.monotonic() - started)
            assert status == 200
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for sock in socks:
            sock.close()
    assert max(waits) < BOUND, f"plain requests waited {', '.join(f'{w:.2f}' for w in waits)}s behind the flood"
