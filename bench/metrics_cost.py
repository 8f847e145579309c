"""The cost of the metrics on keep-alive throughput: the same sockact with and without a metrics listener.

Two sockact processes serve the benchmark's hello world (``make bench``'s keep-alive scenario,
2 workers, wrk -t1 -c50), one of them with a metrics listener, so its workers count every
request in the tally. Short runs alternate between them, the order flipped each round, and
the medians are compared (bench/paired.py); the machine may be shared, so single runs say little.
The CPU time the supervisor and its workers spent per request is compared too, and last the
worker's added work per request (the clock read and TallyWriter.record) is timed alone in this
process: on a busy machine that is the steadiest figure.

    .venv/bin/python -m bench.metrics_cost [--rounds 16] [--seconds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import load, markdown, paired, report
from bench.servers import Fleet, Process, Server, get, server_env, sockact_argv, sockact_with_metrics

OFF, ON = "metrics off", "metrics on"


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


def counted(started: paired.Started) -> None:
    """The metrics side did count: its exposition has the request counter."""
    scrape = get(int(metrics_port(started[ON][0].argv)), "/metrics", timeout=5.0)
    assert b"sockact_requests_total{" in scrape, "the metrics side counted nothing"


def measure(fleet: Fleet, rounds: int, seconds: float, quiet: Callable[[list[Process]], None],
            *extra: str) -> dict[str, Any]:
    """Paired keep-alive runs of sockact without and with a metrics listener (bench.paired.measure)."""
    return paired.measure(fleet, Server(OFF, sockact_argv(*extra)), Server(ON, sockact_with_metrics(*extra)),
                          load.scenarios()[0], rounds, seconds, quiet, counted)


def metrics_port(argv: list[str]) -> str:
    return next(a for a in argv if a.startswith("metrics=")).rsplit(":", 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as logs, Fleet(Path(logs), server_env(None)) as fleet:
        pair = report.paired(measure(fleet, args.rounds, args.seconds, lambda procs: None, "--no-access-log"))
    print(markdown.paired_section(pair))
    cpu_off = pair["sides"][OFF]["median"]["cpu_us"]
    work = hot_path_ns()
    print(f"a worker's added work per request: {work:.0f} ns, {work / 10 / cpu_off:.1f}% of the "
          f"{cpu_off:.1f} us of CPU a request costs without metrics")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
