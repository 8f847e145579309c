"""The servers under test: how each is started (its defaults and 2 workers), and their processes' lives.

Every server runs in its own session and process group, its output goes to a log file, and
``Fleet`` kills every group it started when it is left, on error too: first SIGINT (a quick stop for
all of them; uWSGI treats SIGTERM as "reload"), then SIGKILL for whatever is left of the group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.apps import HELLO, JSON_BODY, STATIC_FILE_ENV
from bench.report import ASGI_LOGGED, ASGI_WSGI, GROWING, THREADED, UVICORN_LOGGED, WITH_METRICS

REPO = Path(__file__).resolve().parents[1]
PROJECT_BIN = REPO / ".venv" / "bin"  # sockact runs from the project's own venv, as a user runs it
PEERS_BIN = REPO / "bench" / ".venv" / "bin"
APP = "bench.apps:app"
ASGI_APP = "bench.apps:asgi_app"
WORKERS = 2
HOST = "127.0.0.1"
STOP_GRACE = 5.0

Argv = Callable[[int], list[str]]


@dataclass(frozen=True)
class Server:
    name: str  # the key in results and the label in the report
    argv: Argv  # the command line, given the port
    wsgi: bool = True  # False for nginx, which answers from its config and runs no Python


def sockact_argv(*extra: str, workers: int = WORKERS, app: str = APP) -> Argv:
    """sockact with its defaults and ``workers`` workers; no --bind under socket activation."""
    def argv(port: int) -> list[str]:
        bind = ["--bind", f"{HOST}:{port}"] if port else []
        return [str(PROJECT_BIN / "sockact"), "run", app, "--workers", str(workers), *bind, *extra]
    return argv


def sockact_with_metrics(*extra: str) -> Argv:
    """sockact with a metrics listener beside its own, as the metrics example drop-in sets it up."""
    def argv(port: int) -> list[str]:
        return [*sockact_argv(*extra)(port), "--bind", f"metrics={HOST}:{free_port()}"]
    return argv


def gunicorn_argv(*extra: str) -> Argv:
    def argv(port: int) -> list[str]:
        bind = ["--bind", f"{HOST}:{port}"] if port else []
        return [str(PEERS_BIN / "gunicorn"), "--workers", str(WORKERS), *bind, *extra, APP]
    return argv


def granian_argv(interface: str, app: str, *extra: str) -> Argv:
    def argv(port: int) -> list[str]:
        return [str(PEERS_BIN / "granian"), "--interface", interface, "--workers", str(WORKERS),
                "--host", HOST, "--port", str(port), *extra, app]
    return argv


def uvicorn_argv(*logging: str) -> Argv:
    """uvicorn with its fast parts, as its documentation recommends for production; by default without
    access log (its access log is an info-level logger, to its output)."""
    def argv(port: int) -> list[str]:
        return [str(PEERS_BIN / "uvicorn"), ASGI_APP, "--workers", str(WORKERS), "--host", HOST, "--port", str(port),
                "--http", "httptools", "--loop", "uvloop", *(logging or ("--no-access-log", "--log-level", "warning"))]
    return argv


def uwsgi_argv(port: int) -> list[str]:
    return [str(PEERS_BIN / "uwsgi"), "--http-socket", f"{HOST}:{port}", "--master",
            "--processes", str(WORKERS), "--module", APP]


def nginx_argv(rundir: Path, static_file: Path) -> Argv:
    def argv(port: int) -> list[str]:
        # nginx's config tokens stop at 4 KiB, so the JSON body is served from a file rather than `return`.
        (rundir / "nginx.json").write_bytes(JSON_BODY)
        conf = rundir / f"nginx-{port}.conf"
        conf.write_text(nginx_conf(rundir, port, static_file))
        return ["nginx", "-p", str(rundir), "-c", str(conf), "-g", "daemon off;"]
    return argv


def nginx_conf(rundir: Path, port: int, static_file: Path) -> str:
    """nginx as the machine's limit: 2 workers answering from memory, no access log.

    worker_connections is raised from the default 512 so that it can hold the 10,000 idle clients; it is
    the reference, not a peer, and the point is what this machine can do.
    """
    hello = HELLO.decode().replace("\n", "\\n")
    return f"""
