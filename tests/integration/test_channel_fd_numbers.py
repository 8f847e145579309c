"""A worker started while the supervisor holds more than a thousand parked clients: its channel's fd
number is above select()'s FD_SETSIZE (1024), and the worker must still wait for room in it."""

from __future__ import annotations

import os
import signal
import socket

import pytest
from conftest import SOCKACT, Server, base_env, fd_count, free_port, steady, wait_until


def _highest_fd(pid: int) -> int:
    return max(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))


def _holding(pid: int) -> int:
    """The fds process ``pid`` holds; 0 once it has exited."""
    try:
        return fd_count(pid)
    except FileNotFoundError:
        return 0


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _one_request(port: int, count: int) -> list[socket.socket]:
    """``count`` keep-alive clients on ``port``, each answered once."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(count)]
    for sock in socks:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    for sock in socks:
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    return socks


@pytest.mark.parametrize("app", ["testapps:pid", "asgiapps:echo"], ids=["wsgi", "asgi"])
def test_a_worker_whose_channel_fd_is_above_1024_waits_for_room_in_it(tmp_path, app):
    # "idle" parks at once (the default park_after): a thousand clients there are a thousand fds of the
    # supervisor's, so a worker it starts then (a reload) gets a channel numbered above them. "held" keeps
    # its clients in that worker for 3 s, then they all go back at once: PARKs in a burst, which fill the
    # channel while the supervisor does not read it (stopped here; busy, in a real burst).
    cfg = tmp_path / "sockact.toml"
    cfg.write_text(f'app = "{app}"\nworkers = 1\naccess_log = false\n\n[listeners.held]\npark_after = 3.0\n')
    idle, held = free_port(), free_port()
    server = Server([*SOCKACT, "run", "--config", str(cfg), "--bind", f"idle=127.0.0.1:{idle}",
                     "--bind", f"held=127.0.0.1:{held}"], idle, base_env())
    try:
        server.wait_ready(workers=1)
        parked = _one_request(idle, 1100)
        server.waiting(lambda: fd_count(server.pid) > 1100, "the idle clients to be parked in the supervisor")
        [old] = server.workers()
        server.send(signal.SIGHUP)
        [worker] = server.wait_workers(1, without=old)
        server.wait_for_log("reload done")
        assert _highest_fd(worker) >= 1024  # its channel, numbered as the supervisor's fds were
        clients = _one_request(held, 600)
        holding = fd_count(worker)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            # park_after passes: the worker hands the 600 back until the channel is full, then waits for room.
            wait_until(lambda: _holding(worker) < holding - 10, "the worker to begin handing back")
            steady(lambda: _holding(worker), "the worker to stop handing back", calm=0.5, timeout=20)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        for client in clients:  # each went back to the supervisor, and is served again
            client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        for client in clients:
            assert client.recv(65536).startswith(b"HTTP/1.1 200")
        assert _alive(worker) and server.workers() == [worker], server.output()[-3000:]
        assert "Traceback" not in server.output()
        for sock in parked + clients:
            sock.close()
    finally:
        server.stop()
        server.log.close()
