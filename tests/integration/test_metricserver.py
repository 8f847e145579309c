"""The supervisor's metrics answer, driven in this process over real loopback sockets."""

from __future__ import annotations

import contextlib
import selectors
import socket
from collections.abc import Iterator

import pytest
from conftest import parse_response

from sockact.supervisor.metricserver import MetricsServer
from sockact.systemd.activation import Listener


def serve_one(server: MetricsServer, selector: selectors.BaseSelector, request: bytes) -> bytes:
    """Send ``request`` and turn the supervisor's side of the loop until the answer is whole."""
    address = server.listener.sock.getsockname()
    with socket.create_connection(address, timeout=5) as client:
        client.sendall(request)
        client.setblocking(False)
        out = b""
        for _ in range(1000):
            for key, _ in selector.select(0.01):
                handler, arg = key.data
                handler(arg)
            try:
                chunk = client.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                return out
            out += chunk
    raise AssertionError(f"no whole answer: {out!r}")


def test_a_failing_render_answers_500_and_the_next_scrape_is_served():
    calls = []

    def render() -> tuple[int, str, bytes]:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("a bug")
        return 200, "text/plain", b"sockact_up 1\n"

    sock = socket.create_server(("127.0.0.1", 0))
    selector = selectors.DefaultSelector()
    server = MetricsServer(Listener(sock, "metrics", owned=True), selector, render)
    server.start(0.0)
    try:
        get = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n"
        assert parse_response(serve_one(server, selector, get))[0] == 500
        status, headers, body = parse_response(serve_one(server, selector, get))
        assert (status, body) == (200, b"sockact_up 1\n")
        assert headers["connection"] == "close"
        head = parse_response(serve_one(server, selector, b"HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n"))
        assert head[0] == 200 and head[2] == b""
        assert not server.clients  # every connection answered once and closed
    finally:
        server.close_clients()
        selector.close()
        sock.close()


@pytest.fixture
def held() -> Iterator[tuple[MetricsServer, selectors.BaseSelector, list[socket.socket]]]:
    """A metrics server answering "x", its selector, and a list for the test's clients (all closed after)."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=64)
    selector = selectors.DefaultSelector()
    server = MetricsServer(Listener(sock, "metrics", owned=True), selector, lambda: (200, "text/plain", b"x\n"))
    server.start(0.0)
    clients: list[socket.socket] = []
    yield server, selector, clients
    for client in clients:
        client.close()
    server.close_clients()
    selector.close()
    sock.close()


def turn(selector: selectors.BaseSelector, timeout: float = 1.0) -> list:
    """One turn of the supervisor's loop, for the metrics server's events only."""
    events = selector.select(timeout)
    for key, _ in events:
        key.data[0](key.data[1])
    return events


def test_a_connection_closed_to_make_room_ignores_its_event_in_the_same_batch(held):
    from sockact.supervisor.metricserver import MAX_CLIENTS

    server, selector, clients = held
    sock = server.listener.sock
    address = sock.getsockname()
    clients += [socket.create_connection(address, timeout=5) for _ in range(MAX_CLIENTS)]
    while len(server.clients) < MAX_CLIENTS:
        turn(selector)
    oldest = next(iter(server.clients))
    clients[0].sendall(b"GET /metrics HTTP/1.1\r\n")  # part of a head: the oldest is still silent
    while not oldest.engine.buffered:
        turn(selector)
    # In one batch: a newcomer on the listener, and the oldest silent client's next bytes. The
    # listener comes first, and closes the oldest to make room; then comes that one's stale event.
    clients.append(socket.create_connection(address, timeout=5))
    clients[0].sendall(b"Host: t\r\n")
    batch: list = []
    while len(batch) < 2:
        batch = selector.select(1)
    batch.sort(key=lambda event: event[0].fileobj is not sock)
    for key, _ in batch:
        key.data[0](key.data[1])
    assert len(server.clients) == MAX_CLIENTS
    # closed, with no answer (a reset, as its bytes were left unread)
    with contextlib.suppress(ConnectionResetError):
        assert clients[0].recv(1) == b""


def test_at_most_16_scrape_connections_are_held(held):
    # 16 is the number docs/metrics.md gives; the 17th silent client takes the oldest one's place.
    server, selector, clients = held
    for count in range(1, 18):
        clients.append(socket.create_connection(server.listener.sock.getsockname(), timeout=5))
        while turn(selector, 0.05) or len(server.clients) < min(count, 16):
            pass
    assert len(server.clients) == 16
    with contextlib.suppress(ConnectionResetError):
        assert clients[0].recv(1) == b""  # the oldest was closed to make room
