"""Dispatch policy: which worker gets a connection. Pure: no sockets, no processes, no clock.

Rules:
- A worker holds many connections at once, up to its capacity. A connection goes to the
  available worker holding the fewest; among equals, the one given work longest ago, which
  spreads load like round-robin and keeps every worker warm.
- A worker is available while it is ready and moving (not stalled) and below capacity.
  A booting, stalled, retiring or aborted worker gets no new work.
- When no worker is available, connections wait in a bounded queue, served first when a
  worker has room again, oldest first. A connection's age is when its request first needed a
  worker, so one handed back with its request read, or left by a worker that died, keeps its
  place in line instead of going to the back each time. When the queue is full, the
  supervisor stops accepting and the kernel's backlog holds new clients.
- A queued connection may leave without a worker (``withdraw``): the supervisor's timer ends one
  whose request head did not come within header_timeout (heads.py).

The supervisor feeds events (a worker added or removed, stalled or moving again, a
connection handed back) and acts on the assignments returned. Tests drive this directly.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from typing import Generic, TypeVar

C = TypeVar("C")  # a connection, opaque to the policy
W = TypeVar("W", bound=Hashable)  # a worker id


class Dispatcher(Generic[W, C]):
    def __init__(self, queue_size: int, capacity: int) -> None:
        if queue_size < 1 or capacity < 1:
            raise ValueError("queue_size and capacity must be >= 1")
        self.queue_size = queue_size
        self.capacity = capacity
        self._load: dict[W, int] = {}  # connections each worker holds, for every known worker
        # Connections held by workers, all together: their sum, kept as it changes. A plain attribute, not a
        # property: the supervisor reads it at every turn of its loop, and a property is a Python call.
        self.held = 0
        self._available: set[W] = set()  # ready and moving
        self._last: dict[W, int] = {}  # when each was last given work (a counter, not a clock)
        self._clock = 0
        self._queue: list[tuple[float, int, C]] = []  # a heap: (age, arrival, connection)
        self._arrivals = 0  # ties of age are served in order of arrival

    # -- what the supervisor asks

    @property
    def accepting(self) -> bool:
        """Whether new connections may be accepted (the queue has room)."""
        return len(self._queue) < self.queue_size

    @property
    def queued(self) -> int:
        return len(self._queue)

    def load(self, worker: W) -> int:
        return self._load.get(worker, 0)

    def is_available(self, worker: W) -> bool:
        return worker in self._available

    # -- events

    def add(self, worker: W) -> list[tuple[W, C]]:
        """A worker is ready for work: maybe queued connections for it."""
        self._load.setdefault(worker, 0)
        if worker not in self._last:
            self._clock += 1
            self._last[worker] = self._clock  # a new worker queues behind the others for ties
        self._available.add(worker)
        return self._drain()

    def pause(self, worker: W) -> None:
        """A worker stalled: no new work until ``resume``; it keeps what it holds."""
        self._available.discard(worker)

    def resume(self, worker: W) -> list[tuple[W, C]]:
        if worker not in self._load:
            return []
        self._available.add(worker)
        return self._drain()

    def remove(self, worker: W) -> None:
        """A worker is retiring, aborted or gone: no more work. Its load is forgotten when gone."""
        self._available.discard(worker)

    def forget(self, worker: W) -> int:
        """A worker exited: drop it; returns how many connections it still held (now lost)."""
        self._available.discard(worker)
        self._last.pop(worker, None)
        lost = self._load.pop(worker, 0)
        self.held -= lost
        return lost

    def offer(self, conn: C, age: float = math.inf) -> tuple[W, C] | None:
        """A connection needs a worker: the assignment, or None if it was queued.

        Queued connections are served first, so an offer never overtakes the queue; among the
        queued, the smallest ``age`` (when its request first needed a worker, on any one clock)
        goes first. The default is a newcomer's: behind everything already queued.
        """
        if not self._queue:
            worker = self._take()
            if worker is not None:
                return worker, conn
        self._arrivals += 1
        heapq.heappush(self._queue, (age, self._arrivals, conn))
        return None

    def returned(self, worker: W, count: int = 1) -> list[tuple[W, C]]:
        """``worker`` handed ``count`` connections back or closed them: it has room for queued ones."""
        load = self._load.get(worker, 0)
        if load > 0:
            count = min(count, load)
            self._load[worker] = load - count
            self.held -= count
        return self._drain()

    def waiting(self) -> list[C]:
        """The queued connections, in no particular order (the supervisor's timer looks them over)."""
        return [conn for _, _, conn in self._queue]

    def withdraw(self, conns: list[C]) -> None:
        """These queued connections leave the queue without a worker (their head deadline passed)."""
        gone = {id(conn) for conn in conns}
        self._queue = [entry for entry in self._queue if id(entry[2]) not in gone]
        heapq.heapify(self._queue)

    def take_queued(self) -> list[C]:
        """Empty the queue (stopping), oldest first."""
        conns = [conn for _, _, conn in sorted(self._queue)]
        self._queue.clear()
        return conns

    # -- internals

    def _take(self) -> W | None:
        """The available worker holding the fewest, given one connection more; None if none has room.
        Picking and counting in one call: this runs for every connection."""
        best: W | None = None
        best_key = (0, 0)
        for worker in self._available:
            load = self._load[worker]
            if load >= self.capacity:
                continue
            key = (load, self._last[worker])
            if best is None or key < best_key:
                best, best_key = worker, key
        if best is not None:
            self._clock += 1
            self._last[best] = self._clock
            self._load[best] += 1
            self.held += 1
        return best

    def _drain(self) -> list[tuple[W, C]]:
        out = []
        while self._queue:
            worker = self._take()
            if worker is None:
                break
            out.append((worker, heapq.heappop(self._queue)[2]))
        return out
