"""What a request costs inside sockact: CPU microseconds and system calls, worker side and supervisor side.

For the keep-alive and `Connection: close` hello-world loads, with the access log on and off, and for the
keep-alive load with a varying head (load.VARYING: a new query string each request, as real clients
send, where wrk alone sends one head again and again, whose parse a server may reuse):

- CPU: utime + stime of the supervisor and of the workers (/proc/PID/stat) across one wrk run,
  divided by the requests wrk completed;
- system calls: `strace -c` attached to the supervisor, then to the workers, across a shorter
  run each. strace slows the traced process down, but not what each request asks of the kernel.

These figures say where a request's time goes, so the next step to take is visible.

The same loads run against the Python floor (bench/floor.py: the least a Python server does per request,
in as many processes as sockact's workers, the kernel sharing the connections among them), WSGI and
ASGI, in the same run: report.py gives sockact's worker CPU per request as a multiple of the floor's.
The floor and sockact's two variants of one interface serve side by side, and the repeated keep-alive
load, on which the targets are judged, runs against the three in turn, ROUNDS times: each figure is the
median of its rounds, so a drift of the machine within the run falls on all three alike. The other
loads run once each.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import load
from bench.memory import children
from bench.report import variant_name
from bench.servers import ASGI_APP, PROJECT_BIN, WORKERS, Argv, Fleet, Server, sockact_argv

SECONDS = 5.0  # the CPU run
STRACE_SECONDS = 3.0  # each traced run
ROUNDS = 3  # of the judged load (the repeated keep-alive head), against the floor and both variants in turn
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SCENARIOS = ("keepalive", load.VARYING.key, "close")
VARIANTS = (("access log on", ()), ("access log off", ("--no-access-log",)))
ASGI_ARGS = ("--interface", "asgi")
INTERFACES = ("wsgi", "asgi")


def floor_argv(interface: str) -> Argv:
    """The floor runs under the project's Python, with the httptools (and uvloop) sockact uses, in as many
    processes as sockact has workers: each serves its share of the connections, as each worker does."""
    return lambda port: [str(PROJECT_BIN / "python"), "-m", "bench.floor", str(port), interface, str(WORKERS)]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


def strace_total(summary: str) -> int:
    """The total number of calls in a `strace -c` summary."""
    for line in reversed(summary.splitlines()):
        parts = line.split()
        if parts and parts[-1] == "total":
            return int(parts[3])
    raise ValueError("no total line in the strace summary")


def syscalls(pids: list[int], scenario: load.Scenario, port: int) -> tuple[int, int]:
    """(system calls made by ``pids``, requests served) across one traced wrk run."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        argv = ["strace", "-c", "-f", "-qq", "-o", out.name, *(a for p in pids for a in ("-p", str(p)))]
        tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # attached
        result = load.run_wrk(scenario, port, STRACE_SECONDS)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
        return strace_total(Path(out.name).read_text()), int(result.get("requests", 0))


def cpu_run(pids: list[int], port: int, scenario: load.Scenario) -> tuple[dict[int, float], int] | str:
    """({pid: CPU seconds spent}, requests served) across one wrk run, or wrk's error."""
    before = {pid: cpu_seconds(pid) for pid in pids}
    result = load.run_wrk(scenario, port, SECONDS)
    requests = int(result.get("requests", 0))
    if not requests:
        return str(result.get("error", "no requests"))
    return {pid: cpu_seconds(pid) - was for pid, was in before.items()}, requests


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


class Subject:
    """One server the costs are measured on: the floor (its processes) or sockact (a supervisor, its workers)."""

    def __init__(self, pid: int, port: int, floor: bool) -> None:
        self.pid, self.port, self.floor = pid, port, floor
        self.workers = [pid, *children(pid)] if floor else children(pid)

    def cpu(self, scenario: load.Scenario) -> dict[str, float] | str:
        """CPU microseconds per request, worker side and supervisor side, across one wrk run."""
        ran = cpu_run([*self.workers, *(() if self.floor else (self.pid,))], self.port, scenario)
        if isinstance(ran, str):
            return ran
        spent, requests = ran
        figures = {"requests": requests, "worker": sum(spent[w] for w in self.workers) * 1e6 / requests}
        if not self.floor:
            figures["supervisor"] = spent[self.pid] * 1e6 / requests
        return figures

    def figures(self, runs: list[dict[str, float]], scenario: load.Scenario) -> dict[str, Any]:
        """The median of ``runs``, and for sockact the system calls of one traced run."""
        if self.floor:
            found: dict[str, Any] = {"cpu_us": round(median([r["worker"] for r in runs]), 1)}
        else:
            sup_calls, sup_requests = syscalls([self.pid], scenario, self.port)
            work_calls, work_requests = syscalls(self.workers, scenario, self.port)
            found = {
                "worker_cpu_us": round(median([r["worker"] for r in runs]), 1),
                "supervisor_cpu_us": round(median([r["supervisor"] for r in runs]), 1),
                "worker_syscalls": round(work_calls / max(1, work_requests), 2),
                "supervisor_syscalls": round(sup_calls / max(1, sup_requests), 2),
            }
        found["requests"] = int(median([r["requests"] for r in runs]))
        if len(runs) > 1:
            found["cpu_rounds_us"] = [round(r["worker"], 1) for r in runs]
        return found



def measure_interface(fleet: Fleet, interface: str, scenarios: dict[str, load.Scenario]) -> dict[str, Any]:
    """{"floor": figures, variant: figures} for one interface: the three servers side by side."""
    servers = {"floor": Server(f"python floor, {interface}", floor_argv(interface))}
    for label, extra in VARIANTS:
        name = variant_name(interface, label)
        args = (*extra, *ASGI_ARGS) if interface == "asgi" else extra
        servers[name] = Server(f"sockact costs, {name}",
                               sockact_argv(*args, app=ASGI_APP) if interface == "asgi" else sockact_argv(*args))
    procs = []
    try:
        subjects = {}
        for name, server in servers.items():
            proc, port = fleet.serve(server)
            procs.append(proc)
            subjects[name] = Subject(proc.pid, port, name == "floor")
        load.run_wrk(scenarios["keepalive"], subjects["floor"].port, 1)  # warm, as sockact's by wait_ready's GET
        found: dict[str, Any] = {name: {} for name in subjects}
        for key in SCENARIOS:
            runs: dict[str, list[dict[str, float] | str]] = {name: [] for name in subjects}
            for _ in range(ROUNDS if key == "keepalive" else 1):
                for name, subject in subjects.items():
                    runs[name].append(subject.cpu(scenarios[key]))
            for name, subject in subjects.items():
                done = [r for r in runs[name] if not isinstance(r, str)]
                errors = [r for r in runs[name] if isinstance(r, str)]
                found[name][key] = subject.figures(done, scenarios[key]) if done else {"error": errors[0]}
        return found
    finally:
        for proc in procs:
            fleet.stop(proc)


def measure(fleet: Fleet) -> dict[str, Any]:
    """{variant: {scenario: figures}} for sockact's variants, and under "floor" {interface: {scenario: figures}}."""
    scenarios = {s.key: s for s in (*load.scenarios(), load.VARYING)}
    found: dict[str, Any] = {"floor": {}}
    for interface in INTERFACES:
        figures = measure_interface(fleet, interface, scenarios)
        found["floor"][interface] = figures.pop("floor")
        found.update(figures)
    return found
