"""The metrics listener's side of the supervisor: it starts the metrics server and reads everything a
scrape shows into a metrics.Snapshot, which supervisor/exposition.py turns into the Prometheus exposition.

The workers count their requests in the tally only when there is a metrics listener.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from sockact.ipc.tally import Tally
from sockact.supervisor.metrics import Snapshot, count_states

if TYPE_CHECKING:
    from sockact.supervisor.core import Supervisor
    from sockact.supervisor.metricserver import MetricsServer

log = logging.getLogger("sockact.supervisor")


class Scrape:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.server: MetricsServer | None = None

    def start(self, slots: int) -> Tally | None:
        """Answer scrapes on the metrics listener, if there is one; returns the tally the workers
        count in (``slots`` workers at most), or None without a metrics listener."""
        sup = self.sup
        assert sup.selector is not None
        name = sup.config.metrics_listener
        index = next((i for i, lst in enumerate(sup.listeners) if lst.name == name), None)
        if index is None:
            return None
        # here: a start without a metrics listener does without them (prometheus_client above all)
        from sockact.supervisor import exposition
        from sockact.supervisor.metricserver import MetricsServer

        if not exposition.available:
            log.warning("listener %r: %s; it answers 503 until then", name, exposition.MISSING)
        tally = Tally(slots, len(sup.listeners))
        sup.acceptor.exclude(index)
        sup.listeners[index].accept_at_connect()
        self.server = MetricsServer(sup.listeners[index], sup.selector, self._render)
        self.server.start(time.monotonic())
        return tally

    def _render(self) -> tuple[int, str, bytes]:
        from sockact.supervisor import exposition

        try:
            return 200, exposition.CONTENT_TYPE, exposition.exposition(self.snapshot())
        except RuntimeError as exc:
            return 503, exposition.CONTENT_TYPE, f"{exc}\n".encode()

    def snapshot(self) -> Snapshot:
        """Everything a scrape shows, as of now."""
        sup = self.sup
        health, tally = sup.health, sup.tally
        assert tally is not None and health is not None and self.server is not None
        return Snapshot(
            listeners={i: lst.name for i, lst in enumerate(sup.listeners) if lst is not self.server.listener},
            layout=tally.layout,
            tally=tally.total([(w.slot, w.threads) for w in sup.workers.values()]),
            in_flight=health.busy(),
            app_threads=dict(zip(("busy", "idle"), health.threads(), strict=True)),
            app_threads_max=sum(w.threads for w in sup.workers.values()),
            connections={"worker": sup.dispatcher.held, "parked": len(sup.parked),
                         "queued": sup.dispatcher.queued},
            workers=count_states(m.state for m in sup.pool.members.values()),
            accepted=list(sup.acceptor.accepted), accept_errors=sup.acceptor.errors,
            handoff=sup.counters.handoff, handbacks=sup.counters.handbacks, restarts=sup.counters.restarts,
            reloads=sup.counters.reloads, watchdog_pings=health.pings,
            start_time=sup.counters.start_time, **self._cgroup_usage())

    def _cgroup_usage(self) -> dict[str, dict[tuple[int, int], Any]]:
        """The worker_memory and worker_cpu of a Snapshot, from the workers' cgroups."""
        held, cpu = {}, {}
        groups = self.sup.cgroups
        for w in self.sup.workers.values():
            used = groups.usage(w.slot) if groups is not None else None
            if used is not None:
                held[w.slot, w.pid], cpu[w.slot, w.pid] = used.memory, used.cpu
        return {"worker_memory": held, "worker_cpu": cpu}
