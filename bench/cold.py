"""Cold activation latency under systemd-socket-activate: sockact against gunicorn, 2 workers each.

One sample: systemd-socket-activate listens on a fresh port and starts nothing; the first connection
makes it exec the server with the socket (LISTEN_FDS), and the time from that connect() to the first
response byte covers the interpreter starting, the app loading and the first request being served.
Every sample is a fresh process; the two servers alternate, sample by sample. The timing itself is
bench/cold_activation.py's (which measures the same under a full systemd, in a container).

Beside each time, the CPU the server's processes (the supervisor or arbiter and its workers, every
thread) had used once they were done starting and serving that request: less at the mercy of
whatever else the machine runs than a time is, since a server that waits for a CPU uses none.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.cold_activation import first_byte_latency
from bench.servers import HOST, Fleet, free_port, gunicorn_argv, sockact_argv

LISTEN_TIMEOUT = 5.0
TCP_LISTEN = "0A"  # the LISTEN state in /proc/net/tcp
SETTLE = 0.3  # seconds after the first byte for the other workers to finish starting, before the CPU is read


def servers() -> dict[str, list[str]]:
    """The server command lines, without a bind address: they take the socket they are given."""
    return {"sockact": sockact_argv()(0), "gunicorn": gunicorn_argv()(0)}


def listening(port: int) -> bool:
    """Whether something listens on HOST:port, found without connecting (a connect would activate it)."""
    local = "".join(f"{int(octet):02X}" for octet in reversed(HOST.split(".")))
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"{local}:{port:04X}" and fields[3] == TCP_LISTEN:
            return True
    return False


def cpu_ms(pid: int) -> float:
    """Milliseconds on a CPU of process ``pid`` and its children, every thread (schedstat)."""
    total = 0
    for proc in (pid, *(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())):
        for task in Path(f"/proc/{proc}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])  # nanoseconds
            except (FileNotFoundError, ProcessLookupError):
                continue  # a thread that has just exited
    return total / 1e6


def one_sample(fleet: Fleet, name: str, argv: list[str]) -> tuple[float, float]:
    """Seconds from connect to first byte for one freshly activated server, and the milliseconds of
    CPU its processes used from the exec until they were done starting."""
    port = free_port()
    proc = fleet.start(["systemd-socket-activate", "-l", f"{HOST}:{port}", "--fdname=http", *argv], f"cold-{name}")
    try:
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while not listening(port):
            if time.monotonic() > deadline or not proc.alive():
                raise RuntimeError(f"systemd-socket-activate not listening on {port}; see {proc.log}")
            time.sleep(0.01)
        took = first_byte_latency(port)
        time.sleep(SETTLE)
        return took, cpu_ms(proc.popen.pid)  # systemd-socket-activate execs the server in its own process
    finally:
        fleet.stop(proc)


def measure(fleet: Fleet, runs: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``runs`` samples per server, alternating: each server's times to the first byte, and the CPU
    its processes used, both in milliseconds."""
    times: dict[str, list[float]] = {name: [] for name in servers()}
    cpu: dict[str, list[float]] = {name: [] for name in servers()}
    for _ in range(runs):
        for name, argv in servers().items():
            took, used = one_sample(fleet, name, argv)
            times[name].append(round(took * 1000, 2))
            cpu[name].append(round(used, 2))
    return times, cpu
