"""One WebSocket client may not take its worker's event loop from everyone else.

A client that streams a message as one-byte continuation frames (7 bytes on the wire for each byte
of payload, well within ws_max_size) makes the worker parse frames as fast as it can send them.
The worker's other connections must still be served: here, a plain request to the same (only)
worker is answered within a generous bound.

With wsproto it fails today (strict xfail): the request waits 10 s and more while the flood goes
on, or is closed with no answer. Remove the mark once fixed. (With websockets the same request
waited 0.1 s here, but up to 2.8 s with two workers and two such clients: the bound would make
that case flaky, so it is not run until the wsproto case is fixed.)
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


@pytest.mark.xfail(strict=True, reason="with wsproto, a fragment flood holds the worker's loop")
def test_a_fragment_flood_does_not_hold_up_the_workers_other_clients(start_sockact, library="wsproto"):
    server = start_sockact("asgiapps:ws_echo", "--workers", "1", "--ws", library, workers=1)
    flooder = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    flooder.sendall(HANDSHAKE)
    head = b""
    while b"\r\n\r\n" not in head:
        head += flooder.recv(4096)
    assert head.startswith(b"HTTP/1.1 101 "), head
    flooder.sendall(FIRST)
    stop = threading.Event()

    def flood() -> None:
        burst = MORE * 10_000
        deadline = time.monotonic() + 20  # bounded, whatever happens to the test
        with contextlib.suppress(OSError):
            while not stop.is_set() and time.monotonic() < deadline:
                flooder.sendall(burst)

    thread = threading.Thread(target=flood)
    thread.start()
    try:
        time.sleep(1)  # the flood is under way
        started = time.monotonic()
        status, _, _ = http_get(server.port, "/", timeout=15)
        waited = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
        flooder.close()
    assert status == 200
    assert waited < BOUND, f"a plain request waited {waited:.1f}s behind the flood"
