"""What a worker's runner says to the supervisor over its channel, and reads from it.

Connections arrive (CONN) and are taken in batches; they go back (PARK) with the bytes read
and not served; the ones a loop closed in a turn are reported in one DONE; RECYCLE says
max_requests is reached. A gone supervisor is not an error here: the worker learns it from
the channel's EOF. Also here: the per-connection values both runners derive from a message.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

from sockact.errors import HandoffError
from sockact.http import Site, proxyprotocol
from sockact.http.events import Request
from sockact.http.proxyprotocol import ProxyProtocolError
from sockact.http.requests import decoded_path
from sockact.ipc import handoff
from sockact.logs import flood

log = logging.getLogger("sockact.worker")

SEND_WAIT = 5.0  # seconds a report to the supervisor may wait for room in the channel
BATCH = 64  # connections taken from the channel at a time, then the held ones have their turn


def read_channel(receiver: handoff.Receiver, chan: socket.socket, adopt: Callable[[handoff.Message], None],
                 retire: Callable[[], None]) -> None:
    """Take the connections waiting on the channel, a batch at most, and always the rest of a CONNS
    already received (the channel will not wake the loop for those); ``retire`` at EOF."""
    taken = 0
    while taken < BATCH or receiver.pending:
        # The first is known to wait (or meets EAGAIN); before another, a poll(0), not a recv() that fails with
        # EAGAIN and its exception: one of those every time the loop woke for the channel.
        if taken and not receiver.waiting():
            return
        taken += 1
        try:
            msg = receiver.recv()
        except BlockingIOError:
            return
        except handoff.FdsLost as exc:
            # Out of fds, as a flood of clients can make it: one a message, limited.
            flood.WORKER.log(flood.FDS_LOST, log, logging.WARNING, "worker %d: connections were lost on their way "
                             "in (%s)", os.getpid(), exc)
            report(chan, handoff.done([lost.conn_id for lost in exc.messages]))
            continue
        except HandoffError as exc:
            log.error("worker %d: bad message from the supervisor: %s", os.getpid(), exc)
            continue
        except OSError:
            msg = None
        if msg is None:
            retire()
            return
        if msg.kind == handoff.CONN:
            adopt(msg)


def hand_back(chan: socket.socket, msg: handoff.Message, sock: socket.socket, data: bytes,
              head_started: float = 0.0) -> None:
    """Give a connection back to the supervisor (PARK) with the bytes read and not served, and when the
    head among them began to arrive (0.0: none has); closes ours."""
    report(chan, handoff.Message(handoff.PARK, conn_id=msg.conn_id, listener=msg.listener, family=msg.family,
                                 peer=msg.peer, hops=msg.hops, data=data, fd=sock.fileno(), proxy=msg.proxy,
                                 head_started=head_started))
    sock.close()  # the supervisor holds it now


class Closed:
    """The connections a loop closed in one turn, reported to the supervisor in one DONE at its end:
    one send for all of them, and the supervisor reads one message."""

    __slots__ = ("chan", "ids")

    def __init__(self, chan: socket.socket) -> None:
        self.chan = chan
        self.ids: list[int] = []  # appended to as each closes (owner.Owner.gone): one call fewer a connection

    def report(self) -> None:
        ids, self.ids = self.ids, []
        for at in range(0, len(ids), handoff.MAX_DONE):
            report_encoded(self.chan, handoff.encode_done(ids[at:at + handoff.MAX_DONE]))


def report(chan: socket.socket, msg: handoff.Message) -> None:
    """Send ``msg`` to the supervisor, waiting a little for room; a gone supervisor is not an error."""
    report_encoded(chan, handoff.encode(msg), msg.fd)


def report_encoded(chan: socket.socket, payload: bytes, fd: int = -1) -> None:
    """report() for a message already encoded."""
    try:
        handoff.send_encoded(chan, payload, fd, wait=SEND_WAIT)
    except OSError as exc:
        log.debug("worker %d: cannot report to the supervisor: %s", os.getpid(), exc)


# ---------------------------------------------------------------------- per connection


def preface_header(preface: bytes, mode: str, eof: bool) -> tuple[proxyprotocol.Header, int] | None:
    """The PROXY header and its length once it is whole, None while more may come (see
    proxyprotocol.parse); ProxyProtocolError also for a client that closed (``eof``) in its middle."""
    parsed = proxyprotocol.parse(preface, mode)
    if parsed is None and eof and preface:
        raise ProxyProtocolError("closed in the middle of its PROXY header")
    return parsed


def preface_refused(msg: handoff.Message, site: Site, reason: str) -> None:
    """Say why a connection's PROXY header was refused; the caller closes the connection."""
    peer = msg.peer[0] if msg.peer else "a Unix socket"
    flood.WORKER.log(flood.PROXY_REFUSED, log, logging.WARNING, "conn %d from %s on %s: %s; closing it", msg.conn_id,
                     peer, site.listener, reason)


def call_line(request: Request) -> bytes:
    """The scoreboard's line for a call: the path as the app sees it (PATH_INFO, decoded); the
    supervisor escapes it when it logs it."""
    return request.method + b" " + decoded_path(request.path)


def listener_extra(extra: dict[str, object], site: Site) -> dict[str, object]:
    """The worker's extras plus the listener's name: the same for every connection on it, made once."""
    out = dict(extra)
    out["sockact.listener"] = site.listener
    return out


def conn_extra(msg: handoff.Message) -> dict[str, object]:
    """A connection's own extras, beside its listener's: its id and hand-off count."""
    return {"sockact.conn_id": msg.conn_id, "sockact.hops": msg.hops}
