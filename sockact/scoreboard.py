"""Shared-memory scoreboard: each worker's progress, readable by the supervisor without a syscall.

One anonymous MAP_SHARED mapping is made before the first fork; each worker owns one slot.
A worker stamps its slot when a request starts and when it ends, so the supervisor can
tell a busy worker that is making progress from one stuck past --timeout, and log the
request it is stuck on. Writes are plain memory stores: no message, no wakeup.
Torn reads are possible and harmless: a watchdog needs a hint, not a transaction.

The first bytes of the mapping are the supervisor's: how many connections wait in its queue,
so a worker can decide, without asking, whether it may linger on its keep-alive connection.
"""

from __future__ import annotations

import mmap
import struct
import time

# started (monotonic seconds, 0.0 when idle), requests served, request line length
_SLOT = struct.Struct("=dQH")
_STAMP = struct.Struct("=dQ")  # the first two fields only: keeps the request line
SLOT_SIZE = 256
_LINE_MAX = SLOT_SIZE - _SLOT.size
_WAITING = struct.Struct("=I")  # connections queued in the supervisor
_HEADER = 64  # the supervisor's part, one cache line, before the slots


class Scoreboard:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._map = mmap.mmap(-1, _HEADER + slots * SLOT_SIZE, flags=mmap.MAP_SHARED)
        self._waiting = 0
        self._free = list(range(slots - 1, -1, -1))

    # -- supervisor side

    def allocate(self) -> int:
        """A free slot for a new worker; raises IndexError when all are taken."""
        slot = self._free.pop()
        base = _HEADER + slot * SLOT_SIZE
        self._map[base:base + SLOT_SIZE] = bytes(SLOT_SIZE)
        return slot

    def release(self, slot: int) -> None:
        self._free.append(slot)

    def read(self, slot: int) -> tuple[float, int, str]:
        """(started, requests, request line) of a slot; started is 0.0 when the worker is idle."""
        started, requests, length = _SLOT.unpack_from(self._map, _HEADER + slot * SLOT_SIZE)
        base = _HEADER + slot * SLOT_SIZE + _SLOT.size
        line = self._map[base:base + min(length, _LINE_MAX)].decode("latin-1")
        return started, requests, line

    def set_waiting(self, count: int) -> None:
        """Publish the length of the supervisor's queue (a store only when it changed)."""
        if count != self._waiting:
            self._waiting = count
            _WAITING.pack_into(self._map, 0, min(count, 0xFFFFFFFF))

    # -- worker side

    def writer(self, slot: int) -> SlotWriter:
        return SlotWriter(self._map, slot)

    def close(self) -> None:
        self._map.close()


class SlotWriter:
    """The worker's handle on its own slot.

    A worker is busy from the hand-off of a connection until it parks or closes it. While
    busy, every sign of progress (a request starting or ending) restamps the slot, so the
    supervisor measures time since the last progress, not the age of a keep-alive connection.
    """

    __slots__ = ("_base", "_map", "requests")

    def __init__(self, mapping: mmap.mmap, slot: int) -> None:
        self._map = mapping
        self._base = _HEADER + slot * SLOT_SIZE
        self.requests = 0

    def progress(self, line: str | None = None) -> None:
        """Busy and making progress; ``line`` names the request being served, when known."""
        if line is None:
            _STAMP.pack_into(self._map, self._base, time.monotonic(), self.requests)
            return
        raw = line.encode("latin-1", "replace")[:_LINE_MAX]
        _SLOT.pack_into(self._map, self._base, time.monotonic(), self.requests, len(raw))
        start = self._base + _SLOT.size
        self._map[start:start + len(raw)] = raw

    def others_waiting(self) -> bool:
        """Whether connections wait in the supervisor's queue for a free worker."""
        return _WAITING.unpack_from(self._map, 0)[0] > 0

    def idle(self) -> None:
        _SLOT.pack_into(self._map, self._base, 0.0, self.requests, 0)
