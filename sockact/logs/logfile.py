"""What the access log and the error_logfile share as files a full disk may refuse: lines appended whole
or dropped, and an outage told once as it begins and once as it ends.

Each write(2) takes what the disk has room for. A line it refused is dropped, never written later once
there is room (the caller says what became of it: lost, or sent to stderr instead); a line the disk took
in part (it filled within the line) stays so, and the next write begins with a newline, so that the
lines after it stand whole rather than joined to its start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

REPORT_INTERVAL = 60.0  # seconds between two reports of a log that cannot be written or reopened


class Lines:
    """The lines a process appends to one log file; not thread-safe (its caller holds its own lock)."""

    __slots__ = ("cut", "lost")

    def __init__(self) -> None:
        self.cut = False  # the last write went in part: the next begins with a newline
        self.lost = 0  # the lines of the last write that did not go in whole

    def write(self, write: Callable[[memoryview], int], data: bytes) -> None:
        """Append ``data``, lines that each end with a newline, by ``write`` (os.write's contract): after a short
        write the rest, whose write then raises the reason. What did not go in is dropped."""
        view = memoryview(b"\n" + data if self.cut else data)
        size = len(view)
        try:
            while view:
                view = view[write(view):]
        finally:
            self.lost = bytes(view).count(b"\n")  # each line whose newline did not go in
            if len(view) != size:  # some of it went in: cut, unless all did
                self.cut = bool(view)


class Outage:
    """One way a log fails (writing, reopening), told once as it begins and once as it ends, not per line;
    a failure that flaps (a disk that keeps filling and freeing) is told at most once a REPORT_INTERVAL, and
    its end only if its beginning was. ``say(level, text)`` tells it: the error log (the access log's), or
    stderr (the error log's own); ``count`` words, for its end, the lines the failure touched (None: no count)."""

    __slots__ = ("begun", "count", "ended_text", "lost", "say", "told", "told_at", "where")

    def __init__(self, where: str, begun: str, ended: str, say: Callable[[int, str], None],
                 count: Callable[[int], str] | None = None) -> None:
        self.where = where  # what the lines begin with: "access log PATH"
        self.begun, self.ended_text = begun, ended  # the two lines' texts; the first takes the reason
        self.say = say
        self.count = count
        self.lost = 0  # lines the failure touched since it was told
        self.told = False  # whether this outage was told, so that its end is
        self.told_at = -REPORT_INTERVAL

    def failed(self, exc: Exception, lines: int) -> None:
        if self.told:
            self.lost += lines
            return
        now = time.monotonic()
        if now - self.told_at >= REPORT_INTERVAL:
            self.told, self.told_at, self.lost = True, now, lines
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else repr(exc)
            self.say(logging.ERROR, f"{self.where}: " + self.begun % reason)

    def ended(self) -> None:
        """The log works again, after an outage that was told."""
        said = f"{self.ended_text}; {self.count(self.lost)}" if self.count else self.ended_text
        self.say(logging.WARNING, f"{self.where}: {said}")
        self.told = False


def lines_lost(count: int) -> str:
    """How many lines an outage lost, in words: for 0, 1 and more."""
    if count == 0:
        return "no line was lost"
    return "1 line was lost" if count == 1 else f"{count} lines were lost"
