"""Workers that keep crashing: how long the next start waits, and what the log says. Pure: no clock.

A worker in service that dies unasked (a segfault, an app's os._exit(), the kernel's OOM killer)
is replaced at once the first time. When workers keep dying soon after their start, a crash on
every request say, each restart waits longer than the last, up to MAX_DELAY: at once, the
supervisor forked as fast as requests arrived, and logged five lines a crash. gunicorn respawns
at once, forever; uWSGI sleeps two seconds (forkbomb-delay) once more workers than it has died
within its check interval, and wants a worker to live ten seconds (min-worker-lifetime); systemd
stops a unit at StartLimitBurst= and, since 254, grows RestartSec= in RestartSteps=.

Rules:
- A worker that lived QUICK seconds or more before it crashed begins a new run of crashes: its
  replacement starts at once, and its crash is logged in full.
- Each further crash of a worker that lived less than that is quiet (the caller logs its lines at
  DEBUG) and delays the next start: FIRST_DELAY, doubled at each crash, up to MAX_DELAY.
- The log says that workers keep crashing at the run's second crash, then at most once every
  SUMMARY_EVERY seconds: how many crashed since, the last reason, and the delay.
- The run ends once a worker started after its last crash has lived QUICK seconds (ended(),
  said once), or at a reload: new code may not crash.
"""

from __future__ import annotations

from dataclasses import dataclass

QUICK = 10.0  # seconds a worker must live for its crash not to count as soon after its start (uWSGI's 10)
FIRST_DELAY = 1.0  # seconds before the start that follows a run's second crash
MAX_DELAY = 30.0  # the longest wait between a crash and the next start
SUMMARY_EVERY = 60.0  # seconds between two "workers keep crashing" lines


@dataclass(frozen=True, repr=False)
class Crash:
    """What one crash changes: how long the next start waits, whether its own lines are quiet, and the
    line the log gets now, if any."""

    delay: float
    quiet: bool
    say: str = ""


class Crashes:
    """One run of crashes at a time; see the module docstring."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """No run of crashes: a reload, or a worker that lived long enough after the last crash."""
        self.run = 0  # crashes in the current run; 0: none
        self.began = 0.0  # when the run's first crash came
        self.last_at = 0.0  # when its last crash came
        self.last_reason = ""
        self.unsaid = 0  # crashes since the log last said so
        self.said_at = 0.0
        self.delay = 0.0  # the wait before the start after the last crash

    def quiet(self, lived: float) -> bool:
        """Whether a crash of a worker that lived ``lived`` seconds would be quiet: one more of a run."""
        return bool(self.run) and lived < QUICK

    def crashed(self, lived: float, now: float, reason: str) -> Crash:
        """A worker that lived ``lived`` seconds crashed at ``now``, for ``reason`` ("worker 12 killed by
        SIGSEGV during GET /x")."""
        quiet = self.quiet(lived)
        if not quiet:
            self.clear()  # a new run
            self.began = now
        self.run += 1
        self.last_at, self.last_reason = now, reason
        self.delay = 0.0 if self.run == 1 else min(MAX_DELAY, FIRST_DELAY * 2 ** (self.run - 2))
        if not quiet:
            return Crash(0.0, False)
        self.unsaid += 1
        if self.run > 2 and now - self.said_at < SUMMARY_EVERY:
            return Crash(self.delay, True)
        since = "since the first" if self.run == 2 else f"in the last {now - self.said_at:.0f}s"
        say = (f"workers keep crashing soon after they start: {self.unsaid} more {since} "
               f"({self.run} in {now - self.began:.0f}s), the last: {reason}; each start now waits "
               f"{self.delay:g}s (up to {MAX_DELAY:g}s), and the crashes' own lines are left out "
               f"until a worker lives {QUICK:g}s")
        self.unsaid, self.said_at = 0, now
        return Crash(self.delay, True, say)

    def ended(self, started: float, now: float) -> str:
        """A worker started at ``started`` is alive at ``now``: once it has lived QUICK seconds after the run's
        last crash, the run ends, and the line that says so if the log said it began ("" otherwise)."""
        if not self.run or started < self.last_at or now - started < QUICK:
            return ""
        say = (f"workers serve again: a worker has lived {QUICK:g}s after {self.run} crashes in "
               f"{self.last_at - self.began:.0f}s (the last: {self.last_reason})" if self.looping else "")
        self.clear()
        return say

    @property
    def looping(self) -> bool:
        """Whether workers keep crashing: a run has had its second crash."""
        return self.run >= 2
