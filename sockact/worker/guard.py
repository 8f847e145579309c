"""A worker's helper thread (the monitor), kept running through a failure of its own; and the timer that
ends a worker its supervisor left behind.

The monitor is what hands back the connections of a worker whose loop is held by a call: one that
died with an exception would leave the worker serving without that guarantee, and without a word.
A failure is logged with its traceback, and the thread's loop begins again.

A supervisor killed outright (SIGKILL, a crash) leaves its workers the channel's EOF: each finishes
its calls and exits. A call stuck for good would keep its worker spinning forever, with nobody left
to kill it at ``timeout`` (under systemd the service's cgroup is cleaned up; run by hand it is not):
``end_if_orphaned`` gives the calls ``graceful_timeout``, as a stop would, then ends the worker.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger("sockact.worker")

RESTART_AFTER = 1.0  # seconds between a failure and the loop's new start: a failure that repeats logs once a second


def end_if_orphaned(supervisor: int, grace: float) -> Callable[[], None]:
    """What a worker does at its channel's EOF (``Carrier.on_retire``): start a timer that, after ``grace``
    seconds, ends the worker if its parent is no longer ``supervisor`` (a supervisor that retired it
    itself is still there, and kills a stuck call at ``timeout``)."""
    def check() -> None:
        if os.getppid() != supervisor:
            log.error("worker %d: its supervisor %d is gone, and its calls still run after graceful_timeout "
                      "(%g s); exiting", os.getpid(), supervisor, grace)
            os._exit(1)

    def start() -> None:
        timer = threading.Timer(grace, check)
        timer.name, timer.daemon = "sockact-orphaned", True
        timer.start()

    return start


def start_guarded(name: str, loop: Callable[[], None], done: Callable[[], bool]) -> threading.Thread:
    """Start a daemon thread named ``name`` that runs ``loop`` until it returns, or until ``done()`` after a
    failure; a failure is logged, at critical level with its traceback, and ``loop`` runs again."""
    def run() -> None:
        while True:
            try:
                loop()
                return
            except Exception:
                log.critical("worker %d: its %s thread failed, and starts again in %g s", os.getpid(), name,
                             RESTART_AFTER, exc_info=True)
            stop = threading.Event()
            if done() or stop.wait(RESTART_AFTER) or done():
                return

    thread = threading.Thread(target=run, name=f"sockact-{name}", daemon=True)
    thread.start()
    return thread
