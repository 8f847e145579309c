"""The Prometheus exposition of a metrics.Snapshot, written by prometheus_client.

The supervisor answers its metrics listener with ``exposition(snapshot)``; the text format
is prometheus_client's (``generate_latest``), never written by hand here. prometheus_client
is optional (Debian: python3-prometheus-client, a Recommends of the package): without it
``MISSING`` says what to install, and the listener answers 503 with that text.

Names follow Prometheus conventions: a ``sockact_`` prefix, base units (seconds), and
``_total`` on counters.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sockact.ipc.tally import CLASSES, DURATION_BUCKETS, METHODS, WS_DURATION_BUCKETS, WS_ENDS
from sockact.supervisor.metrics import Snapshot

MISSING = ("metrics need the Python module prometheus_client, which is not installed "
           "(Debian: apt install python3-prometheus-client; pip: prometheus-client)")

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
except ImportError:  # pragma: no cover - depends on what is installed
    available = False
    CONTENT_TYPE = "text/plain; charset=utf-8"
else:
    available = True
    CONTENT_TYPE = CONTENT_TYPE_LATEST


def exposition(snapshot: Snapshot) -> bytes:
    """The text exposition of ``snapshot``. Raises RuntimeError(MISSING) without prometheus_client."""
    if not available:
        raise RuntimeError(MISSING)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot))
    return bytes(generate_latest(registry))


class _Collector:
    """A custom collector over one snapshot: prometheus_client calls ``collect`` at generate time."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.s = snapshot

    def collect(self) -> Iterator[Any]:
        s, layout = self.s, self.s.layout
        requests = CounterMetricFamily(
            "sockact_requests", "Requests that reached the app, by listener, method and status class "
            "(none: the client left before a response).", labels=["listener", "method", "code"])
        duration = HistogramMetricFamily(
            "sockact_request_duration_seconds", "Time from the app call's start to the end of its response.",
            labels=["listener"])
        for index, name in s.listeners.items():
            for m, method in enumerate(METHODS):
                for c, klass in enumerate(CLASSES):
                    value = s.tally[layout.request_cell(index, m, c)]
                    if value:  # label sets appear once seen, as client libraries do
                        requests.add_metric([name, method, klass], value)
            cells = [s.tally[layout.bucket_cell(index, b)] for b in range(layout.buckets)]
            duration.add_metric([name], _buckets(DURATION_BUCKETS, cells), s.tally[layout.sum_cell(index)] / 1e6)
        yield requests
        yield duration
        yield _gauge("sockact_requests_in_flight", "App calls running now, in all workers.", s.in_flight)
        yield from self._websockets()
        yield _by(GaugeMetricFamily, "sockact_app_threads", "WSGI app threads alive now, in all workers: busy "
                  "(in an app call) or idle.", "state", s.app_threads)
        yield _gauge("sockact_app_threads_max", "The most app threads the workers alive may run (max_threads, "
                     "or threads, summed over them).", s.app_threads_max)
        yield _by(GaugeMetricFamily, "sockact_connections", "Client connections held now: in a worker, parked in "
                  "the supervisor (idle keep-alive), or queued for a worker.", "state", s.connections)
        yield _by(GaugeMetricFamily, "sockact_workers", "Worker processes by state.", "state", s.workers)
        yield _by(CounterMetricFamily, "sockact_connections_accepted", "Connections accepted, by listener.",
                  "listener", {name: s.accepted[index] for index, name in s.listeners.items()})
        yield _counter("sockact_accept_errors", "accept() calls that failed.", s.accept_errors)
        yield _counter("sockact_connections_handed_off", "Connections sent to a worker (each keep-alive "
                       "return from parking counts again).", sum(s.handoff.counts))
        handoff = HistogramMetricFamily(
            "sockact_handoff_latency_seconds", "Time from a connection needing a worker (accepted, readable "
            "while parked, handed back) to its send to one, queueing included.")
        handoff.add_metric([], _buckets(s.handoff.bounds, s.handoff.counts), s.handoff.sum)
        yield handoff
        yield _counter("sockact_handbacks", "Connections a worker handed back with bytes it had not served "
                       "(its app threads stalled, or it retired).", s.handbacks)
        yield _by(CounterMetricFamily, "sockact_worker_restarts", "Workers replaced, by reason.", "reason",
                  s.restarts)
        yield _by(CounterMetricFamily, "sockact_reloads", "Reloads (SIGHUP), by result.", "result", s.reloads)
        memory = GaugeMetricFamily("sockact_worker_memory_bytes", "Memory charged to each worker's cgroup "
                                   "(memory.current; worker_memory_limit).", labels=["worker", "pid"])
        cpu = CounterMetricFamily("sockact_worker_cpu_seconds", "CPU time of each worker's cgroup, user and "
                                  "system (cpu.stat; worker_memory_limit).", labels=["worker", "pid"])
        for (slot, pid), used in s.worker_memory.items():
            memory.add_metric([str(slot), str(pid)], used)
        for (slot, pid), seconds in s.worker_cpu.items():
            cpu.add_metric([str(slot), str(pid)], seconds)
        yield memory
        yield cpu
        yield _counter("sockact_watchdog_pings", "WATCHDOG=1 notifications sent to systemd.", s.watchdog_pings)
        yield _gauge("sockact_start_time_seconds", "When the supervisor started, in seconds since the epoch.",
                     s.start_time)

    def _websockets(self) -> Iterator[Any]:
        """The WebSocket sessions: open now (every app listener, 0 included: a gauge that vanishes reads as
        stale), ended by how, and their durations (label sets once seen)."""
        s, layout = self.s, self.s.layout
        open_now = GaugeMetricFamily("sockact_websockets_open", "WebSocket sessions open now (accepted, not "
                                     "ended), in all workers, by listener.", labels=["listener"])
        ended = CounterMetricFamily(
            "sockact_websockets_ended", "WebSocket sessions ended, by listener and how: the close code (app: "
            "3000-4999, other: any other), or denied, rejected (403), error (500) before it opened, or lost "
            "with its worker.", labels=["listener", "close"])
        duration = HistogramMetricFamily(
            "sockact_websocket_duration_seconds", "Length of the WebSocket sessions that opened, from the "
            "handshake to their end.", labels=["listener"])
        for index, name in s.listeners.items():
            open_now.add_metric([name], s.tally[layout.ws_open_cell(index)])
            for e, end in enumerate(WS_ENDS):
                if value := s.tally[layout.ws_end_cell(index, e)]:
                    ended.add_metric([name, end], value)
            cells = [s.tally[layout.ws_bucket_cell(index, b)] for b in range(layout.ws_buckets)]
            if any(cells):
                duration.add_metric([name], _buckets(WS_DURATION_BUCKETS, cells),
                                    s.tally[layout.ws_sum_cell(index)] / 1e6)
        yield open_now
        yield ended
        yield duration


def _buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs, +Inf last, as HistogramMetricFamily takes them."""
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*(repr(float(b)) for b in bounds), "+Inf"), counts, strict=True):
        running += count
        out.append((bound, running))
    return out


def _by(family: Any, name: str, doc: str, label: str, values: Mapping[str, float]) -> Any:
    """A metric family with one label, one sample per value."""
    metric = family(name, doc, labels=[label])
    for key, value in values.items():
        metric.add_metric([key], value)
    return metric


def _counter(name: str, doc: str, value: float) -> Any:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> Any:
    return GaugeMetricFamily(name, doc, value=value)

