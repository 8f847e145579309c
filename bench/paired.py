"""Paired rounds: two servers measured in turn on one load, the order flipped each round, judged on medians.

The throughput matrix runs each server a few rounds; its run-to-run noise on a shared machine (±7%) is
larger than a question such as "does this setting cost 3%". Here two dedicated processes serve side by
side and short wrk runs alternate between them, A B, B A, A B, ...: a drift of the machine falls on both
alike, neither side always runs first, and the medians of many rounds are compared (bench.report.paired).
Beside req/s, each run gives the CPU its server's processes spent per request (/proc, every process of
its group), a figure less moved by what else the machine does, and for the mixed load the mean latency
of the fast and of the slow requests (bench/wrk_report.lua times them apart).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from bench import load
from bench.costs import CLOCK_TICKS
from bench.servers import Fleet, Process, Server

WARM_SECONDS = 1.0
Figures = dict[str, Any]
Started = dict[str, tuple[Process, int]]


def order(sides: Sequence[str], n: int) -> list[str]:
    """Round ``n``'s order: as given in even rounds, reversed in odd ones."""
    return list(sides) if n % 2 == 0 else list(reversed(sides))


def alternate(sides: Sequence[str], rounds: int, run: Callable[[str], Figures],
              quiet: Callable[[], None]) -> dict[str, list[Figures]]:
    """``run`` each side once per round, in ``order``, after ``quiet``: {side: [figures per round]}."""
    runs: dict[str, list[Figures]] = {side: [] for side in sides}
    for n in range(rounds):
        for side in order(sides, n):
            quiet()
            runs[side].append(run(side))
    return runs


def figures(result: dict[str, Any], ticks: int, threads: int) -> Figures:
    """One wrk run's figures: req/s, CPU microseconds per request (from ``ticks`` of CPU the server spent
    meanwhile), the server's ``threads`` after it (app threads that grow and stay show there) and, for the
    mixed load, the mean fast and slow latencies; {"error": ...} if wrk failed."""
    requests = int(result.get("requests", 0))
    if not requests or not result.get("duration_us"):
        return {"error": str(result.get("error", "no requests"))}
    found = {"req_s": requests / (result["duration_us"] / 1e6), "cpu_us": ticks / CLOCK_TICKS * 1e6 / requests,
             "threads": threads}
    for kind in ("fast", "slow"):
        if result.get(f"{kind}_us"):
            found[f"{kind}_mean_ms"] = statistics.fmean(result[f"{kind}_us"]) / 1000
    return found


def wrk_run(scenario: load.Scenario, proc: Process, port: int, seconds: float) -> Figures:
    before = proc.cpu_ticks()
    result = load.run_wrk(scenario, port, seconds)
    return figures(result, proc.cpu_ticks() - before, proc.threads())


def measure(fleet: Fleet, base: Server, other: Server, scenario: load.Scenario, rounds: int, seconds: float,
            quiet: Callable[[list[Process]], None], check: Callable[[Started], None] | None = None) -> dict[str, Any]:
    """Paired rounds of ``scenario`` against ``base`` and ``other``, each started for this alone, warmed
    with the same load, and stopped after (``check`` first looks at them, if given):
    {"rounds", "seconds", "sides": [base, other], "runs": {side: [figures per round]}}."""
    started: Started = {}
    try:
        for server in (base, other):
            started[server.name] = fleet.serve(server)
        for _, port in started.values():
            load.run_wrk(scenario, port, WARM_SECONDS)
        procs = [proc for proc, _ in started.values()]
        runs = alternate(list(started), rounds, lambda side: wrk_run(scenario, *started[side], seconds),
                         lambda: quiet(procs))
        if check is not None:
            check(started)
    finally:
        for proc, _ in started.values():
            fleet.stop(proc)
    return {"rounds": rounds, "seconds": seconds, "sides": [base.name, other.name], "runs": runs}
