"""What the clients of a dead worker get: a 502 or 504 when no byte of their response went out.

The supervisor keeps its own copy of each connection a worker holds (workers.WorkerProcess.holding),
and each app call is stamped on the scoreboard with the connection it serves and whether the
response has begun (scoreboard.Call): by its app thread in a WSGI worker, on a line of its own in
an ASGI worker's (asgi/runner.py). When a worker dies, those copies are all that is left of
its connections, and ``verdicts`` decides, with no I/O, what each client gets:

    in a call, no response byte sent, the call ran past timeout   504 Gateway Timeout, then close
    in a call, no response byte sent, otherwise                   502 Bad Gateway, then close
    in a call whose response has begun                            close: a cut response is the truth
    not in a call (idle, or part of a head read)                  close, as when the worker closes it

Torn scoreboard reads are possible (see scoreboard.py) but harmless here: the worker is dead, so
its lines no longer change. ``answer`` carries a verdict out on the connection; it never raises.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from .http.engine import error_message
from .http.server import http_date
from .parking import Conn
from .scoreboard import Call

BAD_GATEWAY = 502
GATEWAY_TIMEOUT = 504


@dataclass(frozen=True, slots=True)
class Verdict:
    conn: Conn
    status: int | None  # None: close without a word
    line: str  # the request line of the call it was in, "" when none


def verdicts(conns: Iterable[Conn], calls: Iterable[Call], overdue_before: float | None) -> list[Verdict]:
    """What each of a dead worker's connections gets. ``overdue_before``: the worker was killed for
    timeout, and calls started before this (monotonic) moment are the ones that ran past it."""
    by_conn = {call.conn_id: call for call in calls}
    out = []
    for conn in conns:
        call = by_conn.get(conn.id)
        if call is None:
            out.append(Verdict(conn, None, ""))
        elif call.responded:
            out.append(Verdict(conn, None, call.line))
        elif overdue_before is not None and call.started < overdue_before:
            out.append(Verdict(conn, GATEWAY_TIMEOUT, call.line))
        else:
            out.append(Verdict(conn, BAD_GATEWAY, call.line))
    return out


def answer(verdict: Verdict) -> None:
    """Send the verdict's response, if any, without blocking, then end the connection (our copy is the last)."""
    last_word(verdict.conn.fd, verdict.status)


def last_word(fd: int, status: int | None) -> None:
    """An error response with ``status`` (None: none) sent without blocking, then the connection ended
    and ``fd`` closed. Never raises: the client may be gone already."""
    with socket.socket(fileno=fd) as sock, contextlib.suppress(OSError):
        if status is not None:
            sock.send(error_message(status, http_date()), socket.MSG_DONTWAIT)
        sock.shutdown(socket.SHUT_RDWR)
