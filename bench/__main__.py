"""Run the whole benchmark and write docs/benchmarks.{json,md,png} (`make bench`).

    bench/.venv/bin/python -m bench [--rounds 3] [--seconds 3] [--quick]

Every process started here is stopped when the run ends, on error or Ctrl-C too (servers.Fleet).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import asgi, chart, cold, costs, growing, load, markdown, memory, metrics_cost, report
from bench.servers import PROJECT_BIN, REPO, Fleet, Process, Server, lineup, server_env, wait_ready

DOCS = REPO / "docs"
RESULTS = REPO / "bench" / "results"
RUNDIR = RESULTS / "run"
CHART = "benchmarks.png"
SUMMARY = "benchmarks.json"
STATIC_SIZE = 1 << 20
WARM_SECONDS = 1
QUIET_TICKS = 5  # CPU ticks (1/100 s) all servers together may use in half a second and count as quiet


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def raise_fd_limit() -> None:
    """To the hard limit, for us and every server we start: 10,000 idle clients need as many fds."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def static_file(rundir: Path) -> Path:
    """The 1 MiB file, readable by nginx's unprivileged workers too."""
    rundir.chmod(0o755)
    path = rundir / "static.bin"
    path.write_bytes(os.urandom(STATIC_SIZE))
    path.chmod(0o644)
    return path


def one_round(scenario: load.Scenario, proc: Process, port: int, seconds: float) -> dict[str, Any]:
    """One wrk run; for the idle scenario, with the idle clients held open around it."""
    if not scenario.idle:
        return load.run_wrk(scenario, port, seconds)
    clients = load.IdleClients(port, scenario.idle)
    try:
        opened = clients.opened()
        # Idle clients, not an accept burst: the server first finishes taking them in (sockact parks
        # them in its supervisor), so the figure is what holding them costs.
        wait_quiet([proc], timeout=10)
        result = load.run_wrk(scenario, port, seconds)
        result["idle"] = {"opened": opened, "released": clients.release()}
        return result
    finally:
        clients.kill()


def run_load(fleet: Fleet, servers: list[Server], rounds: int, idle_rounds: int,
             seconds: float) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every scenario, its rounds interleaved across the servers, which stay up throughout."""
    started = {}
    for server in servers:
        log(f"starting {server.name}")
        started[server.name] = fleet.serve(server)
    for name, (_, port) in started.items():
        load.run_wrk(load.scenarios()[0], port, WARM_SECONDS)
        log(f"warmed {name}")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for scenario in load.scenarios():
        chosen = [s for s in servers if s.wsgi or not scenario.wsgi_only]
        results[scenario.key] = {s.name: [] for s in chosen}
        for n in range(idle_rounds if scenario.idle else rounds):
            log(f"{scenario.key}: round {n + 1}")
            for server in load.rotated(chosen, n):
                proc, port = started[server.name]
                wait_quiet([p for p, _ in started.values()])
                results[scenario.key][server.name].append(one_round(scenario, proc, port, seconds))
                settle(proc, port)
    return results


def wait_quiet(procs: list[Process], timeout: float = 60.0) -> None:
    """Until no server burns CPU: a server still draining the last idle round's backlog would take the
    core from the next server's round (the servers stay up side by side)."""
    deadline = time.monotonic() + timeout
    before = sum(p.cpu_ticks() for p in procs)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(p.cpu_ticks() for p in procs)
        if now - before <= QUIET_TICKS:
            return
        before = now
    log(f"warning: the servers did not go quiet within {timeout:.0f} s")


def settle(proc: Process, port: int) -> None:
    """Wait until the server answers again (after the idle scenario some drain a backlog first)."""
    try:
        wait_ready(proc, port, timeout=30)
    except RuntimeError as e:
        log(f"warning: {e}")


def python_version(python: Path) -> str:
    done = subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def tool_version(argv: list[str]) -> str:
    """The first line a tool prints about its version (nginx and wrk print it to stderr, and wrk exits 1)."""
    done = subprocess.run(argv, capture_output=True, text=True)
    return (done.stdout or done.stderr).strip().splitlines()[0]


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python_sockact": python_version(PROJECT_BIN / "python"), "python_peers": platform.python_version()}


