"""Start the real `sockact` process, under systemd-socket-activate or with --bind, and talk to it."""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import NoReturn, TypeVar

import pytest

T = TypeVar("T")
TESTS = Path(__file__).resolve().parent.parent
SOCKACT = [sys.executable, "-m", "sockact"]


def unavailable(reason: str) -> NoReturn:
    """Skip a test that cannot run here for want of a tool or module; under CI (CI=true), fail it:
    a green CI run must not hide a test that never ran."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; under CI=true a test that cannot run fails")
    pytest.skip(reason)


def need_module(name: str) -> ModuleType:
    """``name`` imported, or the test skipped (failed under CI) for want of it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"{name} is not installed (make test installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def asleep(pid: int) -> bool:
    """Whether every thread of process ``pid`` sleeps, none running or waiting for a CPU: it has done
    what it last woke up for."""
    states = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            states.append(Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state == "S" for state in states)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(check: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    """Poll ``check`` until it returns something true, and return that; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return result


def steady(read: Callable[[], T], what: str, calm: float = 0.2, timeout: float = 10.0) -> T:
    """What ``read()`` returns once it has stayed the same for ``calm`` seconds: a baseline that a
    connection still closing (the readiness probe's, a warm-up's) does not skew. The calm is timed, not
    counted in reads: on a loaded machine a read (of /proc/net/tcp, say) can take longer than its poll."""
    last: list[T] = []
    since = 0.0

    def settled() -> bool:
        nonlocal since
        value, now = read(), time.monotonic()
        if not last or value != last[0]:
            last[:] = [value]
            since = now
        return now - since >= calm

    wait_until(settled, what, timeout)
    return last[0]


def tcp_queues(sock: socket.socket) -> dict[str, int]:
    """The kernel's view of a loopback TCP connection, from ``sock``'s (the client's) end: bytes the
    client has sent that the server has not acknowledged (client_tx) and the server has not read
    yet (server_rx); bytes the server sent that are not acknowledged (server_tx); the inode of the
    server's socket (server_inode). From /proc/net/tcp."""
    client, server = sock.getsockname()[1], sock.getpeername()[1]
    queues = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        ports = (int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16))
        tx, rx = (int(q, 16) for q in fields[4].split(":"))
        if ports == (client, server):
            queues["client_tx"] = tx
        elif ports == (server, client):
            queues.update(server_tx=tx, server_rx=rx, server_inode=int(fields[9]))
    return queues


def held_by(pid: int, sock: socket.socket) -> bool:
    """Whether process ``pid`` holds the server's end of the client ``sock``'s connection."""
    inode = tcp_queues(sock).get("server_inode")
    target = f"socket:[{inode}]"
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(FileNotFoundError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return True
    return False


def server_has_read(sock: socket.socket) -> bool:
    """Whether the server has read every byte the client ``sock`` sent."""
    queues = tcp_queues(sock)
    return queues.get("client_tx") == 0 and queues.get("server_rx") == 0


def raw_exchange(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes; a reset counts as a close."""
    sock.sendall(data)
    return read_to_close(sock)


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; a reset counts as a close."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def trickle(port: int, head: bytes, seconds: float) -> bytes:
    """Send ``head`` and a first byte of body, then one more byte each 0.3 s for up to ``seconds``;
    the server's first answer (b"(closed)" or the error in parentheses, if none came)."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"x")
        sock.settimeout(0.3)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not answer:
            with contextlib.suppress(OSError):
                sock.sendall(b"x")
            try:
                answer = sock.recv(65536) or b"(closed)"
            except TimeoutError:
                continue
            except OSError as exc:
                answer = f"({exc})".encode()
    return answer


def upload_across_a_stall(server: Server, tmp_path: Path, head_end_and_start: bytes, rest: bytes) -> None:
    """A server of testapps:slow with one app thread reads a POST (its framing field, the empty line and
    the start of its body: ``head_end_and_start``); a slow call then stalls the worker, and the upload's
    ``rest`` is sent meanwhile. Both are answered 200, by the same worker: the upload stayed with it."""
    (worker,) = server.workers()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as upload:
        upload.sendall(b"POST /?s=0 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + head_end_and_start)
        wait_until(lambda: server_has_read(upload), "the loop to read the body's start")
        inside = tmp_path / "inside"
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
            slow.sendall(f"GET /?s=1&started={inside} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            wait_until(inside.exists, "the worker in the slow call")
            # Stalled once the call outlasts handback_after; the upload must stay whatever the order.
            upload.sendall(rest)
            assert parse_response(read_to_close(slow))[0] == 200
        assert parse_response(read_to_close(upload))[0] == 200
    assert server.workers() == [worker]


def http_get(port: int, path: str = "/", host: str = "127.0.0.1", timeout: float = 10.0,
             unix: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a new connection with Connection: close: (status, headers, body)."""
    if unix:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(timeout)
        sock.connect(unix)
    else:
        sock = socket.create_connection((host, port), timeout=timeout)
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return parse_response(data)


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


class KeepAliveClient:
    """A raw HTTP/1.1 keep-alive connection: one request at a time, Content-Length bodies."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def request(self, path: str = "/") -> tuple[int, dict[str, str], bytes]:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        return self.read_response()

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status, headers, _ = parse_response(head + b"\r\n\r\n")
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


class Server:
    """A running sockact (or gunicorn) process for one test."""

    def __init__(self, argv: list[str], port: int, env: dict[str, str], unix: str | None = None,
                 pass_fds: tuple[int, ...] | list[int] = ()) -> None:
        self.port = port
        self.unix = unix
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"sockact-test-{port}.log"
        self.log = open(self.log_path, "w+b")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, pass_fds=pass_fds)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, workers: int | None = None, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(OSError, IndexError, ValueError):
                status, _, _ = http_get(self.port, "/", timeout=2, unix=self.unix)
                # With a worker count, also wait for the supervisor's "ready:" line: every worker is serving.
                if status and (workers is None or (len(children(self.pid)) >= workers
                                                   and b"ready:" in self.output().encode())):
                    return
            time.sleep(0.05)
        raise AssertionError(f"server not ready in {timeout}s:\n{self.output()}")

    def workers(self) -> list[int]:
        return children(self.pid)

    def wait_workers(self, count: int, timeout: float = 10.0, without: int | None = None) -> list[int]:
        """Wait until exactly ``count`` workers run (none of them ``without``); returns their pids."""
        def settled() -> list[int]:
            workers = self.workers()
            return workers if len(workers) == count and without not in workers else []
        return self.waiting(settled, f"{count} workers, none of them {without}", timeout)

    def wait_for_log(self, text: str, timeout: float = 10.0) -> str:
        """Wait until ``text`` appears in the server's output; returns the output."""
        return self.waiting(lambda: text in (out := self.output()) and out, repr(text) + " in the log", timeout)

    def waiting(self, check: Callable[[], T], what: str, timeout: float = 10.0) -> T:
        """wait_until, with the server's output in the failure."""
        try:
            return wait_until(check, what, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{self.output()}") from None

    def wait_parked(self, sock: socket.socket) -> None:
        """Wait until no worker holds the client ``sock``'s connection: after a response, it is parked
        (or its PARK is in the channel; the supervisor watches the connection once it has read it)."""
        self.waiting(lambda: not any(held_by(worker, sock) for worker in self.workers()),
                     "the connection to be parked in the supervisor")

    def get_json(self, path: str) -> dict:
        status, _, body = http_get(self.port, path, unix=self.unix)
        assert status == 200, body
        return json.loads(body)

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # stray workers, if any
        return self.proc.returncode

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")


def thread_of(client: KeepAliveClient, path: str) -> str:
    """The name of the thread that called the app for ``path``: MainThread for the loop thread."""
    status, _, body = client.request(path)
    assert status == 200
    return str(json.loads(body)["thread"])


def hand_off(client: KeepAliveClient) -> None:
    """Slow calls, one in five, until the worker judges them common and hands them to its pool threads."""
    thread = functools.partial(thread_of, client)
    deadline = time.monotonic() + 30
    while not thread("/report?s=0.01").startswith("sockact-app-") and time.monotonic() < deadline:
        for _ in range(4):
            thread("/?s=0")
    assert thread("/report?s=0.01").startswith("sockact-app-"), "slow calls were never handed to the pool"


def served_after_its_worker_is_killed(server: Server, client: KeepAliveClient, victim: int, path: str = "/") -> None:
    """``client``, idle in worker ``victim`` (its last answer whole, nothing sent since), outlives the worker's
    SIGKILL: parked by the supervisor, its next request (for ``path``) is served by another worker."""
    server.waiting(lambda: asleep(victim), "the worker to be done with the call")
    os.kill(victim, signal.SIGKILL)
    server.wait_for_log(f"worker {victim} killed by SIGKILL with 1 idle keep-alive connections: parked")
    status, _, body = client.request(path)
    assert status == 200 and json.loads(body)["pid"] != victim, body


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOCKACT_", "LISTEN_", "NOTIFY_", "WATCHDOG_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


@pytest.fixture
def start_sockact(tmp_path) -> Iterator:
    """start_sockact(*args, activation=True, unix=None, env={}) -> a ready Server.

    With activation, systemd-socket-activate holds the socket and passes it with LISTEN_FDS
    and LISTEN_FDNAMES=http, exactly as a .socket unit does; otherwise sockact --binds.
    """
    raise_fd_limit()
    servers: list[Server] = []

    def start(*args: str, activation: bool = True, env: dict[str, str] | None = None,
              wait: bool = True, workers: int | None = None) -> Server:
        port = free_port()
        full_env = base_env(**(env or {}))
        cmd = [*SOCKACT, "run", *args]
        if activation:
            if not shutil.which("systemd-socket-activate"):
                unavailable("systemd-socket-activate is not installed")
            passthrough = [f"-E{k}" for k in full_env if k not in ("_",)]
            cmd = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=http", *passthrough, *cmd]
        elif not any(a.startswith("--bind") for a in args):
                cmd += ["--bind", f"127.0.0.1:{port}"]
        server = Server(cmd, port, full_env)
        servers.append(server)
        if wait:
            server.wait_ready(workers)
        return server

    yield start
    for server in servers:
        server.stop(signal.SIGKILL if server.proc.poll() is None else signal.SIGTERM, timeout=5)
        server.log.close()


@pytest.fixture(params=["websockets", "wsproto"])
def ws_library(request) -> str:
    """A WebSocket library for the ws setting: a test that takes this runs once with each."""
    return request.param
