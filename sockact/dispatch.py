"""Dispatch policy: which worker gets a connection. Pure: no sockets, no processes, no clock.

Rules:
- A connection goes only to an idle worker; among idle workers, the one idle longest
  (FIFO), which spreads load like round-robin and keeps every worker warm.
- When every worker is busy, connections wait in a bounded FIFO queue. When the queue is
  full, the supervisor stops accepting and the kernel's backlog holds new clients.
- A worker that is retiring (old generation, recycled, scaled down) gets no new work.

The supervisor feeds events (worker ready, worker idle, worker gone, connection ready)
and acts on the assignments returned. Tests drive this object directly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

C = TypeVar("C")  # a connection, opaque to the policy
W = TypeVar("W", bound=Hashable)  # a worker id


class Dispatcher(Generic[W, C]):
    def __init__(self, queue_size: int) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.queue_size = queue_size
        self._idle: deque[W] = deque()
        self._idle_set: set[W] = set()
        self._busy: set[W] = set()
        self._queue: deque[C] = deque()

    # -- what the supervisor asks

    @property
    def accepting(self) -> bool:
        """Whether new connections may be accepted (the queue has room)."""
        return len(self._queue) < self.queue_size

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def busy(self) -> int:
        return len(self._busy)

    def is_busy(self, worker: W) -> bool:
        return worker in self._busy

    # -- events

    def offer(self, conn: C) -> tuple[W, C] | None:
        """A connection needs a worker: the assignment, or None if it was queued.

        Queued connections are served first, so an offer never overtakes the queue.
        """
        if self._idle and not self._queue:
            return self._assign(self._idle.popleft(), conn)
        self._queue.append(conn)
        return None

    def worker_ready(self, worker: W) -> tuple[W, C] | None:
        """A worker became idle (booted, or finished a connection): maybe its next connection."""
        self._busy.discard(worker)
        if self._queue:
            return self._assign(worker, self._queue.popleft())
        if worker not in self._idle_set:
            self._idle.append(worker)
            self._idle_set.add(worker)
        return None

    def worker_gone(self, worker: W) -> None:
        """A worker died or is retiring: it gets no more work."""
        self._busy.discard(worker)
        if worker in self._idle_set:
            self._idle_set.discard(worker)
            self._idle.remove(worker)

    def take_queued(self) -> list[C]:
        """Empty the queue (quick shutdown)."""
        conns = list(self._queue)
        self._queue.clear()
        return conns

    def _assign(self, worker: W, conn: C) -> tuple[W, C]:
        self._idle_set.discard(worker)
        self._busy.add(worker)
        return worker, conn
