"""Request counts for the metrics: what each worker's app threads served, in shared memory.

Like the scoreboard (scoreboard.py), one anonymous MAP_SHARED mapping is made before the
first fork; each worker owns one slot, and each of its app threads one line of that slot (an
ASGI worker counts every call on its loop, in one line).
At the end of every app call the thread adds one to two integers (requests by listener,
method and status class, and the duration's histogram bucket) and the duration, in
microseconds, to a third: slots of a plain list of its own, copied to its line of the
mapping every few milliseconds by the worker's loop. No message, no lock, no prometheus
object: each line has one writer, and the supervisor only reads.

A WebSocket session is counted twice, never per message: one up on its line's open count when
the app accepts it, and at its end one to how it ended (WS_ENDS), the open count down and its
duration's bucket and sum if it had opened.

The supervisor sums the lines of the live workers when it is scraped, and when a worker
exits it folds that worker's lines into totals of its own (``retire``), so the counters
survive the death of the process that counted. Not its open sessions: they are over with
it, counted as ended ``lost``, so the open gauge sums the live workers alone.
"""

from __future__ import annotations

import array
import bisect
import mmap
from collections.abc import Sequence

from sockact.ipc.scoreboard import MAX_THREADS

# The methods counted by name; any other is counted as "other" (a client cannot grow the label set).
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other")
# Status classes; "none": the client left before any response was sent.
CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")
_METHOD_OFFSET = {m.encode(): i * len(CLASSES) for i, m in enumerate(METHODS[:-1])}
_OTHER_OFFSET = (len(METHODS) - 1) * len(CLASSES)
_bucket = bisect.bisect_left
# Upper bounds of the request duration histogram, in seconds: prometheus_client's defaults, with
# finer steps below 5 ms (where a fast app's calls fall) and room up to the default timeout.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# How a WebSocket session ended, the ``close`` label: the close code for the codes RFC 6455 (7.4.1) defines
# (1005: a close frame without a code; 1006: the client went away without one), "app" for the codes
# 3000-4999 (libraries' and apps' own), "other" for any other. One that never opened: "denied" (the app
# answered the handshake with an HTTP response of its own), "rejected" (the app closed it before accepting:
# a 403), "error" (the app failed, or returned, before it answered the handshake: a 500), or 1006 when the
# client left before the handshake was answered, 1001 when the worker drained first; "lost": its worker
# exited while it was open. A bounded set, whatever the client or the app send.
WS_CODES = (1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011)
WS_ENDS = (*(str(code) for code in WS_CODES), "app", "other", "denied", "rejected", "error", "lost")
_WS_CODE_INDEX = {code: i for i, code in enumerate(WS_CODES)}
WS_APP, WS_OTHER, WS_DENIED, WS_REJECTED, WS_ERROR, WS_LOST = range(len(WS_CODES), len(WS_ENDS))
# Upper bounds of the WebSocket session duration histogram, in seconds: from a tenth of a second to a day.
WS_DURATION_BUCKETS = (0.1, 1.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0, 43200.0, 86400.0)


def ws_end(opened: bool, code: int, denied: bool, rejected: bool, client_left: bool) -> int:
    """How a session ended, as an index in WS_ENDS: ``code`` is its close code if it ``opened`` (the app
    accepted it). One that did not: ``denied`` (a denial response went out, in part at least),
    ``rejected`` (the app closed it: a 403), ``client_left`` (the client went away before an answer); or
    else its worker drained first (``code`` 1001), or the app failed to answer (a 500)."""
    if opened:
        index = _WS_CODE_INDEX.get(code)
        if index is not None:
            return index
        return WS_APP if 3000 <= code < 5000 else WS_OTHER
    if denied:
        return WS_DENIED
    if rejected:
        return WS_REJECTED
    if client_left:
        return _WS_CODE_INDEX[1006]
    return _WS_CODE_INDEX[1001] if code == 1001 else WS_ERROR


_CELL = 8  # bytes: one unsigned 64-bit count


class Layout:
    """Where each count sits in a line, for ``listeners`` listeners.

    A line holds, per listener, len(METHODS) * len(CLASSES) request counts and
    len(DURATION_BUCKETS) + 1 bucket counts (the last one is +Inf), then the WebSocket sessions
    open, the sessions ended by how (WS_ENDS) and len(WS_DURATION_BUCKETS) + 1 bucket counts;
    after them, one request duration sum (microseconds) per listener, then one session duration
    sum per listener.
    """

    def __init__(self, listeners: int) -> None:
        self.listeners = listeners
        self.requests = len(METHODS) * len(CLASSES)
        self.buckets = len(DURATION_BUCKETS) + 1
        self.ws_buckets = len(WS_DURATION_BUCKETS) + 1
        self.ws_open = self.requests + self.buckets  # the WebSocket cells' place within a listener's
        self.stride = self.ws_open + 1 + len(WS_ENDS) + self.ws_buckets  # counts per listener
        self.counts = listeners * self.stride  # count cells per line
        self.cells = self.counts + 2 * listeners  # and the sums
        self.line_size = self.cells * _CELL

    def request_cell(self, listener: int, method: int, klass: int) -> int:
        return listener * self.stride + method * len(CLASSES) + klass

    def bucket_cell(self, listener: int, bucket: int) -> int:
        return listener * self.stride + self.requests + bucket

    def sum_cell(self, listener: int) -> int:
        return self.counts + listener

    def ws_open_cell(self, listener: int) -> int:
        return listener * self.stride + self.ws_open

    def ws_end_cell(self, listener: int, end: int) -> int:
        return listener * self.stride + self.ws_open + 1 + end

    def ws_bucket_cell(self, listener: int, bucket: int) -> int:
        return listener * self.stride + self.ws_open + 1 + len(WS_ENDS) + bucket

    def ws_sum_cell(self, listener: int) -> int:
        return self.counts + self.listeners + listener


