"""The fd store between two real sockact processes, with the test standing in for systemd.

The test holds the listening socket and a datagram socket in NOTIFY_SOCKET's place, reads the
supervisor's FDSTORE=1 / BARRIER=1 / FDSTOREREMOVE=1 messages as systemd would, and starts the
next instance with the listener and the stored connections at fd 3 on, LISTEN_FDS and
LISTEN_FDNAMES set as systemd sets them. (tests/system/test_restarts.py does the same under a real
systemd, with the .deb.)
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SOCKACT, KeepAliveClient, Server, base_env, wait_until

# Puts the passed fds at 3, 4, ... with LISTEN_* set for its own pid, then becomes sockact.
LAUNCH = """
import fcntl, os, sys
fds, names, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 100) for fd in fds.split(",")]
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
os.environ.update(LISTEN_FDS=str(len(high)), LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES=names)
os.execvp(argv[0], argv)
"""


class FakeSystemd:
    """Reads sd_notify messages; keeps stored fds by name, answers barriers, honours removals."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[str] = []
        self.stored: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        size = array.array("i").itemsize
        while True:
            try:
                data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(16 * size))
            except OSError:
                return
            fds = array.array("i")
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:len(payload) - len(payload) % size])
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append(data.decode())
                if fields.get("FDSTORE") == "1":
                    self.stored += [(fields.get("FDNAME", "stored"), fd) for fd in fds]
                    continue
                if fields.get("FDSTOREREMOVE") == "1":
                    for name, fd in [entry for entry in self.stored if entry[0] == fields.get("FDNAME")]:
                        os.close(fd)
                        self.stored.remove((name, fd))
                for fd in fds:  # the barrier's pipe: closing it tells the sender all was read
                    os.close(fd)

    def said(self, text: str) -> bool:
        with self._lock:
            return any(text in message for message in self.messages)

    def close(self) -> None:
        self.sock.close()
        for _, fd in self.stored:
            os.close(fd)


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify")
    yield fake
    fake.close()


def launch(listener: socket.socket, stored: list[tuple[str, int]], notify: str, app: str = "testapps:pid") -> Server:
    """sockact started as systemd starts it: the listener, then the stored fds, named."""
    fds = [listener.fileno(), *(fd for _, fd in stored)]
    names = ":".join(["http", *(name for name, _ in stored)])
    argv = [sys.executable, "-c", LAUNCH, ",".join(map(str, fds)), names, *SOCKACT, "run", app,
            "--workers", "1"]
    env = base_env(NOTIFY_SOCKET=notify)
    server = Server(argv, listener.getsockname()[1], env, pass_fds=fds)
    server.wait_ready(workers=1)
    return server


def test_a_stopping_supervisor_stores_its_keepalive_connections_and_the_next_serves_them(systemd: FakeSystemd) -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    first = launch(listener, [], systemd.path)
    servers = [first]
    client = KeepAliveClient(first.port)
    try:
        status, _, body = client.request("/")
        assert status == 200
        first_worker = json.loads(body)["pid"]
        first.send(signal.SIGTERM)
        assert first.proc.wait(15) == 0
        assert "left in systemd's fd store" in first.output()
        assert [name for name, _ in systemd.stored] == ["sockact-conn.http"]
        assert systemd.said("BARRIER=1")
        second = launch(listener, list(systemd.stored), systemd.path)
        servers.append(second)
        wait_until(lambda: "took back 1 keep-alive connections" in second.output(), "the take-back line")
        # The same connection, never reopened, is answered by the next instance's worker.
        status, _, body = client.request("/")
        assert status == 200 and json.loads(body)["pid"] != first_worker
        assert json.loads(body)["pid"] in second.workers()
        # The store was emptied at once: "systemd" holds no copy that would keep the client from a FIN.
        wait_until(lambda: systemd.said("FDSTOREREMOVE=1\nFDNAME=sockact-conn.http"), "the store emptied")
        assert systemd.stored == []
    finally:
        client.close()
        for server in servers:
            server.stop(signal.SIGKILL)
            server.log.close()
        listener.close()


def test_every_way_a_connection_waits_at_a_stop_is_stored(systemd: FakeSystemd, tmp_path: Path) -> None:
    # Several parked clients, one queued (its worker is stalled in a call), and one in that call,
    # handed back by its retiring worker once answered: each is stored, and each is served after.
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    first = launch(listener, [], systemd.path, app="testapps:slow")
    servers = [first]
    parked = [KeepAliveClient(first.port) for _ in range(3)]
    busy = KeepAliveClient(first.port)
    queued = None
    release, started = tmp_path / "release", tmp_path / "started"
    call = threading.Thread(target=busy.request, args=(f"/?s=30&until={release}&started={started}",))
    try:
        for client in parked:
            assert client.request("/?s=0")[0] == 200
        call.start()
        wait_until(started.exists, "the call inside the app")
        wait_until(lambda: systemd.said("1 stalled, 1 connections in workers, 3 parked"), "the worker stalled")
        queued = socket.create_connection(("127.0.0.1", first.port), timeout=10)
        wait_until(lambda: systemd.said("3 parked, 1 queued"), "the new client queued")
        first.send(signal.SIGTERM)
        wait_until(lambda: len(systemd.stored) == 4, "the parked and queued connections stored")
        release.touch()  # the call ends; its connection goes back and is stored too
        call.join(10)
        assert first.proc.wait(15) == 0
        assert "5 keep-alive connections left in systemd's fd store" in first.output()
        assert len(systemd.stored) == 5
        second = launch(listener, list(systemd.stored), systemd.path, app="testapps:slow")
        servers.append(second)
        for client in (*parked, busy):
            status, _, body = client.request("/?s=0")
            assert status == 200 and json.loads(body)["pid"] in second.workers()
        queued.sendall(b"GET /?s=0 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := queued.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ")
    finally:
        release.touch()
        for client in (*parked, busy):
            client.close()
        if queued is not None:
            queued.close()
        for server in servers:
            server.stop(signal.SIGKILL)
            server.log.close()
        listener.close()
