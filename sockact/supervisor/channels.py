"""The supervisor's end of the workers' channels: what each message a worker sends makes it do.

A worker says READY (its app is imported), PARK (a connection comes back, with the bytes it read
and did not serve), DONE (it closed these connections), FAILED (why it cannot start) and RECYCLE
(it served its max_requests). Each kind has its handler here; what follows for the pool goes
through the coordinator (core.Supervisor), which carries out the pool's actions.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sockact.errors import HandoffError
from sockact.ipc import handoff
from sockact.policy.parking import Conn
from sockact.supervisor.workers import WorkerProcess
from sockact.worker.shell import DRAIN_SIGNAL

if TYPE_CHECKING:
    from sockact.supervisor.core import Supervisor

log = logging.getLogger("sockact.supervisor")

CHANNEL_BATCH = 64  # messages read from one channel per wakeup before others get a turn
CHANNEL_DRAIN = 1 << 20  # a dead worker's channel is read to its end


class Channels:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self._handlers: dict[int, Callable[[WorkerProcess, handoff.Message], None]] = {
            handoff.READY: self._on_ready, handoff.PARK: self._on_park, handoff.DONE: self._on_done,
            handoff.FAILED: self._on_failed, handoff.RECYCLE: self._on_recycle}
        # The last failure logged in full: generation, text, pid. None: the next one is logged in full.
        self.failure_said: tuple[int, str, int] | None = None

    def read(self, w: WorkerProcess, batch: int = CHANNEL_BATCH) -> None:
        """``w``'s channel is readable (or writable, with an outbox): up to ``batch`` messages."""
        sup = self.sup
        if w.outbox or w.out_watched:
            sup.switchboard.flush_outbox(w)
        receiver = w.receiver
        for taken in range(batch):
            if taken and not receiver.waiting():  # the first is known to wait (or to meet EAGAIN)
                return
            try:
                msg = receiver.recv()
            except BlockingIOError:
                return
            except handoff.FdsLost as exc:
                self._lost(w, exc)
                continue
            except HandoffError as exc:
                log.error("worker %d sent a bad message (%s); killing it", w.pid, exc)
                w.signal(signal.SIGKILL)
                return
            except OSError:
                msg = None
            if msg is None:  # the worker is exiting; SIGCHLD will reap it
                sup.unregister(w.chan)
                sup.dispatcher.remove(w.pid)
                return
            handler = self._handlers.get(msg.kind)
            if handler is None:  # a kind only the supervisor sends (CONN): the worker is not itself
                if msg.fd >= 0:
                    os.close(msg.fd)
                log.error("worker %d sent a message only the supervisor sends (kind %d); killing it", w.pid, msg.kind)
                w.signal(signal.SIGKILL)
                return
            handler(w, msg)

    def drain(self, w: WorkerProcess) -> None:
        """What a dead worker reported before it died (PARK and DONE): its channel read to its end."""
        self.read(w, CHANNEL_DRAIN)

    def _lost(self, w: WorkerProcess, exc: handoff.FdsLost) -> None:
        # Out of fds here: the copy in flight is lost, but the worker did nothing wrong, and
        # our own copy of the connection carries on in its place.
        for lost in exc.messages:  # one: a worker sends one fd a message (PARK)
            kept = w.release(lost.conn_id)
            if kept is not None and lost.kind == handoff.PARK:
                kept.data, kept.head_started = lost.data, lost.head_started
                self.parked_by(w, kept)
                continue
            if kept is not None:
                os.close(kept.fd)
            self.sup.acceptor.out_of_fds(f"a connection from worker {w.pid} was dropped ({exc})")
            self.returned(w)

    def _on_ready(self, w: WorkerProcess, msg: handoff.Message) -> None:
        sup = self.sup
        if sup.leaving:
            w.signal(DRAIN_SIGNAL)  # born during drain_delay: its health says 503 too
        sup.carry_out(sup.pool.ready(w.pid, time.monotonic()))
        sup.switchboard.give(sup.dispatcher.add(w.pid) if sup.pool.assignable(w.pid) else [])

    def _on_park(self, w: WorkerProcess, msg: handoff.Message) -> None:
        held = w.done_with(msg.conn_id)
        conn = Conn(msg.conn_id, msg.fd, msg.listener, msg.family, msg.peer, msg.hops, msg.data,
                    proxy=msg.proxy, head_started=msg.head_started)
        if held is not None and (msg.data or msg.head_started):
            conn.since = held.since  # its request is still the one that waits: it keeps its place
        self.parked_by(w, conn)

    def _on_done(self, w: WorkerProcess, msg: handoff.Message) -> None:
        ids = handoff.done_ids(msg)
        w.done_with_all(ids)
        self.returned(w, len(ids))  # what follows for the pool and the listeners, once for them all

    def _on_failed(self, w: WorkerProcess, msg: handoff.Message) -> None:
        w.failure = handoff.failure_reason(msg)
        explained = handoff.failure_explained(msg)
        # Logged here for the worker, which exits at once (shell._tell_why says why). Said once a generation:
        # its workers import the same code at once and fail alike, and four copies of a traceback bury the rest.
        said = self.failure_said
        if said is not None and said[:2] == (w.generation, explained):
            log.info("worker %d cannot start: the same failure as worker %d", w.pid, said[2],
                     extra={"SOCKACT_WORKER_PID": w.pid})
            return
        self.failure_said = (w.generation, explained, w.pid)
        log.error("worker %d cannot start: %s", w.pid, explained, extra={"SOCKACT_WORKER_PID": w.pid})

    def _on_recycle(self, w: WorkerProcess, msg: handoff.Message) -> None:
        log.info("worker %d served its max_requests: recycling it", w.pid)
        w.recycled = "max-requests"
        self.sup.carry_out(self.sup.pool.recycle(w.pid, time.monotonic()))

    def parked_by(self, w: WorkerProcess, conn: Conn) -> None:
        """``w`` handed ``conn`` back: park it, serve it elsewhere, or at a stop store or close it."""
        sup = self.sup
        if sup.stopping and sup.store.keeping:
            sup.store.store(conn)
        elif conn.data or (conn.head_started and not sup.stopping):
            # Handed back with a request already read, or one still to come (a head begun, or a new
            # connection that has sent nothing yet): serve it elsewhere, on the deadline it had. Only
            # an idle keep-alive connection between requests is parked, for keepalive (at a stop,
            # closed, as is one that has sent nothing).
            sup.counters.handbacks += 1
            sup.switchboard.route(conn)
        else:
            sup.switchboard.park(conn, sup.stopping)
        self.returned(w)

    def returned(self, w: WorkerProcess, count: int = 1) -> None:
        """``w`` holds ``count`` connections fewer."""
        sup = self.sup
        sup.switchboard.give(sup.dispatcher.returned(w.pid, count))
        if not sup.dispatcher.is_available(w.pid):
            sup.check_stall(w, time.monotonic())  # paused: it may be moving again
        sup.stop.retire_drained()
        sup.switchboard.update_accepting(sup.stopping)
