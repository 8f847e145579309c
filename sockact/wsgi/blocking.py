"""One connection served start to end with blocking reads, by the thread that owns it: what tests
and tools drive. The workers' runners use HTTPConnection directly."""

from __future__ import annotations

import enum
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from sockact.http.events import Request
from sockact.http.site import Site
from sockact.wsgi.server import HTTPConnection, Step
from sockact.wsgi.wire import ClientGone


class Outcome(enum.Enum):
    """What the caller does with the connection when serve_connection returns."""

    PARK = "park"  # between requests, keep-alive, nothing buffered: hand the fd back
    CLOSE = "close"  # close it


def serve_connection(sock: socket.socket, site: Site, *, peer: tuple[Any, ...] | str | None, conn_id: int,
                     pending: bytes = b"", environ_extra: Mapping[str, Any] | None = None,
                     stopping: Callable[[], bool] = lambda: False) -> Outcome:
    """Serve requests on a blocking ``sock`` until it must be parked or closed.

    The first request may not have arrived yet: ``site.header_timeout`` bounds the wait
    for each request head. Used where one thread owns one connection (tests, tools).
    """
    http = HTTPConnection(sock, site, peer=peer, conn_id=conn_id, pending=pending, environ_extra=environ_extra,
                          stopping=stopping)
    deadline = time.monotonic() + site.header_timeout
    served = 0
    while True:
        step = http.next_request()
        if isinstance(step, Request):
            served += 1
            if not http.serve(step):
                return Outcome.CLOSE
            deadline = time.monotonic() + site.header_timeout
            continue
        if step is Step.LINGER:
            http.wire.linger()
            return Outcome.CLOSE
        if step is Step.CLOSE:
            return Outcome.CLOSE
        if step is Step.IDLE and served:
            return Outcome.PARK
        try:
            http.receive(http.wire.recv(deadline - time.monotonic()))
        except ClientGone:
            http.head_timed_out()
            return Outcome.CLOSE
