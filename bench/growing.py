"""The two throughput targets of growing app threads (`--max-threads 16`, the setting docs/deploy.md gives
Django and Flask users), on paired rounds (bench/paired.py) rather than the throughput table:

- keep-alive hello world (2 workers, wrk -t1 -c50): sockact's defaults, then `--max-threads 16`; the
  target is a loss of at most 3%, a question smaller than the table's run-to-run noise;
- mixed load (10 connections, every tenth request sleeps 50 ms): granian as the lineup runs it, then
  sockact `--max-threads 16`; the target is at least granian's total. Both sit near the load's ceiling
  (``ceiling``), so the report gives each side's distance from it and the spread of the rounds.

    bench/.venv/bin/python -m bench.growing [--rounds 12] [--mixed-rounds 12] [--seconds 2]
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import load, markdown, paired, report
from bench.apps import SLEEP_SECONDS
from bench.servers import Fleet, Process, Server, lineup, server_env

# 12 x 2 keep-alive runs and 12 x 2 mixed runs, each over 3 pairs of instances, of 2 s each, with
# start-ups, warm-ups and the quiet waits: about two minutes of `make bench`. The mixed load's question
# is a tie within about 1% (both sides near the load's ceiling), where 6 rounds' medians moved by as much.
ROUNDS = 12
MIXED_ROUNDS = 12
SECONDS = 2.0
INSTANCES = 3
MIXED_INSTANCES = 3


def ceiling(scenario: load.Scenario) -> float:
    """The mixed load's most requests per second: each connection waits out one sleep per SLOW_EVERY
    requests, and a server answering every other request in no time would add nothing to that."""
    return scenario.connections * load.SLOW_EVERY / SLEEP_SECONDS


def servers() -> dict[str, Server]:
    """The lineup's servers by name, started as the throughput table starts them (no file is served)."""
    return {server.name: server for server in lineup(Path(), Path())}


def measure(fleet: Fleet, quiet: Callable[[list[Process]], None], rounds: int = ROUNDS,
            mixed_rounds: int = MIXED_ROUNDS, seconds: float = SECONDS) -> dict[str, Any]:
    """{"keepalive": paired rounds of sockact then sockact --max-threads 16, "mixed": of granian then
    sockact --max-threads 16, with the load's ceiling}."""
    by_name, scenarios = servers(), {s.key: s for s in load.scenarios()}
    keepalive = paired.measure(fleet, by_name[report.BASE], by_name[report.GROWING], scenarios["keepalive"],
                               rounds, seconds, quiet, instances=INSTANCES)
    mixed = paired.measure(fleet, by_name["granian"], by_name[report.GROWING], scenarios["mixed"], mixed_rounds,
                           seconds, quiet, instances=MIXED_INSTANCES)
    return {"keepalive": keepalive, "mixed": {**mixed, "ceiling_req_s": ceiling(scenarios["mixed"])}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="keep-alive paired rounds")
    parser.add_argument("--mixed-rounds", type=int, default=MIXED_ROUNDS, help="mixed-load paired rounds")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="seconds per wrk run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as logs, Fleet(Path(logs), server_env(None)) as fleet:
        measured = measure(fleet, lambda procs: None, args.rounds, args.mixed_rounds, args.seconds)
    summary = {"growing_keepalive": report.paired(measured["keepalive"]),
               "growing_mixed": report.paired(measured["mixed"]), "load": {}, "mixed": {}}
    print(markdown.paired_section(summary["growing_keepalive"]))
    print(markdown.paired_section(summary["growing_mixed"]))
    for target in report.growing_targets(summary)[1:]:
        print(f"{target.scenario}: {target.goal}: {target.measured}: {markdown.MET[target.met]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
