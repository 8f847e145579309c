"""What the clients of a dead worker get: another worker when it never read their request, parked when
it was idle for sure, a 408 for a head it held in part, else a 502 or 504 when no byte of their
response went out.

The supervisor keeps its own copy of each connection a worker holds (workers.WorkerProcess.holding),
and each app call is stamped on the scoreboard with the connection it serves and whether the
response has begun (scoreboard.Call): by its app thread in a WSGI worker, on a line of its own in
an ASGI worker's (worker/asgirunner.py). When a worker dies, those copies are all that is left of
its connections, and ``verdicts`` decides, with no I/O, what each client gets:

    in a call, no response byte sent, the call ran past timeout   504 Gateway Timeout, then close
    in a call, no response byte sent, otherwise                   502 Bad Gateway, then close
      (a WSGI worker's request read and waiting for an app
      thread counts as such a call: scoreboard.Waiting)
    in a call whose response is about to begin, and the kernel    502 or 504, as above
      counts no byte of it written (``written_bytes``)
    in a call whose response went out whole in one send, and     as if in no call: below
      the connection persists; or is stamped whole
    in a call whose response has begun                            close: a cut response is the truth
    sent, but never taken from the channel by the worker           dispatched again, with the bytes
                                                                    that went with it
    not in a call, handed over with no bytes of its own, and      dispatched again: another worker
      bytes wait unread in the kernel                               reads them as if new
    not in a call, handed over with a hand-back's bytes, a        dispatched again, without the
      response written since, and bytes wait unread                 bytes that were answered
    not in a call, handed over with a hand-back's bytes, and      502 Bad Gateway, then close
      no byte written since (``written_bytes``)
    not in a call, the one the worker was reading (a head read    502 Bad Gateway, then close
      in part, or a request read and on no line yet)
    not in a call, marked idle at a request boundary by the       parked, as a worker parks it: its
      worker (Scoreboard.resting), nothing unread, its last          next request goes to another worker
      response out whole by the kernel's count, still open
    not in a call, marked as holding part of a head, no more,     408 Request Timeout, then close: the
      its last response out whole, still open                       head is lost, and the client may
                                                                     send it again on a new connection
    not in a call, marked as holding a head read whole behind a    502 Bad Gateway, then close: the
      response (pipelined, ASGI), its last response out whole       request is lost with the worker
    not in a call, otherwise (a head read in part before the       close, as when the worker closes it
      worker read another connection, an idle one not marked)

The worker counts the messages it takes from its channel on the scoreboard before it looks at
them, and the supervisor numbers the ones it sends: those past the count never arrived, so all of
such a connection is still in the supervisor's hands. Bytes waiting in the kernel with no call
line mean a worker that did receive the connection never read it (stopped, or stalled). The bytes
that went with a hand-over it received (a hand-back's) are another matter: nothing tells whether
the worker consumed them, and replaying a request it had begun would run it twice, so they never go
again. The kernel's count of bytes written on the connection since tells whether they were answered:
if so, a request that waits unread behind them is one of its own; if not, the client gets a 502.
An idle connection and one whose head the worker read in part look alike in the kernel: the worker
marks the first kind, and the second, on the scoreboard (Scoreboard.resting), and the kernel's count
of bytes written confirms that nothing of the last response waited in its buffers. One case stays
out of sight: a worker that read part of a request and died before marking it (or whose mark another
connection took). The next worker then reads the rest as a request of its own, and answers it (a 400,
as a rule) instead of leaving the client with nothing.

Torn scoreboard reads are possible (see scoreboard.py) but harmless here: the worker is dead, so
its lines no longer change. ``answer`` carries a verdict out on the connection; it never raises.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import socket
import struct
import termios
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from sockact.http.dates import http_date
from sockact.http.engine import error_message
from sockact.ipc.scoreboard import Call, Rest
from sockact.policy.parking import Conn

REQUEST_TIMEOUT = 408
BAD_GATEWAY = 502
GATEWAY_TIMEOUT = 504


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one connection of a dead worker gets."""

    conn: Conn
    status: int | None  # None: close without a word (unless again)
    line: str  # the request line of the call it was in, "" when none
    again: bool = False  # never read: dispatched to another worker, not closed
    served: bool = False  # again, but the bytes that came with it were answered: it goes without them
    park: bool = False  # idle at a request boundary, every byte read answered: parked, not closed


