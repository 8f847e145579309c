"""When a WebSocket session pings its client, and when it takes the client for gone: sans-I/O, no clock.

A client that vanishes without a FIN or a reset (a phone off the network, a NAT that forgot the
flow, a host powered off) sends nothing more, and nothing tells the worker: its session, its app
task and its fd would stay for good. So, as websockets' keepalive and uvicorn do, every
``ws_ping_interval`` the session sends a ping, and a client that has not answered it within
``ws_ping_timeout`` is taken for gone.

One deadline per session, the next thing due (a ping, or the answer to one), kept in one heap per
worker (``Schedule``) that the worker's beat looks at: no timer and no task per session or per
message, and nothing per open session on a beat when none is due. (Kept on each connection for the
owner's look at every deadline on every beat, it cost a third more on that look: 275 to 370 us a
beat for 1,000 open sessions, Python 3.11.) What counts as an answer: the pong to that ping, or
any byte from the client since it went. sockact parses a session's frames only while its app is in
``receive()`` (websocket.py), so the pong of an app that only sends waits unparsed; the bytes that
brought it arrived all the same, and say the client is there.
"""

from __future__ import annotations

import enum
import heapq
import weakref
from collections.abc import Iterator
from typing import Generic, TypeVar


class Keepalive(enum.Enum):
    """What is due for a session at its deadline (``Pinger.at``)."""

    PING = "ping"  # send a ping with ``Pinger.payload``
    GONE = "gone"  # no answer to the last ping within ws_ping_timeout: the client is gone


PING, GONE = Keepalive.PING, Keepalive.GONE


class Pinger:
    """One session's pings. ``due_at`` is its one deadline (0.0: none), for the caller's timer."""

    __slots__ = ("_sent", "_sent_at", "due_at", "heard", "interval", "payload", "timeout")

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval  # 0: no pings
        self.timeout = timeout  # 0: a ping is never waited for
        self.due_at = 0.0
        self.payload = b""  # the last ping's; b"" once it was answered (or none went)
        self.heard = False  # a byte came from the client since the last ping went (the session sets it)
        self._sent = 0  # pings sent: the next one's payload, so that an old pong is not taken for its answer
        self._sent_at = 0.0  # when the last one went: the next is due an interval after it

    def start(self, now: float) -> float:
        """The session opened (the app accepted it): the first ping is due an interval from now."""
        self.due_at = now + self.interval if self.interval > 0 else 0.0
        return self.due_at

    def at(self, now: float) -> Keepalive | None:
        """What is due at ``now``: PING (send one with ``payload``), GONE, or None (nothing yet, or the
        client answered: the next ping is due later). ``due_at`` moves on (0.0 after GONE)."""
        if not self.due_at or now < self.due_at:
            return None
        if self.payload:  # the answer's deadline
            if not self.heard:
                self.due_at = 0.0
                return GONE
            self.payload = b""  # its bytes came, its pong unparsed (the app is not receiving)
            self.due_at = self._sent_at + self.interval
            if now < self.due_at:
                return None
        self._sent += 1
        self._sent_at = now
        self.heard = False
        if self.timeout > 0:
            self.payload = self._sent.to_bytes(4, "big")
            self.due_at = now + self.timeout
        else:
            self.due_at = now + self.interval  # nothing awaited: the ping keeps the path open alone
        return PING

    def pong(self, payload: bytes) -> bool:
        """A pong came: True when it answers the ping awaited, whose next one is then due an interval after it
        went (``due_at`` moved)."""
        if not self.payload or payload != self.payload:
            return False  # unsolicited, or an old one
        self.payload = b""
        self.due_at = self._sent_at + self.interval
        return True


T = TypeVar("T")


class Schedule(Generic[T]):
    """The worker's sessions by their deadlines, in a heap: ``add`` each new deadline of a session, and ``due``
    gives those that have come, each once. A session whose deadline moved is added again: the entry it left
    comes out with the old time, which the caller compares with the session's own and drops. Sessions are
    held weakly, so one that ended leaves with its memory, not at its old deadline."""

    __slots__ = ("_added", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, weakref.ref[T]]] = []
        self._added = 0  # a tie-break, so that entries never compare their sessions

    def add(self, at: float, session: T) -> None:
        self._added += 1
        heapq.heappush(self._heap, (at, self._added, weakref.ref(session)))

    def due(self, now: float) -> Iterator[tuple[float, T]]:
        """Each (deadline, session) whose deadline has come by ``now``, taken out; a session gone is skipped."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, ref = heapq.heappop(heap)
            session = ref()
            if session is not None:
                yield at, session

    def __len__(self) -> int:
        return len(self._heap)
