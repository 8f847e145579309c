"""The worker's connection owner: each connection's state, its deadline, and what is due at it.

Both runners keep their connections in one Owner, each as an Owned (the WSGI runner's Held,
the ASGI runner's Conn) whose state moves along states.CONN_TRANSITIONS only. Nothing here
reads, writes or closes a socket; the runners carry the decisions out. The owner decides:

- whether a connection that arrives is taken, or goes straight back (a stalled, retiring or
  recycling worker), and the state it starts in;
- each state's deadline and what is due when it passes (``due``):
    PREFACE  header_timeout from adoption: the PROXY header is refused
    FRESH    header_timeout from its accept: a client that sent nothing is closed, silently
    HEAD     header_timeout from adoption (or from the end of the last request): 408
    BODY     io_timeout from the head, in total (not reset by each byte; the runner moves it on a
             second per KiB received, limits.BODY_MIN_RATE): 408
    UNREAD   send_timeout from when it began to wait for its client to take its answers: closed, logged
    IDLE     park_after (or at once when stopping): parked in the supervisor
    CLOSING  looked at on every pass: its deadline is the runner's (the output still going out,
             then the linger), and so is the moment its close is over
  QUEUED and CALL have none here: the supervisor's scoreboard watches calls;
- which connections go back when the worker stalls (any not in a call, not closing, whose
  output is flushed and whose unserved bytes fit in a message), and which when it retires;
- when max_requests is reached (RECYCLE), once.

Carrier is the part of a runner that carries the owner's decisions out, the same for both: a runner
subclasses it and says how its connections are parked, closed, told 408, and when a close is over.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from sockact.http import Site
from sockact.ipc import handoff
from sockact.ipc.scoreboard import IN_HEAD, READ
from sockact.logs import flood
from sockact.worker.channel import Closed, preface_refused
from sockact.worker.connstates import (
    BODY,
    CLOSING,
    FRESH,
    HEAD,
    IDLE,
    PREFACE,
    SENDING,
    UNREAD,
    ConnState,
    InvalidTransition,
)

TIMER_INTERVAL = 0.01  # seconds between a runner's looks at every held connection's deadlines

_C = ConnState
# A stall sends these back to the supervisor: no app call owns them and none is closing them.
HAND_BACK = frozenset({_C.PREFACE, _C.FRESH, _C.HEAD, _C.IDLE, _C.BODY, _C.QUEUED})
# A retiring worker parks these at once; the others finish (a call, a head, a body, a close) first.
PARK_ON_RETIRE = frozenset({_C.FRESH, _C.IDLE})


_UNMARKED = memoryview(b"")  # a connection's mark before ``marked``: none (the unit tests' connections)


class Owned:
    """What the owner keeps of a connection: how it came, its listener, its state and since when."""

    __slots__ = ("mark", "mark_at", "msg", "served", "since", "site", "state")

    def __init__(self, msg: handoff.Message, site: Site, state: ConnState, now: float) -> None:
        self.msg = msg  # how it came: id, listener, peer, hops, the PROXY client once read
        self.site = site
        self.state = state
        self.since = now  # when its current deadline's clock started
        self.served = 0  # requests served on it in this worker
        # Where its idle mark is on the worker's scoreboard (SlotWriter.mark_of, given by ``marked``): each rest
        # writes it, and each read wipes it (``mark[mark_at] = 0``, inline in the runners: one a request).
        self.mark, self.mark_at = _UNMARKED, 0

    def marked(self, place: tuple[memoryview, int]) -> None:
        """Its idle mark's place (SlotWriter.mark_of), wiped: a mark from an earlier stay in this worker says
        nothing of this one."""
        self.mark, self.mark_at = place
        self.mark[self.mark_at] = 0

    def rest(self, written: int, in_head: bool = False, read: bool = False) -> None:
        """At a request boundary, every byte read of it answered, ``written`` bytes written on it: marked so, and
        should the worker die now, its client is parked, not closed. ``in_head``: part of a head read since, no
        more (its client gets a 408); ``read``: a head read whole that no call has begun (a 502). The only
        writer of a mark: Scoreboard.resting reads it."""
        mark, at = self.mark, self.mark_at
        mark[at + 1] = written | (IN_HEAD if in_head else 0) | (READ if read else 0)
        mark[at] = self.msg.conn_id  # last: the mark is whole from here

    def to(self, event: str, now: float | None = None) -> ConnState:
        """Move along the table (InvalidTransition if ``event`` is not accepted here); a state with a
        deadline starts its clock, except a head that grows (states.KEEP_CLOCK)."""
        try:
            new, clock = self.state.moves[event]
        except KeyError:
            raise InvalidTransition(f"{event!r} in state {self.state.value}") from None
        self.state = new
        if clock:
            self.since = time.monotonic() if now is None else now
        return new

    def unparsed(self) -> bytes:
        """The bytes read and not served, which go with the socket when it is handed back."""
        raise NotImplementedError

    @property
    def head_started(self) -> float:
        """When the deadline of its head (or PROXY header) still to come began, 0.0 when none runs: it
        travels with the connection when it is handed back or parked, so a stall does not restart it.
        A connection that has sent nothing (FRESH) has one too, from its accept: handed back, it is not
        an idle keep-alive connection (IDLE, none) and is not kept for keepalive."""
        state = self.state
        return self.since if state is HEAD or state is PREFACE or state is FRESH else 0.0

    @property
    def flushed(self) -> bool:
        """Nothing of its output waits to go out (the ASGI runner buffers; the WSGI runner does not)."""
        return True

    @property
    def movable(self) -> bool:
        """All it has read can go with it in a message: not while a request body it read waits in a file (the
        WSGI runner's body_spool)."""
        return True


class Due(enum.Enum):
    """What is due for a connection whose deadline has passed."""

    REFUSE_PREFACE = "refuse_preface"  # no whole PROXY header within header_timeout: logged, closed
    DROP = "drop"  # no byte within header_timeout: closed silently
    HEAD_TIMEOUT = "head_timeout"  # a head not whole within header_timeout: 408, closed
    BODY_TIMEOUT = "body_timeout"  # a buffered body not whole within io_timeout: 408, closed
    SEND_TIMEOUT = "send_timeout"  # its client took none of its answers within send_timeout: logged, closed
    PARK = "park"  # idle at a request boundary: back to the supervisor (closed when stopping)
    CLOSING = "closing"  # closing: the runner looks whether its close is over, or overdue


# As module names, for the loop over every held connection: an Enum member read through its class
# costs 0.3 µs on Python 3.11.
_PARK, _CLOSING, _REFUSE_PREFACE = Due.PARK, Due.CLOSING, Due.REFUSE_PREFACE


def due(conn: Owned, now: float, park_after: float, stopping: bool) -> Due | None:
    """What is due for ``conn`` at ``now``, None while its deadline (if any) is ahead."""
    state, waited = conn.state, now - conn.since
    if state is IDLE:
        return Due.PARK if waited > park_after or (stopping and conn.served > 0) else None
    if state is HEAD:
        return Due.HEAD_TIMEOUT if waited > conn.site.header_timeout else None
    if state is FRESH:
        return Due.DROP if waited > conn.site.header_timeout else None
    if state is BODY:
        return Due.BODY_TIMEOUT if waited > conn.site.io_timeout else None
    if state is PREFACE:
        return Due.REFUSE_PREFACE if waited > conn.site.header_timeout else None
    if state is CLOSING:
        return Due.CLOSING
    if state is UNREAD or state is SENDING:
        return Due.SEND_TIMEOUT if waited > (conn.site.send_timeout or conn.site.io_timeout) else None
    return None


T = TypeVar("T", bound=Owned)


class Owner(Generic[T]):
    """Every connection a worker holds, by id, and the worker's own state towards them."""

    def __init__(self, closed: Closed, park_after: Sequence[float], max_requests: int) -> None:
        self.held: dict[int, T] = {}
        self.closed = closed  # the ids closed in this turn of the loop, for one DONE
        self.park_after = list(park_after)  # per listener
        self.max_requests = max_requests  # 0: never recycled
        self.requests = 0
        self.recycling = False  # max_requests reached: take nothing new, wait to be retired
        self.retiring = False  # EOF on the channel: hand everything back, finish the calls, exit

    # -- arriving

    def takes(self, stalled: bool) -> bool:
        """Whether a connection that arrives now is served here, or goes straight back."""
        return not (stalled or self.retiring or self.recycling)

    @staticmethod
    def arrival(msg: handoff.Message, site: Site, now: float) -> tuple[ConnState, float]:
        """The state a connection starts in, and since when its deadline runs: a PROXY header first
        (unless one was read before it was parked), else HTTP: a head begun if bytes came with it, else
        none yet. Its deadline runs from when the supervisor says it began (its accept, or a head handed
        back by a stalled worker), so waiting for a worker does not restart it."""
        since = msg.head_started or now
        if site.proxy_protocol != "off" and msg.proxy is None:
            return _C.PREFACE, since
        return (_C.HEAD if msg.data else _C.FRESH), since

    def add(self, conn: T) -> T:
        self.held[conn.msg.conn_id] = conn
        return conn

    # -- deadlines

    def expired(self, now: float, stopping: bool) -> Iterator[tuple[T, Due]]:
        """Each connection whose deadline has passed, with what is due (the runner may drop it meanwhile)."""
        park_after = self.park_after
        for conn in list(self.held.values()):
            what = due(conn, now, park_after[conn.msg.listener], stopping)
            if what is not None:
                yield conn, what

    # -- leaving

    def stall_hand_backs(self) -> Iterator[tuple[T, bytes, float]]:
        """The worker is stalled: each connection to send back now, with its unserved bytes and when its
        head began (Owned.head_started, read before it leaves). One that has read more than a hand-off
        message carries, or a body into a file, stays, for a free thread."""
        for conn in list(self.held.values()):
            if conn.state in HAND_BACK and conn.flushed and conn.movable:
                data = conn.unparsed()
                if handoff.fits(data):
                    yield conn, data, conn.head_started

    def retire(self) -> list[T]:
        """EOF on the channel: the connections to park at once."""
        self.retiring = True
        return [conn for conn in self.held.values() if conn.state in PARK_ON_RETIRE]

    def gone(self, conn: T, event: str) -> None:
        """``conn`` left this worker: ``park`` or ``hand_back`` (to the supervisor) or ``close``."""
        conn.to(event)
        del self.held[conn.msg.conn_id]
        if event == "close":
            self.closed.ids.append(conn.msg.conn_id)

    @property
    def done(self) -> bool:
        """Retired, and nothing is left: the runner may exit."""
        return self.retiring and not self.held

    # -- counting

    def served(self, conn: T, persists: bool) -> bool:
        """A request was served on ``conn``, in CALL; ``persists``: the connection goes on, back to IDLE, whose
        clock (park_after) starts now. That move, CALL --served--> IDLE, is a keep-alive request's last, and
        both runners make it here, the row read without Owned.to's call. True once, when max_requests is
        reached (send RECYCLE)."""
        if persists:
            conn.state = conn.state.moves["served"][0]
            conn.since = time.monotonic()
        conn.served += 1
        self.requests += 1
        if self.max_requests and self.requests >= self.max_requests and not self.recycling:
            self.recycling = True
            return True
        return False


class Carrier(Generic[T]):
    """What both runners do with the owner's decisions. A runner subclasses it, sets ``owner`` and
    ``stopping``, and says how one of its connections is parked (``_release``), closed (``_close``),
    timed out (``_time_out``: a 408 for a head or body begun, nothing for a client that sent nothing)
    and whether its close is over (``_closing``)."""

    owner: Owner[T]
    stopping: bool
    on_retire: Callable[[], None] | None = None  # called at the channel's EOF (guard.end_if_orphaned)

    def _carry_out_deadlines(self, now: float) -> None:
        """What is due for each held connection at ``now``, done; and the summaries of client-caused lines
        left out in an interval that has ended."""
        flood.WORKER.due(now)
        for conn, what in self.owner.expired(now, self.stopping):
            if what is _CLOSING:
                self._closing(conn, now)
            elif what is _PARK:
                self._release(conn)
            elif what is _REFUSE_PREFACE:
                self._refuse_preface(conn, "no whole PROXY header within header_timeout")
            else:
                self._time_out(conn, what)

    def _refuse_preface(self, conn: T, reason: str) -> None:
        preface_refused(conn.msg, conn.site, reason)
        self._close(conn)

    def _park_on_retire(self) -> None:
        """EOF on the channel: the idle connections go back now; the others finish first."""
        if self.on_retire is not None:
            self.on_retire()
        for conn in self.owner.retire():
            self._release(conn)

    # -- the runner's own

    def _release(self, conn: T) -> None:
        """Idle at a request boundary: park it in the supervisor (or close it when stopping)."""
        raise NotImplementedError

    def _close(self, conn: T) -> None:
        raise NotImplementedError

    def _time_out(self, conn: T, what: Due) -> None:
        raise NotImplementedError

    def _closing(self, conn: T, now: float) -> None:
        raise NotImplementedError
