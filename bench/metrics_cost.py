"""The cost of the metrics on keep-alive throughput: the same sockact with and without a metrics listener.

Two sockact processes serve the hello-world app with 2 workers and no access log, one of
them with a metrics listener (so its workers count every request in the tally). Short
``wrk -t1 -c50`` runs alternate between them, the order flipped each round, and the medians
are compared; the machine is shared, so single runs say little. The CPU time the
supervisor and its workers spent per request (utime + stime from /proc) is compared too:
other load on the machine moves it far less than it moves throughput. A scrape at the end
checks that the counting side really counted. Last, the worker's added work per request
(TallyWriter.record and its clock read) is timed alone, in this process: on a busy machine
that is the steadiest figure.

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
import timeit
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


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its children (the workers), in seconds."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        pids = [pid, *map(int, f.read().split())]
    ticks = 0
    for p in pids:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(port: int, seconds: float, pid: int) -> tuple[float, float]:
    """One run: (requests per second, CPU microseconds per request)."""
    cpu = cpu_seconds(pid)
    out = subprocess.run(["wrk", "-t1", "-c50", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    assert rate and count, out
    return float(rate.group(1)), cpu * 1e6 / int(count.group(1))


def counted(metrics: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(m) for m in re.findall(r'^sockact_requests_total\{[^}]*\} (\S+)$', text, re.M))


def hot_path_ns(n: int = 1_000_000) -> float:
    """Nanoseconds a worker adds per request with metrics on: the clock read and record()."""
    from sockact.tally import Tally

    tally = Tally(slots=1, listeners=1)
    writer = tally.writer(0, 0)

    def request() -> None:
        writer.record(0, b"GET", 200, time.monotonic() - 0.0001)

    def nothing() -> None:
        pass

    spent = min(timeit.repeat(request, number=n, repeat=3)) - min(timeit.repeat(nothing, number=n, repeat=3))
    tally.close()
    return spent / n * 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args(argv)
    off_port, on_port, metrics = free_port(), free_port(), free_port()
    procs = [start(off_port, None), start(on_port, metrics)]
    runs: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    try:
        for port, proc in zip((off_port, on_port), procs, strict=True):
            wrk(port, 1, proc.pid)  # warm up
        for i in range(args.rounds):
            order = [("off", off_port, procs[0].pid), ("on", on_port, procs[1].pid)]
            for name, port, pid in order if i % 2 == 0 else reversed(order):
                rate, us = wrk(port, args.seconds, pid)
                runs[name].append(rate)
                cpu[name].append(us)
        assert counted(metrics) > 0, "the metrics side counted nothing"
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
    off, on = statistics.median(runs["off"]), statistics.median(runs["on"])
    for name in ("off", "on"):
        print(f"metrics {name:3}: median {statistics.median(runs[name]):9.0f} req/s, "
              f"{statistics.median(cpu[name]):5.1f} CPU us/request;  runs "
              + " ".join(f"{r:.0f}" for r in runs[name]))
    cpu_off, cpu_on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    print(f"cost: {100 * (off - on) / off:+.1f}% of keep-alive throughput, {100 * (cpu_on - cpu_off) / cpu_off:+.1f}% "
          f"CPU per request ({args.rounds} interleaved rounds of {args.seconds:g}s, wrk -t1 -c50, 2 workers; "
          "a shared machine: medians)")
    added = hot_path_ns()
    print(f"a worker's added work per request: {added:.0f} ns, {added / 10 / cpu_off:.1f}% of the "
          f"{cpu_off:.1f} us of CPU a request costs without metrics")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
