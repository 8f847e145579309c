"""An app that crashes its worker on every request (os._exit(), a segfault), hammered, against the real sockact:
each client still gets its 502, but the supervisor no longer forks as fast as requests arrive, the log says the
first crash in full and then that workers keep crashing, in one line, and the watchdog is withheld while no
worker serves. Before, each crash was replaced at once, with five lines of log."""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import http_get, need_module


def _info_and_above(output: str) -> list[str]:
    return [line for line in output.splitlines() if " DEBUG " not in line]


@pytest.mark.parametrize("path, how", [("/die", "exited with code 1"), ("/segfault", "killed by SIGSEGV")])
def test_a_worker_that_crashes_on_every_request_is_restarted_ever_later_and_said_once(start_sockact, path, how):
    server = start_sockact("testapps:exits", "--workers", "1", "--log-level", "debug", workers=1)
    deadline = time.monotonic() + 6
    answered = []
    while time.monotonic() < deadline:  # a client that hammers it, one request after the other
        answered.append(http_get(server.port, path, timeout=40)[0])
    assert set(answered) == {502}  # each client of a dead worker still gets its 502
    # At once, a fork a request: some 60 in six seconds. Now the wait doubles from a second on.
    starts = server.output().count(" started (generation 0)")
    assert len(answered) <= 6 and starts <= len(answered) + 1
    lines = _info_and_above(server.output())
    crash_lines = [line for line in lines if f"{how} before answering GET {path}: 502 Bad Gateway sent" in line]
    assert len(crash_lines) == 1, lines  # the first crash, in full
    summary = [line for line in lines if "workers keep crashing" in line]
    assert len(summary) == 1 and re.search(rf"the last: worker \d+ {how} during GET {path}; each start now waits 1s",
                                           summary[0]), lines
    assert len([line for line in lines if " started (generation 0)" in line]) == 2  # the first and its successor
    # The app serves what does not crash it, once the wait is over; a worker that lives ends the run.
    assert http_get(server.port, "/", timeout=40)[0] == 200
    if path == "/die":  # once is enough
        server.wait_for_log("workers serve again", timeout=45)
    assert len(server.workers()) == 1


def test_the_watchdog_is_withheld_while_workers_keep_crashing_and_none_serves(start_sockact, tmp_path: Path):
    need_module("systemd.daemon")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    pings: list[float] = []

    def listen() -> None:
        while True:
            try:
                data = notify.recv(4096)
            except OSError:
                return
            if b"WATCHDOG=1" in data:
                pings.append(time.monotonic())

    threading.Thread(target=listen, daemon=True).start()
    try:
        server = start_sockact("testapps:exits", "--workers", "1", activation=False, workers=1,
                               env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"})
        for _ in range(3):  # the third waits two seconds for its worker: no ping meanwhile
            assert http_get(server.port, "/die", timeout=40)[0] == 502
        server.wait_for_log("unhealthy: workers keep crashing and none serves; withholding watchdog pings")
        withheld = time.monotonic()
        assert http_get(server.port, "/", timeout=40)[0] == 200
        server.waiting(lambda: any(at > withheld for at in pings), "the pings to resume once a worker serves")
    finally:
        notify.close()
