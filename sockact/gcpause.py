"""Automatic garbage collection, paused while a command starts.

A start makes some 25,000 objects (modules, classes, functions, the settings) that live as long
as the process. Collections among them while they are made free almost nothing, and cost a cold
start about a tenth of its imports. So the entry point (``sockact/__main__.py``) pauses them, and
a serving start resumes them just before its first fork (with preload, before the app's import),
after moving what it made out of the collector's reach (``gc.freeze()``, CPython's advice for a
process that forks): no later collection, the supervisor's or a worker's, scans those objects
again, and the workers' copies of their pages stay shared. Pausing sets the threshold to 0 rather
than calling ``gc.disable()``, so a preloaded app that disables the collector itself keeps it
disabled.
"""

from __future__ import annotations

import gc

_paused: list[tuple[int, ...]] = []  # the thresholds to restore, while paused


def pause() -> None:
    if not _paused:
        _paused.append(gc.get_threshold())
        gc.set_threshold(0)


def resume() -> None:
    """Freeze what was made while paused, and collect again from here on; nothing if not paused."""
    if _paused:
        gc.freeze()
        gc.set_threshold(*_paused.pop())
