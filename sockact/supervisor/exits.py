"""A worker exited: read what it reported before it died, answer its orphans, count it, tell the pool.

Orphans are a dead worker's clients: the supervisor's own copies of the connections it held
(workers.WorkerProcess.holding). What each one gets is orphans.verdicts()'s decision; this module
carries it out and logs it. A worker the kernel killed for its cgroup's memory.max is said so first.
A crash of workers that keep crashing is quiet: its lines go to DEBUG, and the pool says it in one
line now and then (policy/crashes.py).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from sockact.logs.access import escape
from sockact.logs.journal import lifecycle
from sockact.policy.states import Phase, WorkerState
from sockact.supervisor import orphans
from sockact.supervisor.metrics import restart_reason
from sockact.supervisor.workers import WorkerProcess, describe_status

if TYPE_CHECKING:
    from sockact.supervisor.core import Supervisor

log = logging.getLogger("sockact.supervisor")


class Exits:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup

    def exited(self, pid: int, status: int) -> None:
        """Worker ``pid`` was reaped with wait status ``status``."""
        sup = self.sup
        w = sup.workers.get(pid)
        if w is None:
            return  # a child of the app's, not a worker
        assert sup.scoreboard is not None
        now = time.monotonic()
        quiet = sup.pool.crash_quiet(pid, now)
        sup.dispatcher.remove(pid)  # nothing more goes its way, not even what its last reports reroute
        waiting = sup.switchboard.take_outbox(w)
        sup.channels.drain(w)
        del sup.workers[pid]
        sup.unregister(w.chan)
        w.chan.close()
        if sup.tally is not None:
            sup.tally.retire(w.slot, w.threads)  # its counts outlive it
        oom = self.killed_for_memory(w, quiet) if sup.cgroups is not None else None  # said before its 502s
        during = self._answer_orphans(w, status, quiet)
        sup.scoreboard.release(w.slot)
        lost = sup.dispatcher.forget(pid)
        how, code, _ = describe_status(status)
        how = oom or how
        state = sup.pool.state(pid)
        expected = state is WorkerState.RETIRING or sup.stopping
        sup.counters.worker_exited(restart_reason(state, w.recycled, w.generation != sup.pool.current.number,
                                                  sup.stopping))
        lifecycle(log, "worker_exited", "worker %d %s%s", pid, how,
                  f" with {lost} connections" if lost else "",
                  level=logging.DEBUG if quiet else logging.INFO if expected else logging.WARNING,
                  sockact_worker_pid=pid, exit_status=code if code is not None else -1)
        reason = f"worker {pid} {how}{f' during {during}' if during else ''}"
        sup.carry_out(sup.pool.exited(pid, code, now, w.failure, reason))
        for conn in waiting:
            sup.rehome(conn)  # they never reached it
        sup.switchboard.update_accepting(sup.stopping)

    def killed_for_memory(self, w: WorkerProcess, quiet: bool = False) -> str | None:
        """Why ``w`` died, if the kernel killed it for its cgroup's memory.max; logged, and counted."""
        groups = self.sup.cgroups
        assert groups is not None
        killed = groups.oom_killed(w.slot)
        groups.remove(w.slot)
        if not killed:
            return None
        w.recycled = "memory-limit"
        how = "killed by the kernel for worker_memory_limit (out of memory in its cgroup)"
        log.log(logging.DEBUG if quiet else logging.ERROR,
                "worker %d %s: its clients in a call get a 502; a new worker takes its place", w.pid, how,
                  extra={"SOCKACT_WORKER_PID": w.pid, "SOCKACT_CGROUP": str(groups.group(w.slot))})
        return how

    def _answer_orphans(self, w: WorkerProcess, status: int, quiet: bool) -> str:
        """Connections the dead worker never read go to another worker; its clients still in a call
        get a 502 or 504 if no byte of the response went out. Returns the first of their requests,
        escaped ("": none), and logs each at DEBUG when ``quiet``."""
        sup = self.sup
        assert sup.scoreboard is not None
        conns, unreceived = w.take_holding(sup.scoreboard.received(w.slot))
        if not conns:
            return ""
        timed_out = sup.pool.state(w.pid) is WorkerState.ABORTED and sup.config.timeout
        overdue_before = time.monotonic() - sup.config.timeout if timed_out else None
        how = describe_status(status)[0]
        unread = {conn.id for conn in conns if orphans.unread_bytes(conn.fd)}
        # A quick stop (INT, QUIT: the pool is STOPPING) is the operator's choice, not the app's fault.
        quick = sup.pool.phase is Phase.STOPPING
        level = logging.DEBUG if quiet else logging.WARNING if quick else logging.ERROR
        said = logging.DEBUG if quiet else logging.WARNING  # what the lines below are said at
        during = ""
        why = "; the quick stop (SIGINT or SIGQUIT) cut it off" if quick else ""
        again = 0
        reading = sup.scoreboard.reading(w.slot)
        calls = sup.scoreboard.calls(w.slot)
        fds = {conn.id: conn.fd for conn in conns}
        # What the kernel took of the responses that had begun: none of it, and the client still gets a 502.
        written = {call.conn_id: orphans.written_bytes(fds[call.conn_id]) for call in calls
                   if call.responded and not call.answered and call.conn_id in fds}
        # And of those that came with bytes (a hand-back's): whether a response went out since, the bytes answered.
        written.update((conn.id, orphans.written_bytes(conn.fd)) for conn in conns
                       if conn.data and conn.id not in unreceived and conn.id not in written)
        # And of those it marked at a request boundary: whether the last response is out whole, and nobody began
        # to close. Not one whose PROXY header the worker read: the next worker would wait for it again.
        proxied = {conn.id for conn in conns if conn.proxy is None and sup.switchboard.head_limits[conn.listener][1]}
        resting = {}
        for conn_id, mark in sup.scoreboard.resting(w.slot).items():
            count = orphans.written_bytes(fds[conn_id], established=True) if conn_id in fds else None
            if count is not None and conn_id not in proxied:
                resting[conn_id] = mark
                written.setdefault(conn_id, count)
        parked = 0
        for verdict in orphans.verdicts(conns, calls, overdue_before, unread, unreceived, reading, written, resting):
            if verdict.park:
                parked += 1
                conn = verdict.conn
                conn.written, conn.head_started = -1, 0.0  # looked up again at its next hand-over; no head begun
                if sup.stopping and sup.store.keeping:
                    sup.store.store(conn)
                else:
                    sup.switchboard.park(conn, sup.stopping)
                continue
            if verdict.again:
                again += 1
                if verdict.served:
                    verdict.conn.data, verdict.conn.head_started = b"", 0.0  # answered: the request waits unread
                verdict.conn.written = -1  # the dead worker may have written on it: looked up again
                sup.switchboard.route(verdict.conn)  # it keeps its place in line (Conn.since)
                continue
            orphans.answer(verdict)
            during = during or escape(verdict.line)
            if verdict.status is not None:
                from http import HTTPStatus  # here: only a worker's death with requests in hand needs it

                phrase = HTTPStatus(verdict.status).phrase
                what = (escape(verdict.line) if verdict.line else "a head it held in part"
                        if verdict.status == orphans.REQUEST_TIMEOUT else "the request it was reading")
                log.log(level, "worker %d %s before answering %s: %d %s sent%s", w.pid, how, what,
                        verdict.status, phrase, why, extra={"HTTP_REQUEST": escape(verdict.line)})
            elif verdict.line:
                log.log(said, "worker %d %s in the middle of the response to %s: connection closed", w.pid, how,
                            escape(verdict.line), extra={"HTTP_REQUEST": escape(verdict.line)})
        if again:
            log.log(said, "worker %d %s before reading %d requests: they go to other workers", w.pid, how, again)
        if parked:
            log.log(logging.DEBUG if quiet else logging.INFO, "worker %d %s with %d idle keep-alive connections: "
                    "parked", w.pid, how, parked)
        return during
