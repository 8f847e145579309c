"""The supervisor's metrics: its own counters, and one snapshot of everything for a scrape.

The supervisor counts what it sees itself (hand-offs and their latency, hand-backs, worker
restarts by reason, reloads) in plain attributes here; the acceptor counts accepts and
accept errors, health.Health the watchdog pings, and the workers their requests in the
tally (tally.py). supervisor/scrape.py reads all of that into a Snapshot, which supervisor/exposition.py turns
into the Prometheus exposition. Nothing here does I/O, and nothing is counted per request
in the supervisor beyond an integer and a histogram slot per hand-off.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sockact.ipc.tally import Layout
from sockact.policy.parking import Conn
from sockact.policy.states import TIMED_OUT, WorkerState

# Upper bounds of the hand-off latency histogram, in seconds: from a connection needing a worker
# (accepted, readable while parked, or handed back) to its send on a worker's channel. An idle
# pool hands off in tens of microseconds; a queue behind stalled or full workers takes up to seconds.
HANDOFF_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0)
RESTART_REASONS = ("exit", "timeout", "max-requests", "memory", "memory-limit", "pressure", "reload")


@dataclass(eq=False, repr=False)
class Histogram:
    """Bucket counts (the last one is +Inf) and the sum of what was observed."""

    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    sum: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class SupervisorCounters:
    """What the supervisor counts itself; it lives as long as the supervisor."""

    def __init__(self) -> None:
        self.start_time = time.time()
        self.handoff = Histogram(HANDOFF_BUCKETS)
        self.handbacks = 0  # connections a worker handed back with bytes it had not served
        self.restarts = dict.fromkeys(RESTART_REASONS, 0)
        self.reloads = {"succeeded": 0, "failed": 0}

    def handed_off(self, conn: Conn) -> None:
        """A connection was sent to a worker (WorkerProcess calls this)."""
        self.handoff.observe(time.monotonic() - conn.ready_at)

    def worker_exited(self, reason: str | None) -> None:
        if reason is not None:
            self.restarts[reason] += 1


def restart_reason(state: WorkerState | None, recycled: str | None, old_generation: bool,
                   stopping: bool) -> str | None:
    """Why a worker that exited is replaced, or None when it is not (stopping, or one worker fewer);
    ``recycled`` is the reason it was recycled for, if it was."""
    if stopping:
        return None
    if state in TIMED_OUT:
        return "timeout"  # stuck in a call past timeout, or not booted within it
    if recycled:
        return recycled
    if state is WorkerState.RETIRING:
        return "reload" if old_generation else None
    return "exit"


@dataclass(frozen=True, eq=False, repr=False)
class Snapshot:
    """Everything a scrape shows, read at one moment."""

    listeners: Mapping[int, str]  # the listeners that serve the app, by index (not the metrics one)
    layout: Layout
    tally: list[int]  # the workers' cells, summed: requests, duration buckets and sums (tally.Layout)
    in_flight: int  # app calls running
    app_threads: Mapping[str, int]  # WSGI app threads alive: busy (in a call), idle
    app_threads_max: int  # the most app threads the live workers may run: their ceilings summed
    connections: Mapping[str, int]  # by state: in a worker, parked, queued
    workers: Mapping[str, int]  # by WorkerState value
    accepted: list[int]  # by listener
    accept_errors: int
    handoff: Histogram
    handbacks: int
    restarts: Mapping[str, int]
    reloads: Mapping[str, int]
    watchdog_pings: int
    start_time: float
    # Each worker's cgroup (worker_memory_limit), by (slot, pid): memory.current in bytes, and CPU
    # seconds from cpu.stat. Empty without worker cgroups.
    worker_memory: Mapping[tuple[int, int], int] = field(default_factory=dict)
    worker_cpu: Mapping[tuple[int, int], float] = field(default_factory=dict)


# Old label values of sockact_workers{state=...}, still emitted with the count of the state they
# were renamed to, so dashboards and alerts keep working (CHANGELOG.md).
STATE_ALIASES = {"busy": WorkerState.STALLED}


def count_states(states: Iterable[WorkerState]) -> dict[str, int]:
    """Workers by state, every state present (a gauge that vanishes reads as stale), aliases included."""
    counts = {s.value: 0 for s in WorkerState}
    for s in states:
        counts[s.value] += 1
    for alias, state in STATE_ALIASES.items():
        counts[alias] = counts[state.value]
    return counts
