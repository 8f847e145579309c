"""Log lines a client can cause, kept from flooding the log: per kind of line, the first BURST in an
interval are logged, the rest counted, and one summary line says how many were left out.

A client alone can make some lines once a connection or a request (a refused PROXY header, a body too
slow, a WebSocket protocol error, a reader that takes nothing). journald limits each unit (10,000
lines in 30 s by default, per priority group) and, past that, drops *every* line of the unit in the
group until the interval ends: a flood of such warnings would hide the tracebacks and the start and
stop lines an operator needs, and format and send a line a connection meanwhile.

Contract:
- ``LineLimit`` is the decision, sans-I/O: fed a kind and the time (a monotonic clock the caller
  reads), it says whether to log the line, and when an interval with lines left out has ended, how
  many were left out. A kind's interval begins at its first line; the summary is due at the first line
  of that kind after it ends, or at ``due(now)`` (each worker loop's timer tick), whichever comes
  first: the kernel's ``___ratelimit()`` ("N callbacks suppressed") does the former alone, which
  never says how a flood ended.
- ``Lines`` is the thin part that logs: it reads the clock, and writes the summaries through the
  logger and at the level of the kind's lines.
- Each process has its own (``WORKER``, made before the fork, is each worker's own copy once it has
  forked): the bound is per worker. The supervisor's acceptor keeps its own, one line per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

# The first BURST lines of a kind in INTERVAL seconds are logged. The Linux kernel's printk_ratelimit()
# allows 10 in 5 s; journald, 10,000 in 30 s for a whole unit. With the eight kinds below and 16
# workers, sockact's worst is 8 x 16 x (10 + 1 summary) lines in 10 s: about 4,200 in 30 s, well under
# journald's limit, with room for the lines that matter. Ten show what the lines look like and from
# which clients; the summary says how many more.
BURST = 10
INTERVAL = 10.0

# The kinds of line a client can cause, each the name its summary gives it. Both runners log these.
PROXY_REFUSED = "refused PROXY header"
HEALTH_UNREAD = "health answers not read"
SLOW_READER = "response not taken in time"
SLOW_BODY = "request body too slow"
NOT_SPOOLED = "request body not spooled"
NO_RESPONSE = "no response to a client that left"
WS_PROTOCOL = "WebSocket protocol error"
FDS_LOST = "connections lost on their way in"


class _Window:
    """One kind's interval: when it began, the lines logged in it, those left out."""

    __slots__ = ("began", "left_out", "logged")

    def __init__(self, began: float) -> None:
        self.began = began
        self.logged = 0
        self.left_out = 0


class LineLimit:
    """Per kind: the first ``burst`` lines in ``interval`` seconds pass, the rest are counted."""

    def __init__(self, burst: int = BURST, interval: float = INTERVAL) -> None:
        self.burst = burst
        self.interval = interval
        self._windows: dict[str, _Window] = {}

    def admit(self, kind: str, now: float) -> tuple[bool, int]:
        """Whether to log a line of ``kind`` at ``now``, and how many lines of that kind the interval that
        ended before it left out (0 mostly; said first, in the summary)."""
        window = self._windows.get(kind)
        left_out = 0
        if window is None or now - window.began >= self.interval:
            left_out = window.left_out if window is not None else 0
            window = self._windows[kind] = _Window(now)
        if window.logged < self.burst:
            window.logged += 1
            return True, left_out
        window.left_out += 1
        return False, left_out

    @property
    def counting(self) -> bool:
        """Some kind has lines in an interval (else nothing can be due)."""
        return bool(self._windows)

    def due(self, now: float, every: bool = False) -> list[tuple[str, int]]:
        """The kinds whose interval has ended with lines left out, and how many (``every``: each interval
        with lines left out, ended or not, as a process exits). Ended intervals are forgotten."""
        ended = [kind for kind, window in self._windows.items() if every or now - window.began >= self.interval]
        return [(kind, left_out) for kind in ended if (left_out := self._windows.pop(kind).left_out)]


def summary(kind: str, left_out: int, seconds: float) -> str:
    """The line that stands for the lines of ``kind`` left out."""
    return f"{kind}: ... and {left_out:,} more like this in the last {seconds:g} s, not logged"


class Lines:
    """Lines a client can cause, logged through a LineLimit: ``log(kind, logger, level, msg, *args)``."""

    def __init__(self, limit: LineLimit | None = None) -> None:
        self.limit = limit or LineLimit()
        self._said: dict[str, tuple[logging.Logger, int]] = {}  # kind -> where its summary goes
        # A WSGI worker's app threads log some of these lines while its loop asks what is due: the decisions
        # are taken one at a time (a kind added while due() went through them would fail it); lines are
        # logged outside the lock.
        self._lock = threading.Lock()

    def log(self, kind: str, logger: logging.Logger, level: int, msg: str, *args: Any, now: float | None = None,
            **kwargs: Any) -> None:
        """``logger.log(level, msg, *args, **kwargs)``, unless it is one too many of ``kind``; ``now``: the
        caller's clock (time.monotonic() unless given)."""
        if not logger.isEnabledFor(level):
            return  # a line nobody would see leaves nothing out either
        with self._lock:
            self._said[kind] = logger, level
            logged, left_out = self.limit.admit(kind, time.monotonic() if now is None else now)
        if left_out:
            self._summary(kind, left_out)
        if logged:
            logger.log(level, msg, *args, **kwargs)

    def due(self, now: float, every: bool = False) -> None:
        """The summaries due at ``now`` (``every``: all of them, as the process exits), logged."""
        if self.limit.counting:  # most ticks: no such line came in the last interval
            with self._lock:
                ended = self.limit.due(now, every)
            for kind, left_out in ended:
                self._summary(kind, left_out)

    def _summary(self, kind: str, left_out: int) -> None:
        logger, level = self._said[kind]
        logger.log(level, "%s", summary(kind, left_out, self.limit.interval), extra={"SOCKACT_LEFT_OUT": left_out})


# Each worker's: its runners and their connections log through it; made here, before any fork, and
# used only in the workers.
WORKER = Lines()
