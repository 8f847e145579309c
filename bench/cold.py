"""Cold activation latency under systemd-socket-activate: sockact against gunicorn, 2 workers each.

One sample: systemd-socket-activate listens on a fresh port and starts nothing; the first connection
makes it exec the server with the socket (LISTEN_FDS), and the time from that connect() to the first
response byte covers the interpreter starting, the app loading and the first request being served.
Every sample is a fresh process; the two servers alternate, sample by sample. The timing itself is
bench/cold_activation.py's (which measures the same under a full systemd, in a container).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.cold_activation import first_byte_latency
from bench.servers import HOST, Fleet, free_port, gunicorn_argv, sockact_argv

LISTEN_TIMEOUT = 5.0
TCP_LISTEN = "0A"  # the LISTEN state in /proc/net/tcp


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


def one_sample(fleet: Fleet, name: str, argv: list[str]) -> float:
    """Seconds from connect to first byte for one freshly activated server."""
    port = free_port()
    proc = fleet.start(["systemd-socket-activate", "-l", f"{HOST}:{port}", "--fdname=http", *argv], f"cold-{name}")
    try:
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while not listening(port):
            if time.monotonic() > deadline or not proc.alive():
                raise RuntimeError(f"systemd-socket-activate not listening on {port}; see {proc.log}")
            time.sleep(0.01)
        return first_byte_latency(port)
    finally:
        fleet.stop(proc)


def measure(fleet: Fleet, runs: int) -> dict[str, Any]:
    """``runs`` samples per server, alternating; each server's samples in milliseconds."""
    samples: dict[str, list[float]] = {name: [] for name in servers()}
    for _ in range(runs):
        for name, argv in servers().items():
            samples[name].append(round(one_sample(fleet, name, argv) * 1000, 2))
    return samples
