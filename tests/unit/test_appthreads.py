"""The app-thread pool on its own: grows to its ceiling, refuses beyond it, shrinks to its floor.
Real threads, no sockets; every wait is on a state, with a generous bound."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from sockact.worker.appthreads import AppThreads


def wait_until(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Calls:
    """Items are Events: a call holds its thread until its event is set."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lines: dict[threading.Event, int] = {}  # the line each call ran on
        self.done: list[threading.Event] = []
        self.alive: dict[int, bool] = {}
        self.in_call: set[int] = set()

    def call(self, line: int, item: threading.Event) -> int:
        with self.lock:
            assert line not in self.in_call, "two calls on one line at once"
            self.in_call.add(line)
            self.lines[item] = line
        item.wait(10)
        with self.lock:
            self.in_call.discard(line)
        return line

    def finished(self, item: threading.Event, line: int) -> None:
        with self.lock:
            self.done.append(item)

    def mark(self, line: int, alive: bool) -> None:
        with self.lock:
            assert self.alive.get(line, False) != alive, "a line taken twice, or left twice"
            self.alive[line] = alive

    def end(self, pool: AppThreads[threading.Event, int], items: list[threading.Event]) -> None:
        """Let ``items``' calls end, stop ``pool``, and wait for every line to be left."""
        for item in items:
            item.set()
        pool.stop()
        wait_until(lambda: not any(self.alive.values()), "every line left")

    def pool(self, lines: range, floor: int, idle: float = 30.0,
             start_every: float = 0.0) -> AppThreads[threading.Event, int]:
        return AppThreads(lines, floor, idle, self.call, self.finished, alive=self.mark, start_every=start_every)


def test_a_thread_starts_only_once_none_has_started_or_taken_work_for_start_every():
    calls = Calls()
    pool = calls.pool(range(1, 5), floor=0, start_every=1.0)
    pool.start()
    first = threading.Event()
    assert pool.submit(first) and pool.alive == 1  # nothing moved before: it starts
    assert not pool.submit(threading.Event())  # one started just now: the caller keeps it
    first.set()
    wait_until(lambda: pool.in_use == 0, "the first call done")
    wait_until(lambda: pool.start_in() == 0.0, "start_every over since the start")
    again = threading.Event()
    assert pool.submit(again)  # the idle thread takes it: no start needed
    assert not pool.submit(threading.Event()) and pool.alive == 1  # it was given work just now
    calls.end(pool, [again])


def test_while_every_thread_stays_in_its_call_the_pool_grows_one_thread_a_start_every():
    calls = Calls()
    pool = calls.pool(range(1, 5), floor=0, start_every=0.05)
    pool.start()
    items = [threading.Event() for _ in range(3)]
    assert pool.submit(items[0])
    for item in items[1:]:
        wait_until(lambda item=item: pool.submit(item), "a thread started for a call that waits")
    assert pool.alive == 3 and pool.in_use == 3
    calls.end(pool, items)


def test_it_grows_one_thread_per_waiting_call_up_to_the_ceiling_then_refuses():
    calls = Calls()
    pool = calls.pool(range(1, 5), floor=0)
    pool.start()
    assert pool.alive == 0
    items = [threading.Event() for _ in range(4)]
    for item in items:
        assert pool.submit(item)
    assert pool.in_use == 4 and pool.alive == 4
    assert not pool.submit(threading.Event())  # all four lines are in calls: the caller keeps it
    wait_until(lambda: len(calls.lines) == 4, "four calls running")
    assert sorted(calls.lines.values()) == [1, 2, 3, 4]  # each thread on a line of its own
    items[0].set()
    wait_until(lambda: calls.done == [items[0]], "the first call done")
    assert pool.in_use == 3
    again = threading.Event()
    assert pool.submit(again)  # the thread that went idle takes it: no fifth thread
    wait_until(lambda: again in calls.lines, "the call on the idle thread")
    assert pool.alive == 4 and calls.lines[again] == calls.lines[items[0]]
    calls.end(pool, [*items, again])


def test_threads_beyond_the_floor_exit_after_the_idle_timeout_and_their_lines_are_reused():
    calls = Calls()
    pool = calls.pool(range(0, 6), floor=2, idle=0.2)
    pool.start()
    wait_until(lambda: sum(calls.alive.values()) == 2, "the floor's two threads")
    items = [threading.Event() for _ in range(6)]
    for item in items:
        assert pool.submit(item)
    assert pool.alive == 6
    for item in items:
        item.set()
    wait_until(lambda: len(calls.done) == 6, "every call done")
    wait_until(lambda: pool.alive == 2, "the threads beyond the floor to exit", timeout=5)
    wait_until(lambda: sum(calls.alive.values()) == 2, "their lines cleared")
    time.sleep(0.5)  # more idle timeouts pass: the floor stays
    assert pool.alive == 2
    # Grown again, each new thread takes a free line: no line is held twice (Calls.mark checks).
    more = [threading.Event() for _ in range(6)]
    for item in more:
        assert pool.submit(item)
    wait_until(lambda: sum(1 for i in more if i in calls.lines) == 6, "six calls again")
    assert sorted(calls.lines[i] for i in more) == list(range(6))
    grown = [calls.lines[i] for i in more[2:]]  # the floor's two idle threads took the first two
    assert grown == sorted(grown)  # each new thread on the lowest free line
    for item in more:
        item.set()
    pool.stop()


def test_the_thread_idle_last_is_woken_first_so_the_others_can_time_out():
    calls = Calls()
    pool = calls.pool(range(0, 3), floor=0, idle=0.5)
    items = [threading.Event() for _ in range(3)]
    for item in items:
        pool.submit(item)
    wait_until(lambda: len(calls.lines) == 3, "three calls")
    for item in items:
        item.set()
        wait_until(lambda item=item: item in calls.done, "that call done")
    last = calls.lines[items[-1]]
    # A light load, one call at a time: always the same thread, while the other two time out.
    deadline = time.monotonic() + 10
    while pool.alive > 1 and time.monotonic() < deadline:
        item = threading.Event()
        item.set()
        assert pool.submit(item)
        wait_until(lambda item=item: item in calls.done, "the call done")
        assert calls.lines[item] == last
        time.sleep(0.02)
    assert pool.alive == 1
    pool.stop()


def test_each_item_is_assigned_its_line_before_its_thread_has_it():
    # The worker stamps the call on the line in assign(), so a request is never on no line; a call
    # must find its stamp already there, on the same line, whether its thread was idle or new.
    calls = Calls()
    assigned: dict[threading.Event, int] = {}

    def assign(line: int, item: threading.Event) -> None:
        with calls.lock:
            assert item not in calls.lines, "the call ran before its line was assigned"
            assigned[item] = line

    pool = AppThreads(range(1, 3), 1, 30.0, calls.call, calls.finished, alive=calls.mark, assign=assign)
    pool.start()  # one idle thread
    items = [threading.Event(), threading.Event()]  # the idle thread's, then a new thread's
    for item in items:
        assert pool.submit(item)
    assert not pool.submit(threading.Event())  # refused: nothing assigned
    wait_until(lambda: len(calls.lines) == 2, "both calls running")
    assert assigned == calls.lines and sorted(assigned.values()) == [1, 2]
    for item in items:
        item.set()
    pool.stop()


def test_a_pool_needs_a_line_and_a_floor_within_its_lines():
    with pytest.raises(ValueError):
        AppThreads(range(0), 0, 1.0, lambda line, item: None, lambda item, result: None)
    with pytest.raises(ValueError):
        AppThreads(range(2), 3, 1.0, lambda line, item: None, lambda item, result: None)
