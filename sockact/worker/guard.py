"""A worker's helper thread (the monitor), kept running through a failure of its own.

The monitor is what hands back the connections of a worker whose loop is held by a call: one that
died with an exception would leave the worker serving without that guarantee, and without a word.
A failure is logged with its traceback, and the thread's loop begins again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger("sockact.worker")

RESTART_AFTER = 1.0  # seconds between a failure and the loop's new start: a failure that repeats logs once a second


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
