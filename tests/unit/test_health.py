"""health.Health reading a real scoreboard (shared memory, no process) for fake workers, and gating a
fake notifier's WATCHDOG= and STATUS= by the clock the test gives it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from sockact.ipc.scoreboard import Scoreboard, SlotWriter
from sockact.supervisor.health import STATUS_INTERVAL, Health

TIMEOUT = 30.0


class Notifier:
    """What Health uses of notify.Notifier: the watchdog's interval, and what was sent."""

    def __init__(self, watchdog_interval: float | None = None) -> None:
        self.watchdog_interval = watchdog_interval
        self.sent: list[str] = []

    def watchdog(self) -> None:
        self.sent.append("WATCHDOG=1")

    def status(self, text: str) -> None:
        self.sent.append(f"STATUS={text}")


@pytest.fixture
def board() -> Iterator[Scoreboard]:
    board = Scoreboard(4)
    yield board
    board.close()


def worker(board: Scoreboard, pid: int, threads: int = 2) -> SimpleNamespace:
    return SimpleNamespace(pid=pid, slot=board.allocate(), threads=threads, requests=0)


def line(board: Scoreboard, w: SimpleNamespace, thread: int) -> SlotWriter:
    return board.writer(w.slot, thread)


def test_busy_counts_the_calls_in_flight_in_every_worker(board):
    a, b = worker(board, 1), worker(board, 2)
    health = Health(board, {1: a, 2: b}, Notifier())  # type: ignore[arg-type]
    assert health.busy() == 0
    line(board, a, 0).begin(b"GET /a")
    line(board, a, 1).begin(b"GET /b")
    line(board, b, 0).begin(b"GET /c")
    assert health.busy() == 3
    line(board, a, 1).end()
    assert health.busy() == 2


def test_threads_counts_the_wsgi_app_threads_alive_in_a_call_and_waiting(board):
    a, b = worker(board, 1, threads=3), worker(board, 2, threads=3)
    health = Health(board, {1: a, 2: b}, Notifier())  # type: ignore[arg-type]
    for w, alive in ((a, 3), (b, 2)):
        for thread in range(alive):
            line(board, w, thread).alive(True)
    line(board, a, 0).begin(b"GET /")
    assert health.threads() == (1, 4)


def test_requests_are_the_ones_last_read_for_the_workers_alive(board):
    a = worker(board, 1)
    health = Health(board, {1: a}, Notifier())  # type: ignore[arg-type]
    writer = line(board, a, 0)
    for _ in range(3):
        writer.begin(b"GET /")
        writer.end()
    assert health.requests() == 0  # not read yet
    list(health.overdue(time.monotonic(), TIMEOUT))
    assert health.requests() == 3


@pytest.mark.parametrize(("call", "beat", "later", "timeout", "overdue"), [
    (False, False, TIMEOUT + 1, TIMEOUT, False),  # booting: no call, no beat yet
    (True, False, 1.0, TIMEOUT, False),  # a call within its timeout
    (True, False, TIMEOUT + 1, TIMEOUT, True),  # stuck: a call past its timeout
    (True, True, TIMEOUT + 1, 0.0, False),  # timeout 0: never
    (False, True, 1.0, TIMEOUT, False),  # the loop beat a second ago
    (False, True, TIMEOUT + 1, TIMEOUT, True),  # frozen: the loop has not beaten for the timeout
])
def test_overdue_is_a_worker_with_a_call_past_timeout_or_a_loop_that_stopped_beating(board, call, beat, later,
                                                                                      timeout, overdue):
    w, other = worker(board, 1), worker(board, 2)
    health = Health(board, {1: w, 2: other}, Notifier())  # type: ignore[arg-type]
    writer = line(board, w, 0)
    if beat:
        writer.beat()
    if call:
        writer.begin(b"GET /slow")
    now = time.monotonic() + later  # the clock moves on instead of the test waiting
    assert [found.pid for found, _ in health.overdue(now, timeout)] == ([1] if overdue else [])


def test_watchdog_pings_at_its_interval_while_healthy_and_is_withheld_with_one_warning_while_not(board, caplog):
    notifier = Notifier(watchdog_interval=10.0)
    health = Health(board, {}, notifier)  # type: ignore[arg-type]
    pinged_at = []
    with caplog.at_level(logging.WARNING, logger="sockact.supervisor"):
        for now, healthy in ((0.0, True), (5.0, True), (10.0, True), (20.0, False), (25.0, False), (30.0, False),
                             (31.0, True)):
            pings = health.pings
            health.report(now, healthy, "ok")
            if health.pings > pings:
                pinged_at.append(now)
    assert pinged_at == [0.0, 10.0, 31.0] and notifier.sent.count("WATCHDOG=1") == 3
    assert [r.getMessage() for r in caplog.records] == [
        "unhealthy: a worker is stuck past its timeout; withholding watchdog pings"]


def test_without_a_watchdog_no_ping_is_sent(board):
    notifier = Notifier(watchdog_interval=None)
    Health(board, {}, notifier).report(0.0, True, "ok")  # type: ignore[arg-type]
    assert notifier.sent == ["STATUS=ok"]


def test_status_is_sent_at_most_once_per_interval(board):
    notifier = Notifier()
    health = Health(board, {}, notifier)  # type: ignore[arg-type]
    for now, text in ((0.0, "a"), (STATUS_INTERVAL / 2, "b"), (STATUS_INTERVAL, "c"), (STATUS_INTERVAL * 1.5, "d")):
        health.report(now, True, text)
    assert notifier.sent == ["STATUS=a", "STATUS=c"]
