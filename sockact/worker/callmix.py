"""How a WSGI worker's calls have run lately, as its monitor judges them once a window.

Plain and clock-free: the monitor feeds it the time and the worker's count of served requests at each
look; the threads that run calls count the slow and the long ones in it (hints: a count lost to a race
between threads only delays a verdict by a window).
"""

from __future__ import annotations

# When at least one call in SLOW_SHARE lasted GROW_AFTER or more over the last HANDOFF_WINDOW, the loop
# thread hands the next window's requests to pool threads instead of serving them itself: while slow
# calls are common, it stays free to read, and a fast request does not wait for the monitor. A hand-off
# costs two thread switches per request, so a worker whose calls are short (a rare one made long by the
# scheduler) keeps serving them itself.
HANDOFF_WINDOW = 1.0
SLOW_SHARE = 50
# Long calls are common when at least one call in LOOK_SHARE is long, in this HANDOFF_WINDOW or the last:
# a worker of short calls meets one now and then (the scheduler, a collection) and must not pay for
# frequent looks, or for pool threads, because of it.
LOOK_SHARE = 200


class CallMix:
    """The current window's slow and long calls, and the verdicts of the last window that served any.

    A window begins with its first served request, not at the last verdict: a worker that served nothing
    for a while (between bursts, or a pause in traffic) keeps what it had judged, since traffic that comes
    back is the same app's, and a burst of slow calls must not first spend a window on the loop thread,
    its fast requests waiting for the monitor, before calls go to the pool again."""

    __slots__ = ("_requests", "_start", "hand_off", "long", "often", "slow")

    def __init__(self, now: float, requests: int = 0) -> None:
        self.slow = 0  # calls of GROW_AFTER or more in this window
        self.long = 0  # of those, the calls of RELAXED_LOOK or more
        self.hand_off = False  # slow calls were common: the loop thread gives calls to the pool
        self.often = False  # long calls were common: the monitor looks, and the pool grows, at GROW_AFTER
        self._start: float | None = now  # when this window began; None until a request is served in it
        self._requests = requests

    def long_common(self, requests: int) -> bool:
        """At least one call in LOOK_SHARE was long, in the last judged window or in this one so far."""
        return self.often or self.long * LOOK_SHARE > requests - self._requests

    def look(self, now: float, requests: int) -> None:
        """At each look of the monitor, with the worker's served requests so far: judge the window once it
        has served for HANDOFF_WINDOW."""
        calls = requests - self._requests
        if not calls:
            self._start = None  # nothing served since the last verdict: the window has not begun
        elif self._start is None:
            self._start = now  # the first look that finds a request served: it begins here
        elif now - self._start >= HANDOFF_WINDOW:
            self.hand_off = self.slow > 0 and self.slow * SLOW_SHARE >= calls
            self.often = self.long > 0 and self.long * LOOK_SHARE >= calls
            self._start, self._requests, self.slow, self.long = now, requests, 0, 0
