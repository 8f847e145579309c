"""The supervisor's own answer on the metrics listener: ``GET /metrics`` on its loop, never blocking.

The supervisor owns the aggregate (its counters, the acceptor's, the workers' tally), so it
answers scrapes itself instead of giving a worker a copy: a scrape works while every
worker is busy, and its connections never enter the dispatcher, the workers' books or
the access log. Each connection is read and written without blocking through the
sans-I/O engine (http/engine.py), answered once and closed; one that is not done within
CLIENT_TIMEOUT is closed at the next tick. At most MAX_CLIENTS are held at once. When they
are all held, a new connection takes the place of the oldest one that has not sent its
request yet: clients that connect and say nothing must not keep a scrape waiting until
their timeout. Only when every one is being answered do new ones wait in the backlog.
"""

from __future__ import annotations

import contextlib
import http
import logging
import selectors
import socket
from collections.abc import Callable
from dataclasses import dataclass

from sockact.errors import ProtocolError
from sockact.http.dates import http_date
from sockact.http.engine import Connection
from sockact.http.events import NEED_DATA, Request
from sockact.http.limits import Limits
from sockact.systemd.activation import Listener

log = logging.getLogger("sockact.supervisor")

CLIENT_TIMEOUT = 10.0  # seconds a scrape connection may take, request and response together
MAX_CLIENTS = 16  # scrape connections held at once; Prometheus makes one per target at a time
PATHS = (b"/metrics", b"/")
_LIMITS = Limits(request_line=1024, header_fields=50, header_field_size=4096, head=16384, body=0, host_required=True)

# status, content type, body
Render = Callable[[], tuple[int, str, bytes]]


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    engine: Connection
    deadline: float
    out: bytes = b""


class MetricsServer:
    def __init__(self, listener: Listener, selector: selectors.BaseSelector, render: Render) -> None:
        self.listener = listener
        self.selector = selector
        self.render = render
        self.clients: dict[_Client, None] = {}  # in the order they came: the oldest first
        self._accepting = False
        self._now = 0.0  # as of the last tick: deadlines need no finer clock

    def start(self, now: float) -> None:
        self.listener.sock.setblocking(False)
        self._now = now
        self._watch_listener(True)

    def _watch_listener(self, on: bool) -> None:
        if on != self._accepting:
            self._accepting = on
            if on:
                self.selector.register(self.listener.sock, selectors.EVENT_READ, (self._accept, None))
            else:
                self.selector.unregister(self.listener.sock)

    def _accept(self, _: None) -> None:
        for _turn in range(MAX_CLIENTS):  # then the loop's other work, before more of the backlog
            silent = self._oldest_silent() if len(self.clients) >= MAX_CLIENTS else None
            if len(self.clients) >= MAX_CLIENTS and silent is None:
                self._watch_listener(False)  # all being answered: the backlog holds the rest until one closes
                return
            try:
                sock, _addr = self.listener.sock.accept()
            except BlockingIOError:
                return
            except OSError:
                return  # the client gave up, or no fds: the next readiness tries again
            if silent is not None:
                self._close(silent)  # the newcomer takes its place
            sock.setblocking(False)
            client = _Client(sock, Connection(_LIMITS), self._now + CLIENT_TIMEOUT)
            self.clients[client] = None
            self.selector.register(sock, selectors.EVENT_READ, (self._read, client))

    def _oldest_silent(self) -> _Client | None:
        """The connection that has waited longest for its request, if any is still waiting."""
        return next((c for c in self.clients if not c.out), None)

    def _read(self, client: _Client) -> None:
        if client not in self.clients:
            return  # closed to make room earlier in the same batch of events
        try:
            data = client.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        engine = client.engine
        engine.receive_data(data)
        try:
            event = engine.next_event()
        except ProtocolError as exc:
            self._respond(client, engine.error_response(exc.status, http_date()))
            return
        if isinstance(event, Request):
            self._respond(client, self._answer(engine, event))
        elif event is not NEED_DATA or not data:
            self._close(client)

    def _answer(self, engine: Connection, request: Request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            return engine.error_response(405, http_date())
        if request.path not in PATHS:
            return engine.error_response(404, http_date())
        try:
            status, content_type, body = self.render()
        except Exception:
            # A bug in the metrics must never take the supervisor down: say so, answer 500.
            log.exception("metrics: cannot render the exposition")
            return engine.error_response(500, http_date())
        line = f"{status} {http.HTTPStatus(status).phrase}"
        head = engine.start_response(line, [("Content-Type", content_type)], date=http_date(), close=True,
                                     whole=len(body))
        return head + engine.send_data(body) + engine.end_response()

    def _respond(self, client: _Client, response: bytes) -> None:
        client.out = response
        self.selector.modify(client.sock, selectors.EVENT_WRITE, (self._write, client))
        self._write(client)

    def _write(self, client: _Client) -> None:
        if client not in self.clients:
            return
        try:
            sent = client.sock.send(client.out)
        except BlockingIOError:
            return
        except OSError:
            sent = len(client.out)  # the client is gone: nothing more to send
        client.out = client.out[sent:]
        if not client.out:
            self._close(client)

    def _close(self, client: _Client) -> None:
        self.clients.pop(client, None)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(client.sock)
        client.sock.close()
        self._watch_listener(True)

    def expire(self, now: float) -> None:
        """At the supervisor's tick: close the scrapes past their deadline."""
        self._now = now
        for client in [c for c in self.clients if c.deadline <= now]:
            self._close(client)

    def close_clients(self) -> None:
        """Close every scrape connection (in a new worker, and at exit); the listener is the supervisor's."""
        for client in self.clients:
            client.sock.close()
        self.clients.clear()
