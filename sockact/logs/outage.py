"""A log that cannot be written (a full disk, a gone journal), told once as the failure begins and once as
it ends, not per line: a failure that flaps, a disk that keeps filling and freeing, is told at most once a
REPORT_INTERVAL, and its end only if its beginning was told. Each log says the two lines its own way: the
access log in the worker's error log (access.py), the error log's file on stderr (errorfile.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

REPORT_INTERVAL = 60.0  # seconds between two reports of a log that cannot be written or reopened


class Outage:
    """One way a log fails (writing, reopening). ``say(begins, text)`` tells a line (``begins``: the failure's,
    else its end's); ``begun`` takes the reason (%s), and ``count`` words the lines the failure touched for its
    end (None: the end says no count). Not thread-safe: its log calls it under its own lock."""

    __slots__ = ("begun", "count", "ended_text", "lost", "say", "told", "told_at")

    def __init__(self, begun: str, ended: str, say: Callable[[bool, str], None],
                 count: Callable[[int], str] | None = None) -> None:
        self.begun, self.ended_text = begun, ended  # the two lines' texts; the first takes the reason
        self.say = say
        self.count = count
        self.lost = 0  # lines the failure touched since it was told
        self.told = False  # whether this outage was told, so that its end is
        self.told_at = -REPORT_INTERVAL

    def failed(self, exc: BaseException, lines: int) -> None:
        if self.told:
            self.lost += lines
            return
        now = time.monotonic()
        if now - self.told_at >= REPORT_INTERVAL:
            self.told, self.told_at, self.lost = True, now, lines
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else repr(exc)
            self.say(True, self.begun % reason)

    def ended(self) -> None:
        """The log works again, after an outage that was told."""
        self.say(False, f"{self.ended_text}; {self.count(self.lost)}" if self.count else self.ended_text)
        self.told = False
