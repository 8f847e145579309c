"""The load scenarios: what each one asks of wrk, and running wrk (and the idle-connection holder) once.

A round of a scenario is one wrk run against one server; the harness interleaves rounds across
servers (A B C A B C ...) so that drift on a shared machine touches every server alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.apps import SLEEP_SECONDS
from bench.report import VARYING_HEAD
from bench.servers import HOST, REPO

T = TypeVar("T")

WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")
WRK_TIMEOUT = "5s"  # wrk's per-request timeout; a request slower than this counts as an error
SLOW_EVERY = 10  # mixed load: every 10th request sleeps, so 10% slow and 90% fast
IDLE_CONNECTIONS = 10_000


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    path: str = "/"
    threads: int = 1
    connections: int = 50
    headers: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    wsgi_only: bool = False  # nginx runs no app, so it cannot sleep
    idle: int = 0  # idle keep-alive connections held open during the run


def scenarios() -> list[Scenario]:
    """In the order they run. The idle one goes last: a server that cannot hold 10,000 clients may
    need a while to drain its backlog afterwards, and that must not spill into another scenario."""
    return [
        Scenario("keepalive", "Keep-alive hello world"),
        Scenario("close", "`Connection: close` hello world", headers=("Connection: close",)),
        Scenario("json", "Keep-alive 4 KiB JSON", path="/json"),
        Scenario("static", "1 MiB file through `wsgi.file_wrapper`", path="/file"),
        # One connection per wrk thread: the per-path timing in wrk_report.lua needs it (see there).
        Scenario("mixed", f"Mixed: 90% fast, 10% sleep {SLEEP_SECONDS * 1000:.0f} ms", threads=10, connections=10,
                 env={"BENCH_SLOW_EVERY": str(SLOW_EVERY), "BENCH_SLOW_PATH": "/sleep"}, wsgi_only=True),
        Scenario("idle", f"Keep-alive hello world, {IDLE_CONNECTIONS:,} idle clients held open",
                 idle=IDLE_CONNECTIONS),
    ]


# The ASGI lineup's (bench/asgi.py): the keep-alive hello world, from the ASGI app.
ASGI_HELLO = Scenario("asgi", "ASGI keep-alive hello world")
# The costs' (bench/costs.py): keep-alive hello world whose every request has a new query string, so no
# server can reuse the work of the head before it on the connection (wrk alone repeats one head).
VARYING = Scenario(VARYING_HEAD, "Keep-alive hello world, varying head", env={"BENCH_VARY": "1"})


def rotated(items: list[T], n: int) -> list[T]:
    """Round ``n``'s order: each round starts one server later (A B C, B C A, ...), so that no
    server always runs first, or right after the same neighbour."""
    k = n % len(items) if items else 0
    return items[k:] + items[:k]


def wrk_argv(scenario: Scenario, port: int, seconds: float) -> list[str]:
    headers = [arg for h in scenario.headers for arg in ("-H", h)]
    return ["wrk", f"-t{scenario.threads}", f"-c{scenario.connections}", f"-d{seconds:g}s",
            "--timeout", WRK_TIMEOUT, "-s", str(WRK_SCRIPT), *headers, f"http://{HOST}:{port}{scenario.path}"]


def run_wrk(scenario: Scenario, port: int, seconds: float) -> dict[str, Any]:
    """One wrk run: the BENCH line of wrk_report.lua as a dict, or {"error": ...} if wrk failed."""
    env = {**os.environ, **scenario.env}
    try:
        done = subprocess.run(wrk_argv(scenario, port, seconds), capture_output=True, text=True, env=env,
                              timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        return {"error": "wrk did not finish"}
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line.removeprefix("BENCH "))
    return {"error": f"wrk exited {done.returncode}: {done.stderr.strip()[-300:]}"}


class IdleClients:
    """The helper process (bench/idle.py) that holds idle keep-alive connections open to one server."""

    def __init__(self, port: int, count: int) -> None:
        self.popen = subprocess.Popen([sys.executable, "-m", "bench.idle", str(port), str(count)], cwd=REPO,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      start_new_session=True)

    def opened(self) -> dict[str, Any]:
        """Blocks until the helper has opened its connections (or given up on some); its counts."""
        return self._report()

    def release(self) -> dict[str, Any]:
        """Tells the helper to check which connections are still open, close them all and exit."""
        assert self.popen.stdin is not None
        self.popen.stdin.close()
        report = self._report()
        self.popen.wait(60)
        return report

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def _report(self) -> dict[str, Any]:
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line:
            return {"error": f"idle helper exited {self.popen.wait()}"}
        return json.loads(line)
