"""The cost of the metrics on keep-alive throughput: the same sockact with and without a metrics listener.

Two sockact processes serve the hello-world app with 2 workers and no access log, one of
them with a metrics listener (so its workers count every request in the tally). Short
``wrk -t1 -c50`` runs alternate between them, the order flipped each round, and the medians
are compared; the machine is shared, so single runs say little. A scrape between rounds
checks that the counting side really counted.

    python -m bench.metrics_cost [--rounds 8] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

APP = "sockact.apps.hello:app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(port: int, metrics: int | None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "sockact", "run", APP, "--workers", "2", "--no-access-log",
            "--log-level", "warning", "--bind", f"http=127.0.0.1:{port}"]
    if metrics is not None:
        argv += ["--bind", f"metrics=127.0.0.1:{metrics}"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"sockact on port {port} did not start")


def wrk(port: int, seconds: float) -> float:
    out = subprocess.run(["wrk", "-t1", "-c50", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def counted(metrics: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(m) for m in re.findall(r'^sockact_requests_total\{[^}]*\} (\S+)$', text, re.M))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args(argv)
    off_port, on_port, metrics = free_port(), free_port(), free_port()
    procs = [start(off_port, None), start(on_port, metrics)]
    runs: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for port in (off_port, on_port):
            wrk(port, 1)  # warm up
        for i in range(args.rounds):
            order = [("off", off_port), ("on", on_port)]
            for name, port in order if i % 2 == 0 else reversed(order):
                runs[name].append(wrk(port, args.seconds))
        assert counted(metrics) > 0, "the metrics side counted nothing"
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
    off, on = statistics.median(runs["off"]), statistics.median(runs["on"])
    for name in ("off", "on"):
        print(f"metrics {name:3}: median {statistics.median(runs[name]):9.0f} req/s  runs "
              + " ".join(f"{r:.0f}" for r in runs[name]))
    print(f"cost: {100 * (off - on) / off:+.1f}% of keep-alive throughput ({args.rounds} interleaved rounds "
          f"of {args.seconds:g}s, wrk -t1 -c50, 2 workers; a shared machine: medians)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
