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
from pathlib import Path

from bench import load
from bench.costs import cpu_seconds
from bench.memory import children
from bench.servers import HOST, Fleet, Server, free_port, get, server_env, sockact_argv


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
    from sockact.tally import Tally

    tally = Tally(slots=1, listeners=1)
    writer = tally.writer(0, 0)

    def request() -> None:
        writer.record(0, b"GET", 200, time.monotonic() - 0.0001)

    def nothing() -> None:
        pass

    spent = min(timeit.repeat(request, number=n, repeat=3)) - min(timeit.repeat(nothing, number=n, repeat=3))
    tally.close()
    return spent / n * 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args(argv)
    metrics = free_port()
    rates: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as logs, Fleet(Path(logs), server_env(None)) as fleet:
        off = fleet.serve(Server("metrics off", sockact_argv("--no-access-log")))
        on = fleet.serve(Server("metrics on", sockact_argv("--no-access-log", "--bind", f"metrics={HOST}:{metrics}")))
        sides = {"off": (off[1], off[0].pid), "on": (on[1], on[0].pid)}
        for port, pid in sides.values():
            run(port, pid, 1)  # warm up
        for i in range(args.rounds):
            for name in ("off", "on") if i % 2 == 0 else ("on", "off"):
                rate, us = run(*sides[name], args.seconds)
                rates[name].append(rate)
                cpu[name].append(us)
        scrape = get(metrics, "/metrics", timeout=5.0)
        assert b"sockact_requests_total{" in scrape, "the metrics side counted nothing"
    for name in ("off", "on"):
        print(f"metrics {name:3}: median {statistics.median(rates[name]):7.0f} req/s, "
              f"{statistics.median(cpu[name]):5.1f} CPU us/request;  runs "
              + " ".join(f"{r:.0f}" for r in rates[name]))
    rate_off, rate_on = statistics.median(rates["off"]), statistics.median(rates["on"])
    cpu_off, cpu_on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    print(f"cost: {100 * (rate_off - rate_on) / rate_off:+.1f}% of keep-alive throughput, "
          f"{100 * (cpu_on - cpu_off) / cpu_off:+.1f}% CPU per request ({args.rounds} interleaved rounds of "
          f"{args.seconds:g}s, wrk -t1 -c50, 2 workers; medians)")
    added = hot_path_ns()
    print(f"a worker's added work per request: {added:.0f} ns, {added / 10 / cpu_off:.1f}% of the "
          f"{cpu_off:.1f} us of CPU a request costs without metrics")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