class Tally:
    """The mapping, its slots (one per worker, same numbers as the scoreboard's) and the dead workers' totals."""

    def __init__(self, slots: int, listeners: int) -> None:
        self.layout = Layout(listeners)
        self.slot_size = MAX_THREADS * self.layout.line_size
        self._map = mmap.mmap(-1, slots * self.slot_size, flags=mmap.MAP_SHARED)
        self._cells = memoryview(self._map).cast("Q")
        self.retired = [0] * self.layout.cells  # what the workers that have exited counted

    # -- supervisor side

    def clear(self, slot: int) -> None:
        """Zero a slot before a new worker is forked onto it."""
        base = slot * self.slot_size
        self._map[base:base + self.slot_size] = bytes(self.slot_size)

    def read(self, slot: int, threads: int) -> list[int]:
        """A worker's cells (see Layout), summed over its app threads."""
        layout = self.layout
        cells = [0] * layout.cells
        for line in range(min(threads, MAX_THREADS)):
            start = (slot * self.slot_size + line * layout.line_size) // _CELL
            cells = [a + b for a, b in zip(cells, self._cells[start:start + layout.cells].tolist(), strict=True)]
        return cells

    def retire(self, slot: int, threads: int) -> None:
        """A worker exited: keep what it counted. The sessions it had open ended with it: ``lost``."""
        cells, layout = self.read(slot, threads), self.layout
        for listener in range(layout.listeners):
            open_cell = layout.ws_open_cell(listener)
            cells[layout.ws_end_cell(listener, WS_LOST)] += cells[open_cell]
            cells[open_cell] = 0
        self.retired = [a + b for a, b in zip(self.retired, cells, strict=True)]

    def total(self, live: Sequence[tuple[int, int]]) -> list[int]:
        """The cells of every worker ever: the retired totals plus the live ``(slot, threads)``."""
        cells = list(self.retired)
        for slot, threads in live:
            cells = [a + b for a, b in zip(cells, self.read(slot, threads), strict=True)]
        return cells

    # -- worker side

    def writer(self, slot: int, thread: int) -> TallyWriter:
        line = slot * self.slot_size + min(thread, MAX_THREADS - 1) * self.layout.line_size
        return TallyWriter(self._cells, line // _CELL, self.layout)

    def writers(self, slot: int, threads: int) -> list[TallyWriter]:
        """One writer per app thread. Threads past MAX_THREADS share the last one: a line must have
        one writer, or each flush would overwrite the other's counts."""
        own = [self.writer(slot, i) for i in range(min(threads, MAX_THREADS))]
        return own + [own[-1]] * (threads - len(own))

    def close(self) -> None:
        self._cells.release()
        self._map.close()


class TallyWriter:
    """One app thread's line: ``record`` once per request, ``flush`` now and then.

    ``record`` adds to a plain list of this process's own (three list slots per request);
    ``flush`` copies the list to the thread's line in the shared mapping, where the
    supervisor reads it. The worker's loop flushes every few milliseconds and at exit, so
    a worker killed outright loses only what it counted since its last flush.
    """

    __slots__ = ("_at", "_bases", "_cells", "_layout", "_requests", "_sums", "counts")

    def __init__(self, cells: memoryview, at: int, layout: Layout) -> None:
        self._cells = cells
        self._at = at  # the first cell of this thread's line
        self._layout = layout
        self.counts = [0] * layout.cells
        self._bases = [layout.request_cell(i, 0, 0) for i in range(layout.listeners)]
        self._requests = layout.requests
        self._sums = layout.counts

    def record(self, listener: int, method: bytes, status: int, seconds: float) -> None:
        klass = status // 100
        if klass > 5:
            klass = 0
        counts = self.counts
        base = self._bases[listener]
        counts[base + _METHOD_OFFSET.get(method, _OTHER_OFFSET) + klass] += 1
        counts[base + self._requests + _bucket(DURATION_BUCKETS, seconds)] += 1
        counts[self._sums + listener] += int(seconds * 1e6)

    def ws_opened(self, listener: int) -> None:
        """A WebSocket session on ``listener`` was accepted."""
        self.counts[self._layout.ws_open_cell(listener)] += 1

    def ws_ended(self, listener: int, end: int, seconds: float | None) -> None:
        """A session ended, how (an index in WS_ENDS, ``ws_end``); ``seconds``: its duration if it had opened
        (counted by ws_opened), None if it never did."""
        counts, layout = self.counts, self._layout
        counts[layout.ws_end_cell(listener, end)] += 1
        if seconds is not None:
            counts[layout.ws_open_cell(listener)] -= 1
            counts[layout.ws_bucket_cell(listener, _bucket(WS_DURATION_BUCKETS, seconds))] += 1
            counts[layout.ws_sum_cell(listener)] += int(seconds * 1e6)

    def flush(self) -> None:
        self._cells[self._at:self._at + len(self.counts)] = array.array("Q", self.counts)
