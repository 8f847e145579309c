"""Keep-alive HTTP clients: one connection, request after request on it, never reconnecting.

``KeepAlive`` is one such connection, for a test that watches it across a restart. ``KeepAliveLoad``
runs several, each in its thread, in a loop bounded in requests and in time; a client whose
connection fails records the failure and stops, as a client that does not retry would.
``under_load`` restarts or reloads a unit while both kinds of clients run (the system test, and
bench/restarts.py for the documented figures).
"""

from __future__ import annotations

import socket
import time

from nspawn import Container
from sysclient import Load, Response, parse_response, wait_for


class KeepAlive:
    """One persistent connection to ``port``."""

    def __init__(self, port: int, *, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
        self.host = f"{host}:{port}"
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buffer = b""

    def get(self, path: str = "/", *, close: bool = False) -> Response:
        """GET ``path`` on this connection and read one response (its body by Content-Length)."""
        extra = "Connection: close\r\n" if close else ""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{extra}\r\n".encode())
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            self._buffer = head + b"\r\n\r\n" + rest
            self._fill()
            head, _, rest = self._buffer.partition(b"\r\n\r\n")
        self._buffer = rest[length:]
        return parse_response(head + b"\r\n\r\n" + rest[:length])

    def at_eof(self) -> bool:
        """Whether the server has closed the connection (waits up to the socket's timeout)."""
        return not self._buffer and self.sock.recv(1) == b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the server after {len(self._buffer)} bytes of a response")
        self._buffer += chunk

    def close(self) -> None:
        self.sock.close()


class KeepAliveLoad(Load):
    """``clients`` threads, each on one connection for its whole life; ``outcomes`` counts results."""

    def __init__(self, port: int, path: str = "/", *, clients: int = 4, max_requests: int = 3000,
                 max_seconds: float = 30.0, pause: float = 0.0) -> None:
        super().__init__(port, path, threads=clients, max_requests=max_requests, max_seconds=max_seconds,
                         timeout=25.0)
        self.pause = pause  # seconds idle between two requests: the connection sits parked meanwhile

    @property
    def alive(self) -> int:
        """Clients still on their first connection."""
        return sum(thread.is_alive() for thread in self._threads)

    def _loop(self) -> None:
        try:
            client = KeepAlive(self.port)
        except OSError as exc:
            self._record(type(exc).__name__, f"connect: {exc!r}")
            return
        try:
            while not self._stop.is_set() and time.monotonic() < self._deadline and self.total < self.max_requests:
                try:
                    response = client.get(self.path)
                except OSError as exc:
                    self._record(type(exc).__name__, repr(exc))
                    return  # never reconnects
                self._record("ok" if response.status == 200 else f"http {response.status}", repr(response))
                if self.pause:
                    self._stop.wait(self.pause)
        finally:
            client.close()


def under_load(box: Container, unit: str, actions: list[str], port: int, *, fresh_clients: int = 4,
               kept_clients: int = 8, max_requests: int = 10_000_000) -> tuple[Load, KeepAliveLoad]:
    """``systemctl ACTION unit`` for each of ``actions`` in turn while two loads run on ``port``.

    New-connection clients (Load: a connection per request) and keep-alive clients that never
    reconnect (idle a moment between requests, so that their connections are parked at a stop) run
    throughout; after each action both must be served again before the next one.
    """
    with Load(port, threads=fresh_clients, max_requests=max_requests, max_seconds=1800) as fresh, \
            KeepAliveLoad(port, clients=kept_clients, max_requests=max_requests, max_seconds=1800,
                          pause=0.02) as kept:
        for action in actions:
            served = fresh.outcomes["ok"], kept.outcomes["ok"]
            box.systemctl(action, unit, timeout=120)
            wait_for(lambda s=served: fresh.outcomes["ok"] > s[0] + 20 and (kept.outcomes["ok"] > s[1] + 20
                                                                          or not kept.alive),
                     timeout=60, what=f"both loads served after the {action}")
        fresh.stop()
        kept.stop()
    return fresh, kept