def verdicts(conns: Iterable[Conn], calls: Iterable[Call], overdue_before: float | None,
             unread: Collection[int] = (), unreceived: Collection[int] = (), reading: int = 0,
             written: Mapping[int, int | None] | None = None, resting: Mapping[int, Rest] | None = None
             ) -> list[Verdict]:
    """What each of a dead worker's connections gets. ``overdue_before``: the worker was killed for
    timeout, and calls started before this (monotonic) moment are the ones that ran past it.
    ``unread``: the connections with bytes waiting in the kernel (``unread_bytes``); ``unreceived``:
    those whose hand-over message the worker never took from its channel; ``reading``: the one its
    loop was reading, whatever it read on no line yet (Scoreboard.reading; 0: none); ``written``: for
    those whose response had begun, and those that came with bytes, the bytes written on them by then
    (``written_bytes``), and for those marked at a boundary (``resting``), the same count if the connection
    is still open both ways (else None)."""
    by_conn = {call.conn_id: call for call in calls}
    out = []
    for conn in conns:
        call = by_conn.get(conn.id)
        out_now = _response_out(conn, call, (written or {}).get(conn.id)) if call is not None else None
        if call is not None and (call.answered or out_now == "whole"):
            call = None  # its response is whole and the connection persists: as idle as one in no call
        if conn.id in unreceived:
            out.append(Verdict(conn, None, "", again=True))  # it never arrived: all of it is still here
        elif call is None and conn.data.strip(b"\r\n"):
            out.append(_brought(conn, _answered_since(conn, (written or {}).get(conn.id)), conn.id in unread,
                                conn.id == reading))
        elif call is None:
            again = conn.id in unread
            rest = _rest(conn, (resting or {}).get(conn.id), (written or {}).get(conn.id))
            if rest is not None and (rest.in_head or rest.read):
                # Whatever came since waits unread behind it, and cannot be served without it.
                out.append(Verdict(conn, BAD_GATEWAY if rest.read else REQUEST_TIMEOUT, ""))
                continue
            if rest is not None and not again:
                out.append(Verdict(conn, None, "", park=True))
                continue
            out.append(Verdict(conn, BAD_GATEWAY if conn.id == reading and not again else None, "", again=again))
        elif call.responded and out_now != "none":
            out.append(Verdict(conn, None, call.line))
        elif overdue_before is not None and call.started < overdue_before:
            out.append(Verdict(conn, GATEWAY_TIMEOUT, call.line))
        else:
            out.append(Verdict(conn, BAD_GATEWAY, call.line))
    return out


def _brought(conn: Conn, answered: bool | None, unread: bool, reading: bool) -> Verdict:
    """The verdict on a connection in no call that came with bytes (a hand-back's). Once a response
    went out on it since, the worker had answered them: what waits unread is a request of its own, for
    another worker, without them (``served``). With none, they were not answered: a 502, for whether
    the worker consumed them, or read more, cannot be told."""
    if answered:
        return Verdict(conn, BAD_GATEWAY if reading and not unread else None, "", again=unread, served=unread)
    if answered is None:
        return Verdict(conn, BAD_GATEWAY if reading else None, "")  # the kernel cannot say: as if idle
    return Verdict(conn, BAD_GATEWAY, _request_line(conn.data))


def _rest(conn: Conn, mark: Rest | None, now: int | None) -> Rest | None:
    """``conn``'s mark if it is at a request boundary for sure: its worker marked it so (a mark is wiped
    before each read), and the kernel counts every byte the worker had written by then as written
    (``now``), so nothing of its last response waited in the worker's buffers."""
    if mark is None or now is None or conn.written < 0 or now != conn.written + mark.written:
        return None
    return mark


def _request_line(head: bytes) -> str:
    """A head's method and target, as a call's line names them, for the log ("" when its first line is not whole)."""
    first, crlf, _ = head.lstrip(b"\r\n").partition(b"\r\n")
    return first.rsplit(b" ", 1)[0].decode("latin-1") if crlf else ""


def _answered_since(conn: Conn, now: int | None) -> bool | None:
    """Whether bytes were written on ``conn`` since its worker had it, as the kernel counts them (None:
    it cannot say)."""
    if conn.written < 0 or now is None:
        return None
    return now > conn.written


# struct tcp_info (linux/tcp.h): tcpi_notsent_bytes, then tcpi_bytes_sent and tcpi_bytes_retrans (Linux 4.19)
_NOTSENT = struct.Struct("=I")
_NOTSENT_AT = 144
_SENT = struct.Struct("=QQ")
_SENT_AT = 200
_TCP_INFO_SIZE = _SENT_AT + _SENT.size
_ESTABLISHED = 1  # tcpi_state, the struct's first byte: TCP_ESTABLISHED (a worker's close shuts its side first)


def written_bytes(fd: int, established: bool = False) -> int | None:
    """How many bytes were ever written on the TCP connection ``fd``, by any process: those sent once
    (retransmissions not counted again) and those still waiting to be sent. None when the kernel
    cannot say (not TCP, or too old), and with ``established``, when either side has begun to close."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, fileno=fd)  # a family given: no look-up
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    finally:
        sock.detach()  # the fd stays the caller's
    if len(info) < _TCP_INFO_SIZE or (established and info[0] != _ESTABLISHED):
        return None
    sent, retransmitted = _SENT.unpack_from(info, _SENT_AT)
    return int(sent - retransmitted + _NOTSENT.unpack_from(info, _NOTSENT_AT)[0])


def _response_out(conn: Conn, call: Call, now: int | None) -> str | None:
    """How much of a begun response the kernel took, from its count of bytes written on the connection
    against the worker's: "none", "whole" (one send, the connection persisting), or None (some, or
    not known)."""
    if not call.responded or call.written_before is None or now is None or conn.written < 0:
        return None
    before = conn.written + call.written_before
    if now == before:
        return "none"
    if call.length and now == before + call.length:
        return "whole"
    return None


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
            # Input left unread would make close() reset the connection, and the client might lose the answer.
            with contextlib.suppress(OSError):
                for _ in range(16):
                    if not sock.recv(65536, socket.MSG_DONTWAIT):
                        break
        sock.shutdown(socket.SHUT_RDWR)