def versions() -> dict[str, str]:
    found = {"sockact": tool_version([str(PROJECT_BIN / "sockact"), "--version"]).split()[-1]}
    for name in ("gunicorn", "granian", "uWSGI", "uvicorn"):
        found[name] = metadata.version(name)
    found["nginx"] = tool_version(["nginx", "-v"]).split("/")[-1]
    found["wrk"] = tool_version(["wrk", "-v"]).split()[1]
    return found


def timed(label: str, step: Callable[[], Any]) -> Any:
    began = time.monotonic()
    result = step()
    log(f"{label} done in {time.monotonic() - began:.0f} s")
    return result


def handoff() -> dict[str, Any]:
    """The microbenchmark runs under the project's Python, where sockact is installed."""
    done = subprocess.run([str(PROJECT_BIN / "python"), "-m", "bench.handoff_rate"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


def run(args: argparse.Namespace, rundir: Path) -> dict[str, Any]:
    began = time.monotonic()
    raise_fd_limit()
    titled = (*load.scenarios(), load.ASGI_HELLO, load.VARYING)
    results: dict[str, Any] = {"scenario_titles": {s.key: s.title for s in titled}}
    with Fleet(rundir, server_env(static_file(rundir))) as fleet:
        results["load"] = timed("load", lambda: run_load(fleet, lineup(rundir, rundir / "static.bin"),
                                                         args.rounds, args.idle_rounds, args.seconds))
        served = timed("ASGI", lambda: asgi.measure(fleet, args.rounds, args.seconds, WARM_SECONDS, wait_quiet))
        results["load"][load.ASGI_HELLO.key] = served["load"]
        results["websocket"] = served["websocket"]
        # The matrix's few rounds per server are too noisy for a 5% question: paired rounds answer it.
        results["metrics_cost"] = timed("metrics cost", lambda: metrics_cost.measure(
            fleet, args.metrics_rounds, args.seconds, wait_quiet))
        # So are the two throughput targets of growing threads (a 3% loss; a tie with granian at a ceiling).
        results["growing"] = timed("growing threads, paired", lambda: growing.measure(fleet, wait_quiet))
        results["handoff"] = timed("hand-offs", handoff)
        results["costs"] = timed("per-request costs", lambda: costs.measure(fleet))
        results["memory"] = timed("memory", lambda: memory.measure(fleet))
        results["cold"], results["cold_cpu"] = timed("cold activation", lambda: cold.measure(fleet, args.cold_runs))
    results["meta"] = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                       "machine": machine(), "versions": versions(), "rounds": args.rounds,
                       "idle_rounds": args.idle_rounds, "seconds": args.seconds, "cold_runs": args.cold_runs,
                       "metrics_rounds": args.metrics_rounds,
                       "elapsed_s": round(time.monotonic() - began)}
    return results


def write(results: dict[str, Any], docs: Path) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=1))
    render(report.summarize(results), docs)


def render(summary: dict[str, Any], docs: Path) -> None:
    """The summary beside the doc, and the doc and chart from the summary alone."""
    docs.mkdir(exist_ok=True)
    (docs / SUMMARY).write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    (docs / "benchmarks.md").write_text(markdown.render(summary, CHART))
    chart.draw(summary, docs / CHART)
    log(f"wrote {docs / SUMMARY}, {docs / 'benchmarks.md'} and {docs / CHART}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scenario and server (default 3)")
    parser.add_argument("--idle-rounds", type=int, default=2, help="rounds of the idle-clients scenario (2)")
    parser.add_argument("--seconds", type=float, default=3, help="seconds per wrk run (default 3)")
    parser.add_argument("--metrics-rounds", type=int, default=10,
                        help="paired rounds of sockact with and without metrics (default 10)")
    parser.add_argument("--cold-runs", type=int, default=20, help="cold activations per server (default 20)")
    parser.add_argument("--docs", type=Path, default=DOCS, help="where benchmarks.md and the chart go")
    parser.add_argument("--from-json", type=Path, help="re-render the docs from a saved run (raw results, or "
                        "a summary such as docs/benchmarks.json); measure nothing")
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        render(saved if saved.get("schema") == report.SCHEMA else report.summarize(saved), args.docs)
        return 0
    # The servers' logs and files stay there after the run, for a look at what went wrong.
    shutil.rmtree(RUNDIR, ignore_errors=True)
    RUNDIR.mkdir(parents=True)
    write(run(args, RUNDIR), args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
