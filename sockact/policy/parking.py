"""Parked connections: keep-alive clients idle between requests, held by the supervisor.

Pure bookkeeping, no I/O: which connections are parked, and which have been idle past
their listener's keep-alive. Each listener has its own keep-alive, so each has its own
table; a table is ordered by parking time, so expiry only ever looks at its oldest end.
The supervisor registers and closes the fds; this object only decides.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sockact.http.proxyprotocol import Header


@dataclass(eq=False, slots=True)
class Conn:
    """A client connection while the supervisor holds it (accepted, queued or parked)."""

    id: int
    fd: int  # a raw fd, not a socket object: wrapping one costs a getsockname() per connection
    listener: int
    family: int
    peer: tuple[str, int] | None
    hops: int = 0
    data: bytes = b""
    idle_since: float = 0.0
    ready_at: float = 0.0  # when it last needed a worker: the start of its hand-off latency
    # When its current request first needed a worker (0.0: not yet): its place in the dispatcher's
    # queue, kept when a worker hands the request back unserved or dies before beginning it.
    since: float = 0.0
    proxy: Header | None = None  # the PROXY protocol header a worker read, travelling with the connection
    head_started: float = 0.0  # when the head in ``data`` began to arrive (handoff.Message.head_started)
    # Bytes written on the connection before its current worker had it, as the kernel counts them: 0 for
    # one just accepted, -1 until looked up at its next hand-over for one back from a worker (a PARK makes
    # a new Conn; a dead worker's connection sent again is set back to -1).
    written: int = -1
    # Which of the connections sent to its current worker it was (WorkerProcess.sent, a CONNS counting each):
    # whether that worker had received it when it died (WorkerProcess.take_holding).
    sent_as: int = 0


class ParkingLot:
    def __init__(self, keepalive: Sequence[float]) -> None:
        self.keepalive = list(keepalive)  # seconds, by listener index
        self._tables: list[OrderedDict[int, Conn]] = [OrderedDict() for _ in keepalive]
        # How many are parked, kept as they come and go: the supervisor asks after every DONE.
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def park(self, conn: Conn, now: float) -> None:
        conn.idle_since = now
        table = self._tables[conn.listener]
        if conn.id not in table:
            self.count += 1
        table[conn.id] = conn

    def unpark(self, conn: Conn) -> bool:
        """Remove ``conn``; False if it is no longer parked (closed or served since its readiness was told)."""
        table = self._tables[conn.listener]
        if table.get(conn.id) is not conn:
            return False
        del table[conn.id]
        self.count -= 1
        return True

    def expired(self, now: float) -> Iterator[Conn]:
        """Remove and yield every connection idle longer than its listener's keep-alive."""
        for index, table in enumerate(self._tables):
            limit = now - self.keepalive[index]
            while table:
                conn = next(iter(table.values()))
                if conn.idle_since > limit:
                    break
                del table[conn.id]
                self.count -= 1
                yield conn

    def oldest(self) -> Conn | None:
        """Remove and return the connection idle longest, of any listener; None if none is parked."""
        heads = [next(iter(table.values())) for table in self._tables if table]
        if not heads:
            return None
        conn = min(heads, key=lambda c: c.idle_since)
        self.unpark(conn)
        return conn

    def take_all(self) -> list[Conn]:
        """Remove and return every parked connection (stopping, or a new worker's fork)."""
        conns = [conn for table in self._tables for conn in table.values()]
        for table in self._tables:
            table.clear()
        self.count = 0
        return conns

    def __iter__(self) -> Iterator[Conn]:
        return (conn for table in self._tables for conn in table.values())
