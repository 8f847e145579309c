"""A request as the logs name it: its quoted line, its client and its access-log entry, for both
runners."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Any

from sockact.http.events import Request
from sockact.http.requests import PROTOCOLS, line_text
from sockact.logs.access import Entry, Memo, escape, unix_peer


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


_NO_TEXT = ("", "", "", "", "")


def connection_entry(remote: str, pid: int, conn_id: int, listener: str) -> Entry:
    """A connection's entry, with its memo: filled again for each of its requests (entry_for, then
    AccessLog.log_response), since the log keeps nothing of it."""
    return Entry(remote, *_NO_TEXT, 0, 0, 0, pid, conn_id, listener, memo=Memo())


def entry_for(entry: Entry, request: Request | None) -> Entry:
    """``entry`` (a connection_entry) for ``request`` (None: the request line itself was bad), its text
    decoded while the request repeats, for AccessLog.log_response."""
    memo = entry.memo
    if memo is None or request is not memo.key:
        if request is None:
            entry.renew(None, _NO_TEXT, ())
        else:
            entry.renew(request, line_text(request), request.headers)
    return entry


def fill_entry(entry: Entry, request: Request | None, status: int, sent: int, started: float,
               response_headers: Sequence[tuple[str, str]]) -> Entry:
    """``entry`` (a connection_entry) for the request that ends now, begun at ``started`` (time.perf_counter();
    0.0 when the log shows no duration, AccessLog.timed); None: the request line itself was bad. The
    request's text is the entry's while the request repeats."""
    entry_for(entry, request).fill_response(status, sent, started, response_headers, time.time())
    return entry
