"""The CPU policy (``batch_scheduling``, sched(7)): SCHED_BATCH for the supervisor and each worker's loop,
the default policy again for the app threads a worker's pool starts.

Every new connection wakes two processes in turn: the supervisor to accept it, a worker to serve it.
Under the default policy each wake-up may preempt whatever runs on that CPU (a worker mid-request,
the supervisor mid-batch, the client's process on the same host), and the one cut into resumes
later with its caches cold. Under SCHED_BATCH the woken process takes an idle CPU, or waits for
the running one to sleep or use up its slice. The supervisor sets it before its first fork, so the
workers and their loops inherit it.

A pool thread is the other kind: it exists because calls wait (a database's answer, an upstream,
a sleep), and when one wait ends, one client waits on that thread alone for a short burst of work.
Under SCHED_BATCH that wake-up waited for whatever ran to use up its slice, on a busy host, and the
wait added to the call. So each pool thread goes back to the default policy as it starts, when
``batch`` set SCHED_BATCH here; a policy set from outside (systemd's CPUSchedulingPolicy=, chrt) is
kept, for every thread.
"""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger("sockact.supervisor")

_batched = False  # SCHED_BATCH is batch()'s doing, in this process or the one it was forked from


def batch(on: bool) -> None:
    """batch_scheduling: this process, and so each worker it forks, under SCHED_BATCH, unless a policy
    other than the default was set from outside (kept)."""
    global _batched
    if not on or os.sched_getscheduler(0) != os.SCHED_OTHER:
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))  # the nice value stays as it is
    except OSError as exc:  # a sandbox's filter, say: the default policy serves as well
        log.info("batch_scheduling: the CPU policy stays the default one (%s)", exc)
        return
    _batched = True


def for_pool_thread() -> None:
    """On a worker's pool thread, as it starts: the default policy again, if ``batch`` set SCHED_BATCH.
    Linux sets the calling thread's policy alone (pid 0), so the loop and the monitor keep theirs."""
    if _batched:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