worker_processes {WORKERS};
pid {rundir}/nginx-{port}.pid;
error_log {rundir}/nginx-{port}.error.log;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {rundir}/nginx-body;
    proxy_temp_path {rundir}/nginx-proxy;
    fastcgi_temp_path {rundir}/nginx-fastcgi;
    uwsgi_temp_path {rundir}/nginx-uwsgi;
    scgi_temp_path {rundir}/nginx-scgi;
    server {{
        listen {HOST}:{port};
        location = / {{ return 200 "{hello}"; }}
        location = /json {{ default_type application/json; alias {rundir}/nginx.json; }}
        location = /file {{ alias {static_file}; }}
    }}
}}
"""


def lineup(rundir: Path, static_file: Path) -> list[Server]:
    """Every server of the load scenarios; sockact first, as the others are reported relative to it."""
    return [
        Server("sockact", sockact_argv()),
        Server("sockact (no access log)", sockact_argv("--no-access-log")),
        Server(THREADED, sockact_argv("--threads", "4")),
        Server(GROWING, sockact_argv("--max-threads", "16")),
        Server(WITH_METRICS, sockact_with_metrics()),
        Server("gunicorn sync", gunicorn_argv()),
        Server("gunicorn gthread", gunicorn_argv("--worker-class", "gthread", "--threads", "4")),
        Server("granian", granian_argv("wsgi", APP)),
        Server("uWSGI", uwsgi_argv),
        Server("nginx", nginx_argv(rundir, static_file), wsgi=False),
    ]


def asgi_lineup() -> list[Server]:
    """The ASGI scenario's servers (bench/asgi.py): none logging requests, sockact first; then sockact and
    uvicorn logging each request. The last row is sockact serving the WSGI hello world in the same rounds:
    the cost of the asyncio loop, if any."""
    return [
        Server("sockact", sockact_argv("--interface", "asgi", "--no-access-log", app=ASGI_APP)),
        Server("uvicorn", uvicorn_argv()),
        Server("granian", granian_argv("asgi", ASGI_APP, "--no-ws")),
        Server(ASGI_LOGGED, sockact_argv("--interface", "asgi", app=ASGI_APP)),
        Server(UVICORN_LOGGED, uvicorn_argv("--access-log", "--log-level", "info")),
        Server(ASGI_WSGI, sockact_argv("--no-access-log")),
    ]


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def get(port: int, path: str = "/", timeout: float = 5.0) -> bytes:
    """One GET with Connection: close; the raw response."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


class Process:
    """One started command in its own process group, with its output in ``log``."""

    def __init__(self, argv: Sequence[str], log: Path, env: dict[str, str]) -> None:
        self.argv = list(argv)
        self.log = log
        with log.open("ab") as out:
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                          env=env, cwd=REPO, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def group_stats(self) -> list[list[str]]:
        """/proc/PID/stat of each live process of its process group, from field 3 (state) on (proc(5))."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            if int(fields[2]) == self.pid:  # pgrp: the session leader's pid (start_new_session)
                found.append(fields)
        return found

    def cpu_ticks(self) -> int:
        """CPU time (clock ticks) used so far by the live processes of its process group."""
        return sum(int(fields[11]) + int(fields[12]) for fields in self.group_stats())  # utime, stime

    def threads(self) -> int:
        """The threads of the live processes of its process group, now."""
        return sum(int(fields[17]) for fields in self.group_stats())  # num_threads

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        """SIGINT to the group, then SIGKILL to whatever of it is left; never raises."""
        self._signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(STOP_GRACE)
        # Workers may outlive their master (or ignore SIGINT): the group goes, whatever the leader did.
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(STOP_GRACE)

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)


def server_env(static_file: Path | None) -> dict[str, str]:
    """The environment every server gets: the repository on the path (for bench.apps), the static file."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    if static_file is not None:
        env[STATIC_FILE_ENV] = str(static_file)
    return env


def wait_ready(proc: Process, port: int, timeout: float = 30.0) -> None:
    """Until GET / answers 200 from ``proc``; raises if it dies or takes longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.argv[0]} exited with {proc.popen.returncode}; see {proc.log}")
        with contextlib.suppress(OSError):
            if get(port, timeout=1.0).startswith(b"HTTP/1.1 200"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.argv[0]} not serving on port {port} after {timeout:.0f} s; see {proc.log}")


class Fleet:
    """The processes the harness started; leaving the ``with`` block stops every one of them."""

    def __init__(self, logdir: Path, env: dict[str, str]) -> None:
        self.logdir = logdir
        self.env = env
        self.procs: list[Process] = []

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(self, argv: Sequence[str], log_name: str) -> Process:
        proc = Process(argv, self.logdir / f"{log_name}.log", self.env)
        self.procs.append(proc)
        return proc

    def serve(self, server: Server) -> tuple[Process, int]:
        """Start ``server`` on a free port and wait until it answers; (process, port)."""
        port = free_port()
        proc = self.start(server.argv(port), slug(server.name))
        wait_ready(proc, port)
        return proc, port

    def stop(self, proc: Process) -> None:
        proc.stop()
        self.procs.remove(proc)

    def stop_all(self) -> None:
        while self.procs:
            self.stop(self.procs[-1])


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
