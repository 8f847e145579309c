"""An ASGI worker's last seconds before the supervisor's kill: what is due, and when (no I/O, no clock).

A stopping worker (SIGTERM) or a retiring one (its channel's EOF: a reload, a recycle) has
``graceful_timeout`` from then to exit; then the supervisor kills it with SIGKILL, and neither the app's
lifespan shutdown nor the ``worker_exit`` hook runs. An ASGI task that never returns (a WebSocket app
that neither receives nor sends, an HTTP call awaiting an upstream that never answers) would hold the
worker until that kill. So, as uvicorn does at the end of its ``timeout_graceful_shutdown``, the worker
ends what still runs shortly before the kill, in the last ``margin`` seconds, a quarter each:

    CLOSE   the open WebSocket sessions get their close frame (1001): an app that awaits receive()
            hears websocket.disconnect and returns by itself
    CANCEL  every call and session task still running is cancelled (an HTTP call whose response has
            not begun is answered 502 first)
    GIVE_UP the connections still held are closed, whatever their tasks do, and the worker goes on
            to the lifespan shutdown, which may take until the last quarter
    (then)  the worker's usual exit: the ``worker_exit`` hook, the logs flushed; and the slack for the
            supervisor's clock, which began a moment before the worker's

The margin is MARGIN_SHARE of graceful_timeout, at most MARGIN_MAX seconds: 4 s of the default 30 s,
0.6 s of a 3 s one. A larger one would cut sessions that had time left; a smaller one would leave a
lifespan shutdown (closing a database pool) too little. WSGI calls are threads, which cannot be
cancelled: a WSGI worker waits as before.
"""

from __future__ import annotations

import enum

MARGIN_SHARE = 0.2  # of graceful_timeout: the worker's last seconds, in which it ends what still runs
MARGIN_MAX = 4.0  # seconds at most: a long graceful_timeout leaves its calls all but the last 4 s


class Step(enum.IntEnum):
    """What is due, in order: each includes the ones before it."""

    SERVE = 0  # before the margin: the calls go on
    CLOSE = 1  # the WebSocket sessions get their close frame
    CANCEL = 2  # the tasks still running are cancelled
    GIVE_UP = 3  # what is still held is closed, and the worker exits


class Deadline:
    """When a stopping or retiring worker is killed, counted from when it learned of it (``begin``)."""

    def __init__(self, graceful_timeout: float) -> None:
        self.grace = graceful_timeout
        self.margin = min(MARGIN_MAX, graceful_timeout * MARGIN_SHARE)
        self.began = 0.0  # 0.0: serving, no deadline yet

    def begin(self, now: float) -> None:
        """The worker learned it stops or retires (the first look that sees it): its clock starts, once."""
        if not self.began:
            self.began = now

    @property
    def kill_at(self) -> float:
        return self.began + self.grace

    def step(self, now: float) -> Step:
        """The furthest step due at ``now``."""
        if not self.began:
            return Step.SERVE
        left = self.kill_at - now
        quarter = self.margin / 4
        if left > self.margin:
            return Step.SERVE
        if left > 3 * quarter:
            return Step.CLOSE
        if left > 2 * quarter:
            return Step.CANCEL
        return Step.GIVE_UP

    def lifespan_time(self, now: float) -> float:
        """How long the lifespan shutdown may take from ``now``: until the margin's last quarter, which is the
        exit's (a worker that exits at once, no look since it learned, begins its clock now)."""
        self.begin(now)
        return max(0.0, self.kill_at - self.margin / 4 - now)
