"""The ASGI part of `make bench`: hello world with keep-alive, and WebSocket echo round trips.

The ASGI lineup (servers.asgi_lineup: sockact ``--interface asgi``, uvicorn with httptools and
uvloop, granian ``--interface asgi``, each with 2 workers, plus sockact serving the WSGI hello
world) is started after the WSGI scenarios, its rounds interleaved as theirs are; the same-run
WSGI row answers what the asyncio loop costs. Then one WebSocket client sends a message and
waits for its echo, again and again, for ``seconds``, against sockact and uvicorn in turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.load import ASGI_HELLO, rotated, run_wrk
from bench.servers import HOST, Fleet, Process, asgi_lineup

ECHO_MESSAGE = "x" * 32
ECHO_SERVERS = ("sockact", "uvicorn")


def echo_rate(port: int, seconds: float) -> dict[str, Any]:
    """WebSocket round trips per second of one client; {"error": ...} if the exchange failed."""
    from websockets.sync.client import connect  # in bench/.venv (bench/requirements.txt)

    done = 0
    try:
        with connect(f"ws://{HOST}:{port}/", open_timeout=10) as ws:
            began = time.monotonic()
            deadline = began + seconds
            while time.monotonic() < deadline:
                ws.send(ECHO_MESSAGE)
                if ws.recv(timeout=10) != ECHO_MESSAGE:
                    return {"error": "the echo differed from the message"}
                done += 1
            elapsed = time.monotonic() - began
    except Exception as exc:  # whatever the client library raises, the round is failed, not the run
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"round_trips": done, "per_s": done / elapsed}


def measure(fleet: Fleet, rounds: int, seconds: float, warm: float,
            wait_quiet: Callable[[list[Process]], None]) -> dict[str, Any]:
    """{"load": {server: wrk rounds}, "websocket": {server: echo rounds}}; the servers are stopped after."""
    started = {server.name: fleet.serve(server) for server in asgi_lineup()}
    procs = [proc for proc, _ in started.values()]
    try:
        for _, port in started.values():
            run_wrk(ASGI_HELLO, port, warm)
        load: dict[str, list[dict[str, Any]]] = {name: [] for name in started}
        websocket: dict[str, list[dict[str, Any]]] = {name: [] for name in ECHO_SERVERS if name in started}
        for n in range(rounds):
            for name in rotated(list(started), n):
                wait_quiet(procs)
                load[name].append(run_wrk(ASGI_HELLO, started[name][1], seconds))
        for n in range(rounds):
            for name in rotated(list(websocket), n):
                wait_quiet(procs)
                websocket[name].append(echo_rate(started[name][1], seconds))
    finally:
        for proc in procs:
            fleet.stop(proc)
    return {"load": load, "websocket": websocket}
