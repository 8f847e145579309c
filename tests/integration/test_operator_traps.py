"""What a clumsy operator does to the real sockact process: signals gunicorn users send, a config
file truncated under a reload, a unit whose open-files limit leaves nothing for clients."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import SOCKACT, KeepAliveClient, asleep, base_env, free_port, held_by, http_get, tcp_queues, wait_until


def test_an_fd_limit_that_leaves_no_room_for_clients_is_a_start_up_error():
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))  # LimitNOFILE=64: soft and hard alike

    result = subprocess.run([*SOCKACT, "run", "testapps:pid", "--bind", f"127.0.0.1:{free_port()}"],
                            env=base_env(), capture_output=True, text=True, timeout=20, preexec_fn=low_limit)
    assert result.returncode == 2, result.stderr
    assert "LimitNOFILE=" in result.stderr and "ready" not in result.stderr, result.stderr


class Budgeted:
    """sockact with LimitNOFILE=96, a budget of 32 connections (less the reserve of 64), and ``count``
    keep-alive clients, each idle after one request."""

    def __init__(self, tmp_path: Path, count: int, park_after: str) -> None:
        def low_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))

        self.port = free_port()
        self.errors = tmp_path / "stderr"
        with self.errors.open("w") as err:
            self.proc = subprocess.Popen([*SOCKACT, "run", "testapps:pid", "--bind", f"127.0.0.1:{self.port}",
                                          "--workers", "1", "--park-after", park_after],
                                         env=base_env(), stderr=err, preexec_fn=low_limit)
        self.clients: list[KeepAliveClient] = []
        try:
            wait_until(lambda: "ready:" in self.errors.read_text(), "ready")
            for _ in range(count):
                client = KeepAliveClient(self.port, timeout=20)
                self.clients.append(client)
                assert client.request("/")[0] == 200
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for client in self.clients:
            client.sock.close()
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)


@contextlib.contextmanager
def budgeted(tmp_path: Path, count: int, park_after: str = "0.1") -> Iterator[Budgeted]:
    server = Budgeted(tmp_path, count, park_after)
    try:
        yield server
    finally:
        server.close()


def test_at_the_fd_budget_a_new_client_takes_the_place_of_the_keep_alive_client_idle_longest(tmp_path):
    # 40 keep-alive clients for a budget of 32: from the 33rd on, each new one is served in the place of
    # the one idle longest, which is closed, rather than waiting in the backlog for a keep-alive timeout.
    with budgeted(tmp_path, 40) as server:
        clients = server.clients
        for client in clients[:8]:  # 40 - 32: the first ones, idle longest, made room
            client.sock.settimeout(10)
            assert client.sock.recv(100) == b""
        assert clients[-1].request("/")[0] == 200  # the newest still served, on its connection
        assert "parked keep-alive clients are closed, the longest idle first" in server.errors.read_text()


class Load:
    """Clients that make requests until stopped, each on a new connection, counting what failed."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port = port
        self.done = threading.Event()
        self.ok = 0
        self.failed: list[str] = []
        self.threads = [threading.Thread(target=self._client) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _client(self) -> None:
        while not self.done.is_set():
            try:
                status = http_get(self.port, "/", timeout=10)[0]
            except OSError as exc:
                self.failed.append(repr(exc))
                continue
            if status == 200:
                self.ok += 1
            else:
                self.failed.append(str(status))

    def stop(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(20)


def test_usr1_reopens_the_log_files_under_load_and_no_signal_kills_the_supervisor(start_sockact, tmp_path):
    access, errors = tmp_path / "access.log", tmp_path / "error.log"
    server = start_sockact("testapps:pid", "--workers", "2", "--access-logfile", str(access),
                           "--error-logfile", str(errors))
    workers = set(server.wait_workers(2))
    keepalive = KeepAliveClient(server.port)
    assert keepalive.request()[0] == 200
    load = Load(server.port)
    try:
        wait_until(lambda: load.ok > 20, "requests under load")
        access.rename(tmp_path / "access.log.1")
        errors.rename(tmp_path / "error.log.1")
        # logrotate's postrotate, and `systemctl kill -s USR1`, which reaches every process of the unit.
        server.send(signal.SIGUSR1)
        for pid in workers:
            os.kill(pid, signal.SIGUSR1)
        for signum in (signal.SIGUSR2, signal.SIGWINCH):
            server.send(signum)
        wait_until(lambda: errors.exists() and "SIGUSR2 ignored" in errors.read_text(), "the new error log")
        served = load.ok
        wait_until(lambda: load.ok > served + 20, "requests after the signals")
    finally:
        load.stop()
    print(f"USR1, USR2 and WINCH under load: {load.ok} requests served, {len(load.failed)} failed")
    assert load.failed == [] and server.proc.poll() is None, load.failed
    assert "reopening log files" in errors.read_text()
    wait_until(lambda: access.exists() and '"GET / HTTP/1.1" 200' in access.read_text(), "the new access log")
    # The workers took USR1 as gunicorn's workers do (reopen), not as a stop to come: they live
    # on, and their responses keep the connection open.
    assert workers <= set(server.workers())
    status, headers, _ = keepalive.request()
    assert status == 200 and headers.get("connection") != "close", headers
    keepalive.close()


def test_a_worker_memory_limit_without_a_delegated_cgroup_is_refused_at_start():
    """Not under systemd with Delegate=yes: the hard limit cannot be enforced, so sockact says why in
    one line and exits 2 (RestartPreventExitStatus=), rather than serve without it."""
    result = subprocess.run([*SOCKACT, "run", "testapps:pid", "--bind", f"127.0.0.1:{free_port()}",
                             "--worker-memory-limit", "256M"],
                            env=base_env(), capture_output=True, text=True, timeout=20)
    assert result.returncode == 2, result.stderr
    line = next(x for x in result.stderr.splitlines() if "worker_memory_limit" in x)
    assert "Delegate=yes" in line and "ready" not in result.stderr, result.stderr


def check_says(*args: str) -> str:
    """What ``sockact check`` of the echo app with ``args`` writes to stderr (its warnings); it must pass."""
    result = subprocess.run([*SOCKACT, "check", "testapps:echo", *args], env=base_env(), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_proxy_protocol_with_the_default_forwarded_allow_ips_is_a_warning(tmp_path):
    # A balancer on this host in TCP mode passes the clients' own X-Forwarded-For through, and the default
    # trusts 127.0.0.1: said by sockact check, for the global setting and for a listener's table.
    said = "with the default forwarded_allow_ips, which trusts a balancer on this host"
    assert f"sockact: warning: proxy_protocol = 'v2' {said}" in check_says("--proxy-protocol", "v2")
    assert said not in check_says("--proxy-protocol", "v2", "--forwarded-allow-ips", "")
    assert said not in check_says()
    toml = tmp_path / "sockact.toml"
    toml.write_text('[listeners.edge]\nproxy_protocol = "v1"\n')
    assert f"sockact: warning: listeners.edge: proxy_protocol = 'v1' {said}" in check_says(
        "-c", str(toml), "--bind", "edge=127.0.0.1:0")
    toml.write_text('[listeners.edge]\nproxy_protocol = "v1"\nforwarded_allow_ips = "10.0.0.2"\n')
    assert said not in check_says("-c", str(toml), "--bind", "edge=127.0.0.1:0")


def test_a_body_spool_above_the_workers_spool_total_is_a_warning(tmp_path):
    # A body between the two is never spooled (no file could hold it under the total), so body_spool
    # would not do what it says: said by sockact check, for the global setting and a listener's table.
    said = "is above body_spool_total = 10000: a body longer than the total is never spooled"
    assert f"sockact: warning: body_spool = 20000 {said}" in check_says("--body-spool", "20000",
                                                                   "--body-spool-total", "10000")
    assert "body_spool_total" not in check_says("--body-spool", "20000", "--body-spool-total", "0")  # no bound
    assert "body_spool_total" not in check_says("--body-spool", "10000", "--body-spool-total", "10000")
    assert "body_spool_total" not in check_says()
    toml = tmp_path / "sockact.toml"
    toml.write_text('body_spool_total = 10000\n[listeners.edge]\nbody_spool = 20000\n')
    assert f"sockact: warning: listeners.edge: body_spool = 20000 {said}" in check_says(
        "-c", str(toml), "--bind", "edge=127.0.0.1:0")


def test_at_the_fd_budget_a_parked_client_whose_request_came_is_served_not_closed(tmp_path):
    # Every place of the budget taken by a parked keep-alive client. While the supervisor is stopped, a
    # new client connects and then the client idle longest sends a request: the supervisor sees both in
    # one turn, the listener first. That client is no longer idle: it gets its answer, and the next one
    # idle longest makes room instead.
    with budgeted(tmp_path, 32, park_after="0.05") as server:
        proc, clients = server.proc, server.clients
        wait_until(lambda: all(held_by(proc.pid, c.sock) for c in clients), "every client parked")
        proc.send_signal(signal.SIGSTOP)
        try:
            newcomer = KeepAliveClient(server.port, timeout=20)
            clients.append(newcomer)
            wait_until(lambda: "server_rx" in tcp_queues(newcomer.sock), "the newcomer in the backlog")
            clients[0].sock.sendall(b"GET /again HTTP/1.1\r\nHost: test\r\n\r\n")
            wait_until(lambda: tcp_queues(clients[0].sock).get("client_tx") == 0, "the request in its queue")
        finally:
            proc.send_signal(signal.SIGCONT)
        assert clients[0].read_response()[0] == 200
        assert newcomer.request("/")[0] == 200
        clients[1].sock.settimeout(10)
        assert clients[1].sock.recv(100) == b""  # idle longest of those idle: it made room
        assert clients[2].request("/")[0] == 200
        assert proc.poll() is None and "Traceback" not in server.errors.read_text(), server.errors.read_text()


def test_a_parked_client_whose_request_came_as_its_keepalive_ran_out_is_served_not_reset(start_sockact):
    # The supervisor stopped while a parked keep-alive client's idle time runs past keepalive, and the
    # client sends its next request meanwhile: the supervisor's first turn after it resumes finds both
    # its expiry due and the request there. That client is no longer idle: it gets its answer, rather
    # than a close with its request unread (a reset, and the request lost).
    server = start_sockact("testapps:pid", "--workers", "1", "--keepalive", "1", "--park-after", "0.05",
                           activation=False, workers=1)
    client = KeepAliveClient(server.port, timeout=20)
    assert client.request("/")[0] == 200
    server.wait_parked(client.sock)
    wait_until(lambda: asleep(server.pid), "the supervisor to have parked it")
    server.send(signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        client.sock.sendall(b"GET /again HTTP/1.1\r\nHost: test\r\n\r\n")
        wait_until(lambda: tcp_queues(client.sock).get("client_tx") == 0, "the request in its queue")
        # Past keepalive while stopped (a state of the clock: the supervisor cannot act meanwhile).
        wait_until(lambda: time.monotonic() > stopped + 1.5, "the keep-alive time to run out")
    finally:
        server.send(signal.SIGCONT)
    assert client.read_response()[0] == 200
    client.close()
