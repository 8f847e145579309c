"""How the supervisor stops: drain_delay (LEAVING), the graceful drain (DRAINING), the quick stop
(STOPPING, or HALTED when the app cannot load), and the deadline after which the workers left
are killed. The phases are the pool's (states.PHASE_TRANSITIONS); this module carries them out.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import TYPE_CHECKING

from sockact.logs.journal import lifecycle
from sockact.policy.states import LIVE, Phase
from sockact.supervisor.turnaway import app_failed, turn_away
from sockact.worker.shell import DRAIN_SIGNAL

if TYPE_CHECKING:
    from sockact.supervisor.core import Supervisor

log = logging.getLogger("sockact.supervisor")

QUICK_STOP_GRACE = 1.0  # seconds the workers get at a quick stop before they are killed


EXTEND_STEP = 5.0  # seconds of EXTEND_TIMEOUT_USEC asked at a time during a stop
EXTEND_AHEAD = 2.0  # asked again this long before the last runs out (ticks are 0.5 s apart)


class Stop:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self._leave_at = 0.0  # LEAVING: when drain_delay is over and the drain begins
        self._deadline = 0.0  # DRAINING or STOPPING: when the workers left are killed
        self._extended_until = 0.0  # when the time systemd was last given for the stop runs out

    def announce(self, delay: float) -> None:
        """drain_delay: load balancers see 503 on the health path and take this host out, then the stop."""
        sup = self.sup
        sup.carry_out(sup.pool.announce())
        self._leave_at = time.monotonic() + delay
        sup.notifier.stopping()
        sup.notifier.extend_timeout(delay + sup.config.graceful_timeout + 5.0)
        lifecycle(log, "stop", "stopping in %.1fs: serving meanwhile, the health path answers 503", delay)
        for w in sup.workers.values():
            w.signal(DRAIN_SIGNAL)  # the worker's health answer turns to 503

    def left(self, now: float) -> bool:
        """Whether drain_delay is over."""
        return self.sup.leaving and now >= self._leave_at

    def drain(self) -> None:
        """Graceful stop: stop accepting, finish in-flight and queued requests, then exit."""
        sup = self.sup
        sup.carry_out(sup.pool.term())
        self._deadline = time.monotonic() + sup.config.graceful_timeout
        sup.notifier.stopping()
        # First: what waits in the backlog of a listener bound here joins the connections the stop serves (those
        # held already are counted before: one taken may go to a worker at once).
        held = sup.dispatcher.held
        taken = sup.acceptor.shut_listeners(time.monotonic())
        lifecycle(log, "stop", "stopping: draining %d connections held by workers%s (graceful timeout %.0fs)",
                  held, f", {taken} taken from the backlog of the closed listeners" if taken else "",
                  sup.config.graceful_timeout)
        if sup.store.keeping:
            sup.store.store_all()
        else:
            sup.switchboard.close_parked(serve_readable=True)
            for w in sup.workers.values():
                w.signal(signal.SIGTERM)  # in-flight responses will carry Connection: close
        self.retire_drained()

    def retire_drained(self) -> None:
        """Draining: a worker that holds nothing more retires."""
        sup = self.sup
        if sup.pool.phase is not Phase.DRAINING or sup.dispatcher.queued:
            return
        for w in list(sup.workers.values()):
            if sup.pool.state(w.pid) in LIVE and not sup.dispatcher.load(w.pid):
                sup.retire(w.pid)

    def quick(self) -> None:
        """Close everything, give the workers a moment, then kill them (the pool is STOPPING or HALTED)."""
        sup = self.sup
        self._deadline = time.monotonic() + QUICK_STOP_GRACE
        sup.notifier.stopping()
        lifecycle(log, "stop", "quick stop")
        sup.switchboard.update_accepting(sup.stopping)
        sup.switchboard.close_parked(serve_readable=False)
        sup.switchboard.close_queued()
        for w in sup.workers.values():
            w.signal(signal.SIGQUIT)

    def turn_away(self) -> None:
        """Answer each client queued or in a backlog with a 503 and close it.

        Under systemd, a client left in the backlog of a passed listener would start the
        service again as soon as it exits: one connection, a loop of failing starts.
        """
        sup = self.sup
        queued = [conn.fd for conn in sup.dispatcher.take_queued()]
        turn_away(queued, [lst.sock for lst in sup.listeners], app_failed())

    def tick(self, now: float) -> None:
        """A timer tick while stopping: kill what is left at the deadline, else ask systemd for time."""
        sup = self.sup
        if now >= self._deadline:
            sup.carry_out(sup.pool.kill_all())
            return
        if now + EXTEND_AHEAD >= self._extended_until:
            # Ask systemd for more time, a little at a time, up to the deadline, which this process
            # keeps itself: one long request in flight may use all of graceful_timeout, as an
            # operator who set it expects, whatever TimeoutStopSec= says.
            more = min(self._deadline - now, EXTEND_STEP) + 1.0
            self._extended_until = now + more
            sup.notifier.extend_timeout(more)
        sup.notifier.status(f"stopping: {len(sup.workers)} workers left, {sup.dispatcher.held} connections")
