"""The workers' memory, seen from the supervisor: max_worker_memory on a timer, and systemd's
MemoryPressureWatch=. Either recycles a serving worker, its successor first (pool.WorkerPool.recycle).
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from sockact.policy.states import IN_SERVICE
from sockact.supervisor import memory
from sockact.supervisor.workers import WorkerProcess
from sockact.systemd import pressure
from sockact.worker.shell import COLLECT_SIGNAL

if TYPE_CHECKING:
    from sockact.supervisor.core import Supervisor

log = logging.getLogger("sockact.supervisor")

MEMORY_INTERVAL = 1.0  # seconds between two reads of the workers' memory (max_worker_memory)


class MemoryWatch:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self._next_check = 0.0
        self._last = 0  # the worker whose USS was read last: the next look reads the next one
        self.pressure: pressure.PressureWatch | None = None  # systemd's MemoryPressureWatch=

    def tick(self, now: float) -> None:
        if self.sup.config.max_worker_memory and now >= self._next_check:
            self._next_check = now + MEMORY_INTERVAL
            self._check(now)

    def _check(self, now: float) -> None:
        """Recycle, successor first, a serving worker whose own memory passed max_worker_memory.

        RSS first, for every worker (constant time); USS, whose read costs time in proportion to
        the worker's size, for one worker past the limit by RSS per look, in turn.
        """
        sup = self.sup
        limit = sup.config.max_worker_memory
        over = sorted(w.pid for w in sup.workers.values()
                      if not w.recycled and sup.pool.state(w.pid) in IN_SERVICE
                      and (memory.rss(w.pid) or 0) > limit)
        if over:
            pid = next((p for p in over if p > self._last), over[0])
            self._last = pid
            w = sup.workers[pid]
            used = memory.uss(pid)
            if used is not None and used > limit:
                log.warning("worker %d holds %s of its own memory (USS), past max_worker_memory %s: recycling it "
                            "once its successor is ready", w.pid, memory.megabytes(used), memory.megabytes(limit),
                            extra={"SOCKACT_RECYCLED_PID": w.pid, "SOCKACT_WORKER_USS": used})
                w.recycled = "memory"
                sup.carry_out(sup.pool.recycle(w.pid, now, successor_first=True))

    def watch_pressure(self) -> None:
        """MemoryPressureWatch= (systemd 254+): wake the loop when systemd reports memory pressure."""
        try:
            watch = pressure.PressureWatch.from_environ(os.environ)
        except (OSError, ValueError) as exc:
            log.warning("memory pressure not watched (%s): %s", pressure.describe(os.environ), exc)
            return
        if watch is not None:
            self.pressure = watch
            self.sup.register(watch.fileno(), self._on_pressure, watch)
            log.info("watching memory pressure: %s", pressure.describe(os.environ))

    def _on_pressure(self, watch: pressure.PressureWatch) -> None:
        """Memory pressure on the service: every worker collects its garbage, and the largest serving
        worker is recycled, its successor first; one at a time, so pressure that lasts does not churn."""
        sup = self.sup
        if not watch.fired() or sup.stopping:
            return
        for w in sup.workers.values():
            w.signal(COLLECT_SIGNAL)
        if any(w.recycled for w in sup.workers.values()):
            return
        sizes = {w.pid: self._memory_of(w) for w in sup.workers.values() if sup.pool.state(w.pid) in IN_SERVICE}
        if not sizes:
            return
        largest = sup.workers[max(sizes, key=lambda pid: sizes[pid])]
        log.warning("memory pressure: the workers collect their garbage; recycling worker %d, the largest (%s), "
                    "once its successor is ready", largest.pid, memory.megabytes(sizes[largest.pid]),
                    extra={"SOCKACT_RECYCLED_PID": largest.pid})
        largest.recycled = "pressure"
        sup.carry_out(sup.pool.recycle(largest.pid, time.monotonic(), successor_first=True))

    def _memory_of(self, w: WorkerProcess) -> int:
        """What ``w`` holds, cheaply: its cgroup's memory.current, else its RSS (the shared pages count
        alike in every worker, so the largest is still the largest)."""
        groups = self.sup.cgroups
        used = groups.usage(w.slot) if groups is not None else None
        return used.memory if used is not None else memory.rss(w.pid) or 0

    def close(self) -> None:
        if self.pressure is not None:
            self.pressure.close()  # a worker must not hold the PSI trigger
