"""What a request costs inside sockact: CPU microseconds and system calls, worker side and supervisor side.

For the keep-alive and `Connection: close` hello-world loads, with the access log on and off, and for the
keep-alive load with a varying head (load.VARYING: a new query string each request, as real clients
send, where wrk alone sends one head again and again, whose parse a server may reuse):

- CPU: utime + stime of the supervisor and of the workers (/proc/PID/stat) across one wrk run,
  divided by the requests wrk completed;
- system calls: `strace -c` attached to the supervisor, then to the workers, across a shorter
  run each. strace slows the traced process down, but not what each request asks of the kernel.

These figures say where a request's time goes, so the next step to take is visible.

The same loads run against the Python floor (bench/floor.py: one process, the least a Python server does
per request), WSGI and ASGI, in the same run, each just before sockact's variants of its interface:
report.py gives sockact's worker CPU per request as a multiple of the floor's.
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
from bench.servers import ASGI_APP, PROJECT_BIN, Argv, Fleet, Server, sockact_argv

SECONDS = 5.0  # the CPU run
STRACE_SECONDS = 3.0  # each traced run
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SCENARIOS = ("keepalive", load.VARYING.key, "close")
VARIANTS = (("access log on", ()), ("access log off", ("--no-access-log",)))
ASGI_ARGS = ("--interface", "asgi")
INTERFACES = ("wsgi", "asgi")


def floor_argv(interface: str) -> Argv:
    """The floor runs under the project's Python, with the httptools (and uvloop) sockact uses."""
    return lambda port: [str(PROJECT_BIN / "python"), "-m", "bench.floor", str(port), interface]


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


def measure_one(port: int, supervisor: int, scenario: load.Scenario) -> dict[str, Any]:
    workers = children(supervisor)
    before = {pid: cpu_seconds(pid) for pid in (supervisor, *workers)}
    result = load.run_wrk(scenario, port, SECONDS)
    spent = {pid: cpu_seconds(pid) - was for pid, was in before.items()}
    requests = int(result.get("requests", 0))
    if not requests:
        return {"error": result.get("error", "no requests")}
    sup_calls, sup_requests = syscalls([supervisor], scenario, port)
    work_calls, work_requests = syscalls(workers, scenario, port)
    return {
        "requests": requests,
        "worker_cpu_us": round(sum(spent[w] for w in workers) * 1e6 / requests, 1),
        "supervisor_cpu_us": round(spent[supervisor] * 1e6 / requests, 1),
        "worker_syscalls": round(work_calls / max(1, work_requests), 2),
        "supervisor_syscalls": round(sup_calls / max(1, sup_requests), 2),
    }


def floor_one(port: int, pid: int, scenario: load.Scenario) -> dict[str, Any]:
    """The floor's CPU per request across one wrk run (one process: no workers, no strace)."""
    before = cpu_seconds(pid)
    result = load.run_wrk(scenario, port, SECONDS)
    requests = int(result.get("requests", 0))
    if not requests:
        return {"error": result.get("error", "no requests")}
    return {"requests": requests, "cpu_us": round((cpu_seconds(pid) - before) * 1e6 / requests, 1)}


def measure(fleet: Fleet) -> dict[str, Any]:
    """{variant: {scenario: figures}} for sockact's variants, and under "floor" {interface: {scenario: figures}}."""
    scenarios = {s.key: s for s in (*load.scenarios(), load.VARYING)}
    found: dict[str, Any] = {"floor": {}}
    for interface in INTERFACES:
        proc, port = fleet.serve(Server(f"python floor, {interface}", floor_argv(interface)))
        try:
            load.run_wrk(scenarios["keepalive"], port, 1)  # warm, as sockact's workers are by wait_ready's GET
            found["floor"][interface] = {key: floor_one(port, proc.pid, scenarios[key]) for key in SCENARIOS}
        finally:
            fleet.stop(proc)
        for label, extra in VARIANTS:
            name = variant_name(interface, label)
            args = (*extra, *ASGI_ARGS) if interface == "asgi" else extra
            argv = sockact_argv(*args, app=ASGI_APP) if interface == "asgi" else sockact_argv(*args)
            proc, port = fleet.serve(Server(f"sockact costs, {name}", argv))
            try:
                found[name] = {key: measure_one(port, proc.pid, scenarios[key]) for key in SCENARIOS}
            finally:
                fleet.stop(proc)
    return found
