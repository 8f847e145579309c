"""Moving connection fds: from the listeners to workers, into the parking lot and out of it.

The supervisor's loop calls in here for every connection it touches; which worker gets one
is dispatch.Dispatcher's decision, when a parked one expires parking.ParkingLot's, and when
to accept acceptor.Acceptor's. This module only carries their decisions out, and keeps
each fd with exactly one owner:

    accepted / queued / in an outbox   the supervisor (the dispatcher's queue, a worker's outbox;
                                       closed on the timer when its head is overdue)
    handed off                         the worker (our copy waits in WorkerProcess.holding, untouched,
                                       until the worker's PARK or DONE; orphans.py if the worker dies)
    parked                             the supervisor (in the selector, closed after keepalive)
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import time
from collections import deque
from collections.abc import Callable

from sockact.ipc.handoff import MAX_DATA
from sockact.policy.dispatch import Dispatcher
from sockact.policy.heads import Verdict, overdue, verdict
from sockact.policy.parking import Conn, ParkingLot
from sockact.supervisor.acceptor import Acceptor, Register, Unregister
from sockact.supervisor.orphans import last_word
from sockact.supervisor.workers import WorkerProcess
from sockact.systemd.activation import Listener

log = logging.getLogger("sockact.supervisor")


class Switchboard:
    def __init__(self, dispatcher: Dispatcher[int, Conn], parked: ParkingLot, workers: dict[int, WorkerProcess],
                 listeners: list[Listener], register: Register, unregister: Unregister,
                 watch_channel: Callable[[WorkerProcess, bool], None]) -> None:
        self.dispatcher = dispatcher
        self.parked = parked
        self.workers = workers  # the supervisor's own table, shared
        self._register = register
        self._unregister = unregister
        self._watch_channel = watch_channel  # wake when a worker's full channel has room again
        self.acceptor = Acceptor(listeners, self.route, register, unregister)
        self.acceptor.idle = parked.__len__
        self.acceptor.close_idle = self._close_oldest_parked
        # By listener: header_timeout, and whether a PROXY header comes first (the supervisor's settings).
        self.head_limits: list[tuple[float, bool]] = [(0.0, False)] * len(listeners)
        # Between defer() and send_deferred() (one turn of the supervisor's loop), hand-offs wait in
        # their worker's outbox, so that the connections one worker gets in a turn go in one message.
        self._deferring = False
        self._deferred: list[WorkerProcess] = []

    def defer(self) -> None:
        """Hold hand-offs in the workers' outboxes until send_deferred()."""
        self._deferring = True

    def send_deferred(self) -> None:
        """Send what the hand-offs since defer() left in the outboxes, a batch per message."""
        self._deferring = False
        deferred, self._deferred = self._deferred, []
        for w in deferred:
            if w.outbox:  # not taken meanwhile (a retired or dead worker's goes elsewhere)
                self.flush_outbox(w)

    def update_accepting(self, stopping: bool) -> None:
        held = self.parked.count + self.dispatcher.queued + self.dispatcher.held
        self.acceptor.set_accepting(not stopping and self.dispatcher.accepting, held, time.monotonic())

    def route(self, conn: Conn) -> None:
        """A connection needs a worker: hand it off, or let it wait in the dispatcher's queue."""
        now = time.monotonic()
        if not conn.since:  # a new connection, or a parked one that speaks: a request begins to need a worker
            conn.since = now
            if not conn.head_started and not conn.data:
                # Its head is due within header_timeout from now, wherever it waits: not overdue yet.
                conn.head_started = now
            elif self._head_overdue(conn, now):
                return
        elif self._head_overdue(conn, now):
            return
        conn.ready_at = now
        assignment = self.dispatcher.offer(conn, conn.since)
        if assignment is not None:
            self._hand_off(*assignment)
        elif not self.dispatcher.accepting:
            self.acceptor.set_accepting(False, self.acceptor.held, time.monotonic())

    def give(self, assignments: list[tuple[int, Conn]]) -> None:
        """Carry out the dispatcher's assignments of queued connections."""
        if not assignments:  # the usual answer to a DONE
            return
        waiting = deque(assignments)
        now = time.monotonic()
        while waiting:
            pid, conn = waiting.popleft()
            if self._head_overdue(conn, now):
                waiting.extend(self.dispatcher.returned(pid))  # its place goes to the next in line
                continue
            self._hand_off(pid, conn)

    def _head_overdue(self, conn: Conn, now: float) -> bool:
        """A connection whose head did not come within header_timeout ends here: a 408 for part of a
        head, nothing for a client that sent nothing (heads.verdict).

        Waiting in the queue for a worker, or handed from one stalled worker to the next, a connection
        may never meet a worker's timers: with one app thread, a worker's loop looks at them only
        between calls, and a stalled worker hands its waiting connections back first. Its deadline
        travels with it (Conn.head_started), so it is kept here too, at hand-off and on the timer
        (expire). A whole head waiting unread has met its deadline: it stays in line.
        """
        timeout, proxied = self.head_limits[conn.listener]
        if not overdue(conn.head_started, timeout, now):
            return False
        what = verdict(conn.data + _unread(conn.fd, socket.MSG_PEEK), proxied and conn.proxy is None)
        if what is Verdict.WAITS:
            conn.head_started = 0.0  # its head is here: a worker reads it, on its own deadline
            return False
        _unread(conn.fd)  # taken: a close with bytes unread would reset the connection, and lose the 408
        last_word(conn.fd, 408 if what is Verdict.LATE else None)
        log.debug("connection %d: no whole request head within header_timeout%s", conn.id,
                  ": 408" if what is Verdict.LATE else "")
        return True

    def _hand_off(self, pid: int, conn: Conn) -> None:
        w = self.workers[pid]
        if self._deferring:
            if not w.outbox:
                self._deferred.append(w)
            w.outbox.append(conn)
            return
        try:
            self._watch(w, not w.give(conn))  # behind on reading: send the rest when it has room
        except OSError as exc:
            self._channel_broken(w, exc)

    def flush_outbox(self, w: WorkerProcess) -> None:
        """Send what waits in ``w``'s outbox; its channel is watched for room while some still waits, and
        only then: a channel watched with nothing to send is writable at every turn (a busy loop)."""
        try:
            self._watch(w, not w.flush())
        except OSError as exc:
            self._channel_broken(w, exc)

    def _watch(self, w: WorkerProcess, room: bool) -> None:
        if w.out_watched is not room:
            w.out_watched = room
            self._watch_channel(w, room)

    def _channel_broken(self, w: WorkerProcess, exc: OSError) -> None:
        log.warning("cannot hand connections to worker %d (%s); killing it, trying others", w.pid, exc)
        self.dispatcher.remove(w.pid)
        w.signal(signal.SIGKILL)
        for conn in self.take_outbox(w):
            self.route(conn)

    def take_outbox(self, w: WorkerProcess) -> list[Conn]:
        """A worker that retires or died never gets its waiting connections: they go elsewhere."""
        conns = w.take_outbox()
        for _ in conns:
            self.dispatcher.returned(w.pid)
        return conns

    def park(self, conn: Conn, stopping: bool) -> None:
        """A worker handed back an idle connection: watch it until the client speaks again."""
        if stopping:
            os.close(conn.fd)
            return
        conn.since = 0.0  # its next request's wait starts when the client speaks again
        self.parked.park(conn, time.monotonic())
        self._register(conn.fd, self._on_parked, conn)

    def _on_parked(self, conn: Conn) -> None:
        # Readable: a request, or the client hanging up. Either way a worker reads it; peeking
        # here first would cost a syscall on every keep-alive request to save one on the last.
        if not self.parked.unpark(conn):
            return  # taken earlier in this turn, to make room for a new client: its fd is not its own any more
        self._unregister(conn.fd)
        self.route(conn)

    def expire(self, now: float) -> None:
        for conn in self.parked.expired(now):
            self._close_if_idle(conn)  # its client may have spoken as its time ran out
        if self.dispatcher.queued:
            # Nobody reads a queued connection while every worker is busy: its head deadline is kept here.
            ended = [conn for conn in self.dispatcher.waiting() if self._head_overdue(conn, now)]
            if ended:
                self.dispatcher.withdraw(ended)

    def _close_oldest_parked(self) -> bool:
        """Close the parked connection idle longest, to make room for a new client; False if none is idle.
        One whose client has spoken (a request, or a hang-up, that the selector has not told yet) is not
        idle: a worker reads it, and the next one is closed instead."""
        while (conn := self.parked.oldest()) is not None:
            if self._close_if_idle(conn):
                return True
        return False

    def close_parked(self, serve_readable: bool) -> None:
        for conn in self.parked.take_all():
            if serve_readable:
                self._close_if_idle(conn)  # a request may be on its way: serve it, then close
            else:
                self._unregister(conn.fd)
                os.close(conn.fd)

    def _close_if_idle(self, conn: Conn) -> bool:
        """Close a connection taken from the parked, unless its client has spoken (a request, or a hang-up,
        that the selector has not told yet: told in the same turn, or after a stop): then it is not idle, and
        a worker reads it, where a close would reset it with its request unread. True if it was closed."""
        self._unregister(conn.fd)
        if _readable(conn.fd):
            self.route(conn)
            return False
        os.close(conn.fd)
        return True

    def close_queued(self) -> None:
        for conn in self.dispatcher.take_queued():
            os.close(conn.fd)


def _unread(fd: int, flags: int = 0) -> bytes:
    """What waits unread in a connection's receive queue, up to what a hand-off carries (MSG_PEEK:
    left there); b"" for nothing yet, or a client gone."""
    sock = socket.socket(fileno=fd)
    try:
        return sock.recv(MAX_DATA, flags | socket.MSG_DONTWAIT)
    except OSError:  # BlockingIOError: nothing sent yet; a reset: nothing more will come
        return b""
    finally:
        sock.detach()


def _readable(fd: int) -> bool:
    """Whether a parked connection has something to read (a request, or end-of-file)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
