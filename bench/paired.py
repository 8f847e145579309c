"""Paired rounds: two servers measured in turn on one load, the order flipped each round, judged on medians.

The throughput matrix runs each server a few rounds; its run-to-run noise on a shared machine (±7%) is
larger than a question such as "does this setting cost 3%". Here two dedicated processes serve side by
side and short wrk runs alternate between them, A B, B A, A B, ...: a drift of the machine falls on both
alike, neither side always runs first, and the medians of many rounds are compared (bench.report.paired).
One instance of a server may differ from the next by as much, so the rounds may be shared among a few
pairs of instances, started one pair after the other.
Beside req/s, each run gives the CPU its server's processes spent per request (/proc, every process of
its group), a figure less moved by what else the machine does, and for the mixed load the mean latency
of the fast and of the slow requests (bench/wrk_report.lua times them apart).
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from bench import load, report
from bench.costs import CLOCK_TICKS
from bench.servers import Fleet, Process, Server

WARM_SECONDS = 1.0
Figures = dict[str, Any]
Started = dict[str, tuple[Process, int]]


def order(sides: Sequence[str], n: int) -> list[str]:
    """Round ``n``'s order: as given in even rounds, reversed in odd ones."""
    return list(sides) if n % 2 == 0 else list(reversed(sides))


def alternate(sides: Sequence[str], rounds: range, run: Callable[[str], Figures],
              quiet: Callable[[], None]) -> dict[str, list[Figures]]:
    """``run`` each side once per round, in ``order``, after ``quiet``: {side: [figures per round]}."""
    runs: dict[str, list[Figures]] = {side: [] for side in sides}
    for n in rounds:
        for side in order(sides, n):
            quiet()
            runs[side].append(run(side))
    return runs


def figures(result: dict[str, Any], ticks: int, threads: int) -> Figures:
    """One wrk run's figures: req/s, CPU microseconds per request (from ``ticks`` of CPU the server spent
    meanwhile), the server's ``threads`` after it (app threads that grow and stay show there) and, for the
    mixed load, the mean fast and slow latencies; {"error": ...} if wrk failed."""
    requests, rate = int(result.get("requests", 0)), report.throughput(result)
    if not requests or not rate:
        return {"error": str(result.get("error", "no requests"))}
    found = {"req_s": rate, "cpu_us": ticks / CLOCK_TICKS * 1e6 / requests,
             "threads": threads}
    for kind in ("fast", "slow"):
        if result.get(f"{kind}_us"):
            found[f"{kind}_mean_ms"] = statistics.fmean(result[f"{kind}_us"]) / 1000
    return found


def wrk_run(scenario: load.Scenario, proc: Process, port: int, seconds: float) -> Figures:
    before = proc.cpu_ticks()
    result = load.run_wrk(scenario, port, seconds)
    return figures(result, proc.cpu_ticks() - before, proc.threads())


def blocks(rounds: int, instances: int) -> list[range]:
    """The rounds each pair of instances serves, as even as may be: blocks(10, 3) is 0-3, 4-6, 7-9."""
    cuts = [rounds * i // instances for i in range(instances + 1)]
    return [range(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def measure(fleet: Fleet, base: Server, other: Server, scenario: load.Scenario, rounds: int, seconds: float,
            quiet: Callable[[list[Process]], None], check: Callable[[Started], None] | None = None,
            instances: int = 1) -> dict[str, Any]:
    """Paired rounds of ``scenario`` against ``base`` and ``other``, started for this alone: ``instances``
    pairs in turn, each serving its share of the rounds, since one instance may differ from the next as
    much as the question asked:
    {"rounds", "seconds", "instances", "sides": [base, other], "runs": {side: [figures per round]}}."""
    runs: dict[str, list[Figures]] = {base.name: [], other.name: []}
    for block in blocks(rounds, instances):
        for side, done in one_pair(fleet, (base, other), scenario, block, seconds, quiet, check).items():
            runs[side].extend(done)
    return {"rounds": rounds, "seconds": seconds, "instances": instances, "sides": [base.name, other.name],
            "runs": runs}


def one_pair(fleet: Fleet, servers: tuple[Server, Server], scenario: load.Scenario, rounds: range, seconds: float,
             quiet: Callable[[list[Process]], None],
             check: Callable[[Started], None] | None) -> dict[str, list[Figures]]:
    """One pair of instances: started, warmed with the load, ``rounds`` run, looked at by ``check`` if
    given, and stopped."""
    started: Started = {}
    try:
        for server in servers:
            started[server.name] = fleet.serve(server)
        for _, port in started.values():
            load.run_wrk(scenario, port, WARM_SECONDS)
        procs = [proc for proc, _ in started.values()]
        runs = alternate(list(started), rounds, lambda side: wrk_run(scenario, *started[side], seconds),
                         lambda: quiet(procs))
        if check is not None:
            check(started)
        return runs
    finally:
        for proc, _ in started.values():
            fleet.stop(proc)
