"""A request as the logs name it: its quoted line, its client and its access-log entry, for both
runners."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Any

from sockact.http.events import Request
from sockact.http.requests import PROTOCOLS, path_info
from sockact.logs.access import Entry, escape, unix_peer


def quoted_request_line(request: Request | None) -> str:
    """A request as logs quote it: client text escaped (see logs.access.escape); "-" for none."""
    if request is None:
        return "-"
    return escape(f"{request.method.decode('latin-1')} {request.target.decode('latin-1')} "
                  f"{PROTOCOLS[request.version]}")


def access_remote(sock: socket.socket, peer: tuple[Any, ...] | str | None) -> str:
    """The client as the access log names it: the TCP peer's address, or a Unix peer's path."""
    if isinstance(peer, tuple):
        return str(peer[0])
    return peer or (unix_peer(sock) if sock.family == socket.AF_UNIX else "")


def access_entry(remote: str, request: Request | None, status: int, sent: int, started: float, pid: int,
                 conn_id: int, listener: str, response_headers: Sequence[tuple[str, str]] = ()) -> Entry:
    """The access log's entry for one request (None: the request line itself was bad) begun at ``started``
    (time.perf_counter())."""
    global _last
    duration = int((time.perf_counter() - started) * 1e6)
    if request is None:
        return Entry(remote, "", "", "", "", "", status, sent, duration, pid, conn_id, listener)
    last = _last  # one tuple, replaced whole: app threads log at once
    if request is not last[0]:
        # The engine gives the same Request again for a repeated head: its text is made once.
        last = _last = (request, request.method.decode("latin-1"), request.target.decode("latin-1"),
                        path_info(request.path), request.query.decode("latin-1"), PROTOCOLS[request.version])
    # Positional: this runs once a request. The fields' order is Entry's; the request is the entry's key.
    return Entry(remote, last[1], last[2], last[3], last[4], last[5], status, sent, duration, pid, conn_id,
                 listener, request.headers, response_headers, time.time(), request)


# The last request given an entry, and its text: method, target, path, query, protocol.
_last: tuple[Request | None, str, str, str, str, str] = (None, "", "", "", "", "")
