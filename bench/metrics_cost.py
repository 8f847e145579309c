"""The cost of the metrics on keep-alive throughput: the same sockact with and without a metrics listener.

Two sockact processes serve the benchmark's hello world (``make bench``'s keep-alive scenario,
2 workers, wrk -t1 -c50), one of them with a metrics listener, so its workers count every
request in the tally. Short runs alternate between them, the order flipped each round, and
the medians are compared; the machine may be shared, so single runs say little. The CPU time
the supervisor and its workers spent per request (costs.cpu_seconds) is compared too, and
last the worker's added work per request (the clock read and TallyWriter.record) is timed
alone in this process: on a busy machine that is the steadiest figure.

    .venv/bin/python -m bench.metrics_cost [--rounds 16] [--seconds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import load
from bench.costs import cpu_seconds
from bench.memory import children
from bench.servers import Fleet, Process, Server, get, server_env, sockact_argv, sockact_with_metrics


def run(port: int, supervisor: int, seconds: float) -> tuple[float, float]:
    """One keep-alive wrk run: (requests per second, CPU microseconds per request)."""
    pids = [supervisor, *children(supervisor)]
    before = sum(cpu_seconds(pid) for pid in pids)
    result = load.run_wrk(load.scenarios()[0], port, seconds)
    spent = sum(cpu_seconds(pid) for pid in pids) - before
    requests = int(result.get("requests", 0))
    if not requests:
        raise RuntimeError(f"wrk: {result.get('error', 'no requests')}")
    return requests / (result["duration_us"] / 1e6), spent * 1e6 / requests


def hot_path_ns(n: int = 1_000_000) -> float:
    """Nanoseconds a worker adds per request with metrics on: the clock read and record()."""
    from sockact.ipc.tally import Tally

    tally = Tally(slots=1, listeners=1)
    writer = tally.writer(0, 0)

    def request() -> None:
        writer.record(0, b"GET", 200, time.monotonic() - 0.0001)

    def nothing() -> None:
        pass

    spent = min(timeit.repeat(request, number=n, repeat=3)) - min(timeit.repeat(nothing, number=n, repeat=3))
    tally.close()
    return spent / n * 1e9


def measure(fleet: Fleet, rounds: int, seconds: float, quiet: Callable[[list[Process]], None],
            *extra: str) -> dict[str, Any]:
    """Paired keep-alive runs of sockact with and without a metrics listener, the order flipped each
    round: {"off"/"on": [req/s per run], "cpu_off"/"cpu_on": [CPU us per request per run]}."""
    off = fleet.serve(Server("metrics off", sockact_argv(*extra)))
    on = fleet.serve(Server("metrics on", sockact_with_metrics(*extra)))
    sides = {"off": (off[1], off[0].pid), "on": (on[1], on[0].pid)}
    for port, pid in sides.values():
        run(port, pid, 1)  # warm up
    out: dict[str, Any] = {"rounds": rounds, "seconds": seconds, "off": [], "on": [], "cpu_off": [], "cpu_on": []}
    for i in range(rounds):
        for name in ("off", "on") if i % 2 == 0 else ("on", "off"):
            quiet([off[0], on[0]])
            rate, us = run(*sides[name], seconds)
            out[name].append(rate)
            out[f"cpu_{name}"].append(us)
    scrape = get(int(metrics_port(on[0].argv)), "/metrics", timeout=5.0)
    assert b"sockact_requests_total{" in scrape, "the metrics side counted nothing"
    for proc, _ in (off, on):
        fleet.stop(proc)
    return out


def metrics_port(argv: list[str]) -> str:
    return next(a for a in argv if a.startswith("metrics=")).rsplit(":", 1)[1]


def cost(measured: dict[str, Any]) -> tuple[float, float]:
    """(throughput lost, CPU per request added), in percent, from the medians of ``measure``."""
    rate_off, rate_on = statistics.median(measured["off"]), statistics.median(measured["on"])
    cpu_off, cpu_on = statistics.median(measured["cpu_off"]), statistics.median(measured["cpu_on"])
    return 100 * (rate_off - rate_on) / rate_off, 100 * (cpu_on - cpu_off) / cpu_off


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as logs, Fleet(Path(logs), server_env(None)) as fleet:
        measured = measure(fleet, args.rounds, args.seconds, lambda procs: None, "--no-access-log")
    for name in ("off", "on"):
        print(f"metrics {name:3}: median {statistics.median(measured[name]):7.0f} req/s, "
              f"{statistics.median(measured[f'cpu_{name}']):5.1f} CPU us/request;  runs "
              + " ".join(f"{r:.0f}" for r in measured[name]))
    lost, added = cost(measured)
    print(f"cost: {lost:+.1f}% of keep-alive throughput, {added:+.1f}% CPU per request ({args.rounds} "
          f"interleaved rounds of {args.seconds:g}s, wrk -t1 -c50, 2 workers; medians)")
    cpu_off = statistics.median(measured["cpu_off"])
    work = hot_path_ns()
    print(f"a worker's added work per request: {work:.0f} ns, {work / 10 / cpu_off:.1f}% of the "
          f"{cpu_off:.1f} us of CPU a request costs without metrics")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
