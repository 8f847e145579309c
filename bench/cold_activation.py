"""Cold-activation latency: sockact vs gunicorn, each started by an equivalent systemd socket unit.

One sample: with the socket unit listening and its service stopped, connect, send a GET, and
time until the first byte of the response arrives. That covers systemd starting the service,
the interpreter starting, the app loading and the first request being served. The figure is the
median of --runs samples (20 by default), with min and max; the warm latency of a request to the
running service is shown for scale.

Both servers run in a booted container (tests/system/nspawn.py) under the container's
/usr/bin/python3, behind socket units that differ only in their ExecStart: the same hardening,
Type=notify, the same two workers, the same app (sockact's demo app). gunicorn is the one this
script runs with (the test extra installs it); it is copied into the container. Both are
byte-compiled first, as a user's installation of either is.

Needs root and systemd-nspawn, like the system tests. Run from the repository root:

    .venv/bin/python bench/cold_activation.py [--runs 20] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import socket
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "system"))

from nspawn import Container, free_port, missing_prerequisite  # noqa: E402
from sysdeploy import install  # noqa: E402

APP = "sockact.apps.demo:app"
WORKERS = 2
SITE = "/srv/bench/site"  # gunicorn's package, copied in
INSTALLED = "/usr/lib/python3/dist-packages/sockact"  # where sysdeploy.install puts sockact


def first_byte_latency(port: int, timeout: float = 30.0) -> float:
    """Seconds from connect() to the first response byte of one GET; reads the rest too."""
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        first = sock.recv(1)
        took = time.perf_counter() - began
        if not first:
            raise ConnectionError("closed without a response")
        while sock.recv(65536):
            pass
    return took


def gunicorn_units(container: Container, port: int) -> str:
    """Write gunicorn-bench.socket/.service, mirroring sockact's units; returns the service name."""
    source = Path(importlib.util.find_spec("gunicorn").origin).parent
    container.copy_in(source, f"{SITE}/gunicorn", ignore=("__pycache__", "*.pyc"))
    socket_unit = (REPO / "packaging/systemd/sockact.socket").read_text()
    socket_unit = socket_unit.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    container.write("/etc/systemd/system/gunicorn-bench.socket", socket_unit)
    service = (REPO / "packaging/systemd/sockact.service").read_text()
    service = service.replace("sockact.socket", "gunicorn-bench.socket")
    service = re.sub(r"^Description=.*$", "Description=gunicorn, for comparison", service, flags=re.M)
    service = re.sub(r"^ExecStart=.*$", f"ExecStart=/usr/bin/python3 -m gunicorn --workers {WORKERS} {APP}",
                     service, flags=re.M)
    service = re.sub(r"^ExecReload=.*$", f"Environment=PYTHONPATH={SITE}", service, flags=re.M)
    service = re.sub(r"^WatchdogSec=.*$", "", service, flags=re.M)  # gunicorn does not ping it
    container.write("/etc/systemd/system/gunicorn-bench.service", service)
    return "gunicorn-bench.service"


def sockact_units(container: Container, port: int) -> str:
    """Point the installed sockact.socket at ``port``; returns the service name."""
    container.write("/etc/systemd/system/sockact.socket.d/bench.conf",
                    f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n")
    container.write("/etc/systemd/system/sockact.service.d/bench.conf",
                    f"[Service]\nEnvironment=SOCKACT_APP={APP} SOCKACT_WORKERS={WORKERS}\n")
    return "sockact.service"


def allow_quick_restarts(container: Container, service: str) -> None:
    """Lift the start rate limit (5 starts in 10 s by default), which the bench exceeds on purpose."""
    container.write(f"/etc/systemd/system/{service}.d/bench-start-limit.conf", "[Unit]\nStartLimitIntervalSec=0\n")


def measure(container: Container, services: dict[str, str], ports: dict[str, int],
            runs: int) -> dict[str, dict[str, float]]:
    """Cold samples of each server, interleaved so that drift in the machine hits both alike."""
    sockets = [service.replace(".service", ".socket") for service in services.values()]
    container.systemctl("start", *sockets)
    cold: dict[str, list[float]] = {name: [] for name in services}
    for _ in range(runs):
        for name, service in services.items():
            container.systemctl("stop", service)
            time.sleep(0.3)  # let the stop settle, so the socket is idle
            cold[name].append(first_byte_latency(ports[name]))
    warm = {name: [first_byte_latency(ports[name]) for _ in range(runs)] for name in services}
    container.systemctl("stop", *services.values(), *sockets)
    return {name: {"median_ms": statistics.median(samples) * 1000, "min_ms": min(samples) * 1000,
                   "max_ms": max(samples) * 1000, "warm_median_ms": statistics.median(warm[name]) * 1000}
            for name, samples in cold.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="cold starts per server (default 20)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    reason = missing_prerequisite()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    if importlib.util.find_spec("gunicorn") is None:
        print("cannot run: gunicorn is not importable here; run with the venv's python", file=sys.stderr)
        return 2
    with Container() as container:
        install(container)
        ports = {"sockact": free_port(), "gunicorn": free_port()}
        services = {"sockact": sockact_units(container, ports["sockact"]),
                    "gunicorn": gunicorn_units(container, ports["gunicorn"])}
        # Byte-compiled, as the .deb's postinst (py3compile) and pip leave both: the hardened units
        # make /usr and /srv read-only, so a server without .pyc files would compile itself at every start.
        container.run(["python3", "-m", "compileall", "-q", INSTALLED, SITE])
        for service in services.values():
            allow_quick_restarts(container, service)
        container.systemctl("daemon-reload")
        results = measure(container, services, ports, args.runs)
        versions = container.run(["sh", "-c", f"PYTHONPATH={SITE} python3 -c 'import sys, gunicorn, sockact; "
                                  f"print(sys.version.split()[0], gunicorn.__version__, sockact.__version__)'"])
    python, gunicorn_version, sockact_version = versions.stdout.split()
    meta = {"runs": args.runs, "workers": WORKERS, "app": APP, "python": python,
            "gunicorn": gunicorn_version, "sockact": sockact_version}
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
        return 0
    print(f"cold activation, first connect to first response byte; {args.runs} runs, {WORKERS} workers, "
          f"python {python}")
    print(f"{'server':<22}{'median':>10}{'min':>10}{'max':>10}{'warm median':>14}")
    for name, r in results.items():
        label = f"{name} {meta[name]}"
        print(f"{label:<22}{r['median_ms']:>8.1f}ms{r['min_ms']:>8.1f}ms{r['max_ms']:>8.1f}ms"
              f"{r['warm_median_ms']:>12.2f}ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
