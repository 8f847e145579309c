"""What the clients of a dead worker get: another worker when it never read their request, else a
502 or 504 when no byte of their response went out.

The supervisor keeps its own copy of each connection a worker holds (workers.WorkerProcess.holding),
and each app call is stamped on the scoreboard with the connection it serves and whether the
response has begun (scoreboard.Call): by its app thread in a WSGI worker, on a line of its own in
an ASGI worker's (worker/asgirunner.py). When a worker dies, those copies are all that is left of
its connections, and ``verdicts`` decides, with no I/O, what each client gets:

    in a call, no response byte sent, the call ran past timeout   504 Gateway Timeout, then close
    in a call, no response byte sent, otherwise                   502 Bad Gateway, then close
      (a WSGI worker's request read and waiting for an app
      thread counts as such a call: scoreboard.Waiting)
    in a call whose response has begun                            close: a cut response is the truth
    in a call whose response is whole (the connection persists)   as if in no call: below
    sent, but never taken from the channel by the worker           dispatched again, with the bytes
                                                                    that went with it
    not in a call, handed over with no bytes of its own, and      dispatched again: another worker
      bytes wait unread in the kernel                               reads them as if new
    not in a call, the one the worker was reading (a head read    502 Bad Gateway, then close
      in part, or a request read and on no line yet)
    not in a call, otherwise (idle, or a head read in part        close, as when the worker closes it
      before the worker read another connection)

The worker counts the messages it takes from its channel on the scoreboard before it looks at
them, and the supervisor numbers the ones it sends: those past the count never arrived, so all of
such a connection is still in the supervisor's hands. Bytes waiting in the kernel with no call
line mean a worker that did receive the connection never read it (stopped, or stalled). The bytes
that went with a hand-over it received (a hand-back's) are another matter: nothing tells whether
the worker consumed them, and replaying a request it had served would run it twice, so such a
connection is closed. One case stays out of sight: a worker that read part of a request and died
before reading the rest. The next worker then reads the rest as a request of its own, and
answers it (a 400, as a rule) instead of leaving the client with nothing.

Torn scoreboard reads are possible (see scoreboard.py) but harmless here: the worker is dead, so
its lines no longer change. ``answer`` carries a verdict out on the connection; it never raises.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import socket
import termios
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from sockact.http.dates import http_date
from sockact.http.engine import error_message
from sockact.ipc.scoreboard import Call
from sockact.policy.parking import Conn

BAD_GATEWAY = 502
GATEWAY_TIMEOUT = 504


@dataclass(frozen=True, slots=True)
class Verdict:
    conn: Conn
    status: int | None  # None: close without a word (unless again)
    line: str  # the request line of the call it was in, "" when none
    again: bool = False  # never read: dispatched to another worker, not closed


def verdicts(conns: Iterable[Conn], calls: Iterable[Call], overdue_before: float | None,
             unread: Collection[int] = (), unreceived: Collection[int] = (), reading: int = 0) -> list[Verdict]:
    """What each of a dead worker's connections gets. ``overdue_before``: the worker was killed for
    timeout, and calls started before this (monotonic) moment are the ones that ran past it.
    ``unread``: the connections with bytes waiting in the kernel (``unread_bytes``); ``unreceived``:
    those whose hand-over message the worker never took from its channel; ``reading``: the one its
    loop was reading, whatever it read on no line yet (Scoreboard.reading; 0: none)."""
    by_conn = {call.conn_id: call for call in calls}
    out = []
    for conn in conns:
        call = by_conn.get(conn.id)
        if call is not None and call.answered:
            call = None  # its response is whole and the connection persists: as idle as one in no call
        if conn.id in unreceived:
            out.append(Verdict(conn, None, "", again=True))  # it never arrived: all of it is still here
        elif call is None:
            again = not conn.data and conn.id in unread
            out.append(Verdict(conn, BAD_GATEWAY if conn.id == reading and not again else None, "", again=again))
        elif call.responded:
            out.append(Verdict(conn, None, call.line))
        elif overdue_before is not None and call.started < overdue_before:
            out.append(Verdict(conn, GATEWAY_TIMEOUT, call.line))
        else:
            out.append(Verdict(conn, BAD_GATEWAY, call.line))
    return out


def unread_bytes(fd: int) -> int:
    """How many bytes the kernel holds for the connection that no one has read (FIONREAD)."""
    count = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, count)
    except OSError:
        return 0
    return count[0]


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
