"""Whether the workers are moving: their app threads' scoreboard lines, read on the supervisor's timers.

From the lines (shared memory, no system call) this tells which workers stalled or move again
(every app thread in one call longer than handback_after), which calls are past timeout, and the
counts of the STATUS= line; and it gates the watchdog: WATCHDOG=1 only while nothing is overdue.
What to do about a stalled or stuck worker is pool.WorkerPool's decision; this module reads and
reports.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from sockact.ipc.scoreboard import Scoreboard, SlotView
from sockact.logs.journal import lifecycle
from sockact.supervisor.workers import WorkerProcess
from sockact.systemd.notify import Notifier

log = logging.getLogger("sockact.supervisor")

STATUS_INTERVAL = 1.0  # systemd asks for STATUS= no more than about once a second
STUCK = "a worker is stuck past its timeout"  # why the watchdog pings stop, unless said otherwise


class Health:
    def __init__(self, scoreboard: Scoreboard, workers: dict[int, WorkerProcess], notifier: Notifier) -> None:
        self.scoreboard = scoreboard
        self.workers = workers  # the supervisor's own table, shared
        self.notifier = notifier
        self._next_ping = 0.0
        self._next_status = 0.0
        self._unhealthy_logged = False
        self.pings = 0  # WATCHDOG=1 sent

    def view(self, w: WorkerProcess) -> SlotView:
        return self.scoreboard.read(w.slot, w.threads)

    def overdue(self, now: float, timeout: float) -> Iterator[tuple[WorkerProcess, SlotView]]:
        """Workers with a call running longer than ``timeout`` (0: never), or whose loop has not beaten
        for that long (frozen); their request counts kept."""
        for w in list(self.workers.values()):
            view = self.view(w)
            w.requests = view.requests
            if timeout and (view.stuck(now, timeout) or view.frozen(now, timeout)):
                yield w, view

    def busy(self) -> int:
        """App calls running, in all workers."""
        return sum(self.view(w).busy for w in self.workers.values())

    def threads(self) -> tuple[int, int]:
        """WSGI app threads alive, in all workers: (in a call, waiting for one)."""
        views = [self.view(w) for w in self.workers.values()]
        busy = sum(v.threads_busy for v in views)
        return busy, sum(v.threads for v in views) - busy

    def requests(self) -> int:
        """Requests served by the workers alive, as last read."""
        return sum(w.requests for w in self.workers.values())

    def report(self, now: float, healthy: bool, status: str, why: str = STUCK) -> None:
        """WATCHDOG=1 at its interval while ``healthy``, else a warning that says ``why``, once; STATUS= at
        most once a second."""
        if self.notifier.watchdog_interval and now >= self._next_ping:
            if healthy:
                self.notifier.watchdog()
                self.pings += 1
                self._next_ping = now + self.notifier.watchdog_interval
                self._unhealthy_logged = False
            elif not self._unhealthy_logged:
                self._unhealthy_logged = True
                lifecycle(log, "watchdog_unhealthy", "unhealthy: %s; withholding watchdog pings", why,
                          level=logging.WARNING)
        if now >= self._next_status:
            self._next_status = now + STATUS_INTERVAL
            self.notifier.status(status)
