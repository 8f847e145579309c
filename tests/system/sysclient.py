"""HTTP from the host to sockact in the container: single requests, and a bounded load loop.

Every request opens its own connection and sends Connection: close, so a refused connect, a reset
or a short response shows up as exactly one failed request.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Self


class Response:
    """Status, lower-cased headers and body of one HTTP/1.1 response."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = dict(headers)
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:60]!r}>"


def http_get(port: int, path: str = "/", *, timeout: float = 10.0, host: str = "127.0.0.1", source: str = "",
             tls: bool = False, headers: str = "") -> Response:
    """GET ``path`` with Connection: close and read the whole response. Raises OSError on failure.

    ``source``: the local address to connect from; ``tls``: over TLS, the certificate unchecked;
    ``headers``: more header lines, each ending in CRLF.
    """
    sock = socket.create_connection((host, port), timeout=timeout, source_address=(source, 0) if source else None)
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock)
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}Connection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return parse_response(b"".join(chunks))


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket (e.g. one inside the container, through Container.path())."""

    def __init__(self, path: str, *, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def parse_response(raw: bytes) -> Response:
    """Parse a complete Connection: close response (Content-Length or read-to-EOF body)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ConnectionError(f"incomplete response: {raw[:200]!r}")
    lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    if not match:
        raise ConnectionError(f"bad status line: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers and len(body) < int(headers["content-length"]):
        raise ConnectionError(f"short body: {len(body)} of {headers['content-length']} bytes")
    return Response(int(match.group(1)), headers, body)


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "") -> Any:
    """Poll until ``predicate()`` is truthy; returns its value or fails with ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)



class Load:
    """Threads that GET ``path`` in a loop until stopped, bounded in requests and in time.

    ``outcomes`` counts "ok", "refused" (ECONNREFUSED: the socket was not listening), and
    other failures by kind; ``bodies`` keeps each distinct body seen, in order.
    """

    def __init__(self, port: int, path: str = "/", *, threads: int = 4, max_requests: int = 3000,
                 max_seconds: float = 30.0, timeout: float = 15.0) -> None:
        self.port = port
        self.path = path
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []
        self.bodies: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Self:
        self._deadline = time.monotonic() + self.max_seconds
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> Counter[str]:
        """Stop the threads (after their request in flight) and return the outcomes."""
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        return self.outcomes

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failures(self) -> int:
        return self.total - self.outcomes["ok"]

    def _record(self, outcome: str, detail: str = "", body: str = "") -> None:
        with self._lock:
            self.outcomes[outcome] += 1
            if detail and len(self.errors) < 20:
                self.errors.append(detail)
            if body and (not self.bodies or self.bodies[-1] != body):
                self.bodies.append(body)

    def _loop(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline and self.total < self.max_requests:
            try:
                response = http_get(self.port, self.path, timeout=self.timeout)
            except ConnectionRefusedError as exc:
                self._record("refused", repr(exc))
                time.sleep(0.01)
                continue
            except OSError as exc:
                self._record(type(exc).__name__, repr(exc))
                continue
            if response.status == 200:
                self._record("ok", body=response.text)
            else:
                self._record(f"http {response.status}", repr(response))


class Background:
    """One GET in a thread of its own: afterwards ``response`` or ``error``, and ``seconds`` taken."""

    def __init__(self, port: int, path: str, *, timeout: float = 20.0) -> None:
        self.response: Response | None = None
        self.error: OSError | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._get, args=(port, path, timeout), daemon=True)
        self._thread.start()

    def _get(self, port: int, path: str, timeout: float) -> None:
        began = time.monotonic()
        try:
            self.response = http_get(port, path, timeout=timeout)
        except OSError as exc:
            self.error = exc
        self.seconds = time.monotonic() - began

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float = 30.0) -> Background:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the background request is still running"
        return self
