"""An ASGI worker that stops (TERM) or retires (a reload) while tasks of its app never return: shortly before the
supervisor's kill at graceful_timeout it closes their sessions (1001), cancels their tasks, answers the calls whose
response had not begun with a 502, then runs the app's lifespan shutdown and exits by itself (sockact/worker/
deadline.py), where the supervisor used to kill it with SIGKILL and the lifespan shutdown never ran."""

from __future__ import annotations

import re
import signal
import socket
import struct
from pathlib import Path
from typing import Any

from conftest import http_get
from test_asgi_limits import read_frame, ws_open
from test_metrics import start
from test_websocket_pings import CLOSE, PING

GRACE = ("--graceful-timeout", "3")


def call(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def answer(sock: socket.socket) -> bytes:
    """All the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


def start_stuck(start_sockact, ws_library: str, shutdown: Path, **env: str) -> tuple[Any, int, int]:
    """sockact serving asgiapps:stuck with one worker: (the server, the api port, the worker's pid)."""
    server, api, _ = start(start_sockact, "--ws", ws_library, *GRACE, workers=1, app="asgiapps:stuck",
                           env={"STUCK_SHUTDOWN_FILE": str(shutdown), **env})
    (worker,) = server.workers()
    return server, api, worker


STUCK_CALLS = ("/hang", "/stubborn", "/cut")


def open_stuck(server, api: int) -> tuple[socket.socket, list[socket.socket]]:
    """A session and a call to each of STUCK_CALLS of asgiapps:stuck, each waiting in its app for good."""
    ws = ws_open(api)
    server.wait_for_log("STUCK WS ACCEPTED")
    calls = [call(api, path) for path in STUCK_CALLS]
    for path in STUCK_CALLS:
        server.wait_for_log(f"STUCK CALL {path}")
    return ws, calls


def check_ended(ws: socket.socket, calls: list[socket.socket]) -> None:
    """The session got its close frame then the FIN; each call not begun a 502 with Connection: close, the one begun
    its start, cut (no last chunk), then the FIN."""
    while (got := read_frame(ws))[0] == PING:
        pass
    assert got == (CLOSE, struct.pack("!H", 1001)), got
    assert ws.recv(100) == b""
    ws.close()
    *unbegun, begun = calls
    for sock in unbegun:
        said = answer(sock)
        assert said.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), said
        assert b"\r\nconnection: close\r\n" in said.lower(), said
    said = answer(begun)
    assert said.startswith(b"HTTP/1.1 200 OK\r\n") and said.endswith(b"7\r\npartial\r\n"), said


def check_exited_by_itself(server, worker: int, shutdown: Path, cancelled: int = 4) -> str:
    """The worker cancelled ``cancelled`` tasks, ran the lifespan shutdown and exited with 0, unkilled."""
    said = server.wait_for_log(f"worker {worker} exited with code 0")
    if cancelled:
        assert f"worker {worker}: {cancelled} tasks still running" in said, said
    assert "killing it" not in said and "application error" not in said, said  # no cancellation said as the app's
    assert shutdown.read_text() == f"{worker}\n"  # the lifespan shutdown ran
    return said


def test_a_stop_cancels_what_never_returns_and_the_worker_exits_by_itself(start_sockact, ws_library, tmp_path):
    server, api, worker = start_stuck(start_sockact, ws_library, tmp_path / "shutdown")
    ws, calls = open_stuck(server, api)
    server.send(signal.SIGTERM)
    check_ended(ws, calls)
    assert server.proc.wait(15) == 0
    check_exited_by_itself(server, worker, tmp_path / "shutdown")


def test_a_reload_cancels_what_never_returns_and_the_old_worker_exits_by_itself(start_sockact, ws_library,
                                                                                tmp_path):
    server, api, old = start_stuck(start_sockact, ws_library, tmp_path / "shutdown")
    ws, calls = open_stuck(server, api)
    server.send(signal.SIGHUP)
    server.wait_for_log("reload done")
    check_ended(ws, calls)
    server.waiting(lambda: old not in server.workers(), "the old worker gone", timeout=10)
    check_exited_by_itself(server, old, tmp_path / "shutdown")
    assert http_get(api, "/")[0] == 200  # the new worker serves


def test_a_lifespan_shutdown_that_never_ends_is_cut_before_the_kill(start_sockact, tmp_path):
    # It may take until the margin's last quarter, not graceful_timeout from the worker's EOF, which the kill beat.
    server, _, worker = start_stuck(start_sockact, "auto", tmp_path / "shutdown", STUCK_SHUTDOWN_HANGS="1")
    server.send(signal.SIGTERM)
    assert server.proc.wait(15) == 0
    said = check_exited_by_itself(server, worker, tmp_path / "shutdown", cancelled=0)
    took = re.search(r"lifespan shutdown did not finish in ([0-9.]+)s", said)
    assert took is not None and float(took[1]) < 3.0, said


def test_a_wsgi_call_cannot_be_cancelled_so_a_reload_kills_its_old_worker_at_graceful_timeout(start_sockact,
                                                                                             tmp_path):
    # A WSGI call is a thread, which nothing can cancel: the retired worker waits for it, and graceful_timeout after
    # its retirement the supervisor kills it (policy/pool.py), its client answered 502, where it lived on for good.
    started = tmp_path / "started"
    server, api, _ = start(start_sockact, "--graceful-timeout", "2", workers=1, app="testapps:slow")
    (old,) = server.workers()
    sock = call(api, f"/slow?s=600&started={started}")
    server.waiting(started.exists, "the call in its app")
    server.send(signal.SIGHUP)
    server.wait_for_log("reload done")
    said = answer(sock)
    assert said.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), said
    assert f"worker {old} did not finish its calls within graceful_timeout (2s) of its retirement; killing it" \
        in server.output()
    assert http_get(api, "/")[0] == 200
