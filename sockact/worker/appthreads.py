"""A worker's app threads: a pool that grows on demand between a floor and a ceiling.

The worker's loop gives each ready request to ``submit``: the thread that went idle last
takes it, or, when none is idle and the pool is below its ceiling, a new thread is started
for it. ``submit`` answers False when every thread is in a call: the request waits, and the
loop's stall hand-back takes over from there. A new thread starts only once ``start_every`` has
passed with no thread started or given work: a burst of waiting requests whose calls are short
is served by the threads that free up again at once, not by a thread each (a thread started idles
until its timeout, and every call handed over costs two thread switches); while calls are slow and
every thread stays in its call, the pool grows one thread a ``start_every``. A thread beyond the
floor that has waited ``idle_timeout`` for work exits.

Each thread owns one line (an index into the worker's scoreboard and tally lines) for its
life, so every call, on whichever thread, has its own line for ``timeout`` and the 502/504s;
a line is handed to another thread only after its owner has left it. The most recently idle
thread is woken first (a stack, not a queue): under a light load the same few threads serve,
and the others reach their idle timeout instead of taking turns forever.

No sockets here: the caller's ``call`` serves one item on a line, and ``done`` tells the
loop it is over; a thread is idle again before ``done`` runs, so the loop that reacts to
``done`` by submitting the next request finds it free.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger("sockact.worker")

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()  # put in an idle thread's inbox: exit


class _Thread:
    __slots__ = ("inbox", "line", "thread")

    def __init__(self, line: int) -> None:
        self.line = line
        self.inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None


class AppThreads(Generic[T, R]):
    """Threads that run ``call(line, item)`` for submitted items, then ``done(item, result)``.

    ``lines``: the lines the pool may use, one per thread (so ``len(lines)`` is the ceiling);
    ``floor``: the threads started at once and never ended for idleness; ``start_every``: how long
    ``submit`` waits, since a thread last started or was given work, before it starts another.
    """

    def __init__(self, lines: Sequence[int], floor: int, idle_timeout: float, call: Callable[[int, T], R],
                 done: Callable[[T, R], None], alive: Callable[[int, bool], None] | None = None,
                 assign: Callable[[int, T], object] | None = None, start_every: float = 0.0) -> None:
        if not 0 <= floor <= len(lines) or not lines:
            raise ValueError("need 0 <= floor <= len(lines), and at least one line")
        self.ceiling = len(lines)
        self.floor = floor
        self.idle_timeout = idle_timeout
        self.start_every = start_every
        self._call = call
        self._done = done
        self._alive = alive  # told when a thread takes (True) or leaves (False) its line
        self._assign = assign  # told, in submit(), which line an item goes to, before its thread has it
        self._lock = threading.Lock()  # guards what follows: the loop submits, the threads go idle or exit
        self._free = sorted(lines, reverse=True)  # lines no thread owns; the lowest is taken first
        self._idle: list[_Thread] = []  # waiting for work; the last one went idle most recently
        self._threads: list[_Thread] = []  # alive
        self._stopping = False
        # time.monotonic() when a thread last started or was given work (one that comes free is given the
        # next waiting request at once, if any)
        self._moved = -float("inf")
        self.in_use = 0  # threads in a call

    @property
    def alive(self) -> int:
        return len(self._threads)

    def start(self) -> None:
        """Start the floor's threads, idle."""
        for _ in range(self.floor):
            with self._lock:
                me = self._new()
                self._idle.append(me)
            self._launch(me, None)

    def submit(self, item: T) -> bool:
        """Give ``item`` to an idle thread, or to a new one below the ceiling unless a thread started or was
        given work less than ``start_every`` ago; False otherwise (the caller keeps it)."""
        with self._lock:
            if self._idle:
                me = self._idle.pop()
                self._moved = time.monotonic()
                self.in_use += 1
                if self._assign is not None:
                    self._assign(me.line, item)
                me.inbox.put(item)
                return True
            if not self._free or self._stopping:
                return False
            now = time.monotonic()
            if now - self._moved < self.start_every:
                return False
            self._moved = now
            me = self._new()
            self.in_use += 1
        if self._assign is not None:
            self._assign(me.line, item)
        self._launch(me, item)
        return True

    def start_in(self) -> float | None:
        """Seconds until ``submit`` may start a thread if no thread is given work meanwhile (0.0: now); None when the
        pool is at its ceiling."""
        with self._lock:
            if self._stopping or not self._free:
                return None
            return max(0.0, self._moved + self.start_every - time.monotonic())

    def stop(self, timeout: float = 1.0) -> None:
        """Every thread exits once its call, if any, is over; waits up to ``timeout`` for each."""
        with self._lock:
            self._stopping = True
            for me in self._idle:
                me.inbox.put(_STOP)
            self._idle.clear()
            threads = list(self._threads)
        for me in threads:
            if me.thread is not None:
                me.thread.join(timeout)

    # -- the threads

    def _new(self) -> _Thread:
        """A thread's record, on the lowest free line (under the lock)."""
        me = _Thread(self._free.pop())
        self._threads.append(me)
        return me

    def _launch(self, me: _Thread, first: T | None) -> None:
        me.thread = threading.Thread(target=self._run, args=(me, first), name=f"sockact-app-{me.line}",
                                     daemon=True)
        me.thread.start()

    def _run(self, me: _Thread, item: object) -> None:
        if self._alive is not None:
            self._alive(me.line, True)
        try:
            while True:
                if item is not None:
                    result = self._call(me.line, item)  # type: ignore[arg-type]
                    with self._lock:
                        self.in_use -= 1
                        stopping = self._stopping
                        if not stopping:
                            self._idle.append(me)  # idle before the loop hears of it: its next request may come here
                    self._done(item, result)  # type: ignore[arg-type]
                    if stopping:
                        return
                item = self._next(me)
                if item is _STOP:
                    return
        finally:
            with self._lock:
                self._leave(me)
            # The line is cleared before another thread may take it.
            if self._alive is not None:
                self._alive(me.line, False)
            with self._lock:
                self._free.append(me.line)
                self._free.sort(reverse=True)

    def _leave(self, me: _Thread) -> None:
        """Out of the books (under the lock): it counts no more towards the floor."""
        with contextlib.suppress(ValueError):
            self._threads.remove(me)
        with contextlib.suppress(ValueError):
            self._idle.remove(me)

    def _next(self, me: _Thread) -> object:
        """The next item for an idle thread; _STOP when it should exit (idle too long beyond the floor)."""
        while True:
            try:
                return me.inbox.get(timeout=self.idle_timeout)
            except queue.Empty:
                pass
            with self._lock:
                if me not in self._idle:
                    break  # submit took it just now: the item is in its inbox
                if len(self._threads) > self.floor:
                    self._leave(me)
                    return _STOP
        return me.inbox.get()
