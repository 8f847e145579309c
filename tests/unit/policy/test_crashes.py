"""Workers that keep crashing, and the worker pool that waits ever longer before it replaces them, with
no processes and no clock."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sockact.policy.crashes import MAX_DELAY, QUICK, SUMMARY_EVERY, Crashes
from sockact.policy.pool import Spawn, WorkerPool


def test_the_first_crash_is_said_in_full_and_replaced_at_once_the_next_quick_ones_wait_ever_longer():
    crashes = Crashes()
    first = crashes.crashed(lived=3600.0, now=0.0, reason="worker 1 killed by SIGSEGV during GET /x")
    assert (first.delay, first.quiet, first.say) == (0.0, False, "")
    delays = [crashes.crashed(lived=0.5, now=float(i), reason=f"worker {i} exited with code 1").delay
              for i in range(2, 10)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, MAX_DELAY, MAX_DELAY, MAX_DELAY]
    assert crashes.looping


def test_the_log_says_once_that_workers_keep_crashing_then_once_a_summary_interval_with_the_count_and_last_reason():
    crashes = Crashes()
    crashes.crashed(0.1, 0.0, "worker 1 exited with code 1 during GET /die")
    second = crashes.crashed(0.1, 1.0, "worker 2 exited with code 1 during GET /die")
    assert second.quiet and second.say.startswith("workers keep crashing soon after they start: 1 more since the "
                                                  "first (2 in 1s), the last: worker 2 exited with code 1 during "
                                                  "GET /die; each start now waits 1s")
    said = [crashes.crashed(0.1, 1.0 + t, f"worker {t} killed by SIGSEGV").say for t in range(1, 61)]
    assert [s for s in said if s] == [said[-1]]  # 60 crashes later, a minute on: one line more
    assert "60 more in the last 60s (62 in 61s), the last: worker 60 killed by SIGSEGV" in said[-1]
    assert crashes.crashed(0.1, 61.0 + SUMMARY_EVERY - 1, "worker 61").say == ""


def test_a_worker_that_lived_long_enough_ends_the_run_whether_it_crashes_or_serves_on():
    crashes = Crashes()
    crashes.crashed(0.1, 0.0, "worker 1")
    crashes.crashed(0.1, 1.0, "worker 2")
    # A worker that lived QUICK seconds and crashed starts a new run: in full, replaced at once.
    again = crashes.crashed(QUICK, 20.0, "worker 3")
    assert (again.delay, again.quiet) == (0.0, False) and not crashes.looping
    crashes.crashed(0.1, 21.0, "worker 4")
    assert crashes.looping
    # A worker started before the last crash proves nothing; one started after it, once it lived QUICK, does.
    assert crashes.ended(started=0.0, now=40.0) == ""
    assert crashes.ended(started=22.0, now=22.0 + QUICK - 0.1) == ""
    assert crashes.ended(started=22.0, now=22.0 + QUICK).startswith("workers serve again: a worker has lived 10s "
                                                                     "after 2 crashes in 1s (the last: worker 4)")
    assert not crashes.looping and not crashes.quiet(0.1)


@dataclass(frozen=True)
class Cfg:
    workers: int = 1
    timeout: float = 30.0
    graceful_timeout: float = 30.0


def _ready_worker(pool: WorkerPool, pid: int, now: float) -> None:
    (spawn,) = pool.tick(now)
    assert isinstance(spawn, Spawn)
    pool.spawned(pid, spawn.generation, now)
    pool.ready(pid, now)


def test_the_pool_replaces_a_crashed_worker_at_once_then_later_and_later_and_is_unhealthy_meanwhile(caplog):
    pool = WorkerPool(Cfg())
    pool.start(0.0)
    pool.spawned(1, 0, 0.0)
    pool.ready(1, 0.1)
    assert not pool.crash_quiet(1, 0.5)
    assert [type(a) for a in pool.exited(1, 1, 0.5, how="worker 1 exited with code 1")] == [Spawn]
    pool.spawned(2, 0, 0.5)
    pool.ready(2, 0.6)
    assert pool.crash_quiet(2, 1.0)
    with caplog.at_level(logging.ERROR, logger="sockact.pool"):
        assert pool.exited(2, None, 1.0, how="worker 2 killed by SIGSEGV during GET /x") == []
    assert [r.getMessage()[:44] for r in caplog.records] == ["workers keep crashing soon after they start: "[:44]]
    assert pool.crash_looping()  # no worker serves: the watchdog withholds its pings
    assert pool.tick(1.9) == []  # a second's wait
    _ready_worker(pool, 3, 2.0)
    assert not pool.crash_looping()  # one serves again
    pool.exited(3, 1, 2.5, how="worker 3 exited with code 1")
    assert pool.tick(4.4) == []  # two seconds' wait
    _ready_worker(pool, 4, 4.5)
    with caplog.at_level(logging.INFO, logger="sockact.pool"):
        pool.tick(4.5 + QUICK)
    assert "workers serve again" in caplog.records[-1].getMessage() and not pool.crash_looping()
    assert not pool.crash_quiet(4, 20.0)


def test_a_retired_or_aborted_worker_is_no_crash_and_a_reload_starts_afresh():
    pool = WorkerPool(Cfg())
    pool.start(0.0)
    for pid, now in ((1, 0.0), (2, 0.5), (3, 1.0)):  # each goes at once, asked to
        pool.spawned(pid, 0, now)
        pool.ready(pid, now)
        if pid == 3:
            pool.timed_out(pid, now + 0.1)  # stuck past timeout: SIGABRT, then SIGKILL
        else:
            pool.recycle(pid, now + 0.1)  # max_requests: retired
        assert not pool.crash_quiet(pid, now + 0.2)
        pool.exited(pid, None, now + 0.2)
    assert pool.crashes.run == 0
    for pid in (4, 5):
        pool.tick(2.0 + pid)
        pool.spawned(pid, 0, 2.0 + pid)
        pool.ready(pid, 2.0 + pid)
        pool.exited(pid, 1, 2.1 + pid)
    assert pool.crashes.looping and pool.spawn_after > 7.1
    pool.hup(Cfg(), None, 7.5)  # new code may not crash
    assert not pool.crashes.looping and pool.spawn_after == 0.0
