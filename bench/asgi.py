"""The ASGI benchmark: hello world with keep-alive (``wrk -t1 -c50``), 2 workers each, rounds
interleaved across sockact, uvicorn (httptools, uvloop) and granian ``--interface asgi``; then
WebSocket echo round trips per second, one client at a time, sockact beside uvicorn.

    bench/.venv/bin/python -m bench.asgi [--rounds N] [--seconds S]

It prints its results as JSON; it is not (yet) a part of ``make bench`` or its report.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.load import Scenario, run_wrk
from bench.servers import HOST, PEERS_BIN, PROJECT_BIN, WORKERS, Argv, Fleet, Server, server_env

APP = "bench.apps:asgi_app"
HELLO = Scenario("asgi-hello", "ASGI hello world, keep-alive")
ECHO_MESSAGE = "x" * 32


def sockact_argv(port: int) -> list[str]:
    return [str(PROJECT_BIN / "sockact"), "run", APP, "--interface", "asgi", "--workers", str(WORKERS),
            "--bind", f"{HOST}:{port}", "--no-access-log"]


def uvicorn_argv(bin_dir: Path) -> Argv:
    def argv(port: int) -> list[str]:
        return [str(bin_dir / "uvicorn"), APP, "--workers", str(WORKERS), "--host", HOST, "--port", str(port),
                "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
    return argv


def granian_argv(bin_dir: Path) -> Argv:
    def argv(port: int) -> list[str]:
        return [str(bin_dir / "granian"), "--interface", "asgi", "--workers", str(WORKERS), "--host", HOST,
                "--port", str(port), "--no-ws", APP]
    return argv


def lineup(bin_dir: Path) -> list[Server]:
    servers = [Server("sockact", sockact_argv), Server("uvicorn", uvicorn_argv(bin_dir))]
    if (bin_dir / "granian").exists():
        servers.append(Server("granian", granian_argv(bin_dir)))
    return servers


def echo_rate(port: int, seconds: float) -> float:
    """WebSocket round trips per second: one client sends a message and waits for it, again and again."""
    from websockets.sync.client import connect

    done = 0
    with connect(f"ws://{HOST}:{port}/") as ws:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ws.send(ECHO_MESSAGE)
            ws.recv()
            done += 1
    return done / seconds


def _rate(result: dict[str, Any]) -> float:
    """Requests per second of one wrk run; 0 for a failed run or one with errors."""
    if "error" in result or result["status"] or result["timeout"] or result["read"] or result["write"]:
        return 0.0
    return result["requests"] / (result["duration_us"] / 1e6)


def run(rounds: int, seconds: float, bin_dir: Path) -> dict[str, Any]:
    servers = lineup(bin_dir)
    results: dict[str, Any] = {"hello": {s.name: [] for s in servers}, "echo": {}}
    with tempfile.TemporaryDirectory() as logs, Fleet(Path(logs), server_env(None)) as fleet:
        started = {s.name: fleet.serve(s)[1] for s in servers}
        for port in started.values():
            run_wrk(HELLO, port, 2)  # warm up
        for _ in range(rounds):
            for name, port in started.items():
                results["hello"][name].append(_rate(run_wrk(HELLO, port, seconds)))
        for name in ("sockact", "uvicorn"):
            results["echo"][name] = echo_rate(started[name], seconds)
    medians = {name: statistics.median(r) for name, r in results["hello"].items()}
    results["median"] = medians
    results["ratio"] = {name: medians["sockact"] / m for name, m in medians.items() if m and name != "sockact"}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--peers-bin", type=Path, default=PEERS_BIN,
                        help="where uvicorn and granian are installed (default: bench/.venv/bin)")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        print("wrk is not installed", file=sys.stderr)
        return 1
    print(json.dumps(run(args.rounds, args.seconds, args.peers_bin), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
