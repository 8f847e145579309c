"""The supervisor's event loop: it carries out what the pool and the dispatcher decide.

One thread, one selector. Signal handlers do nothing but let the C-level wakeup fd wake
the loop; the loop then calls ``handle_<signal>()``, and tests call ``dispatch_signal``.
Which workers exist is pool.WorkerPool's decision, which worker gets a connection is
dispatch.Dispatcher's; switchboard.Switchboard moves the connections (and says who owns
each fd when). This module runs the loop, carries out the pool's actions on processes,
reads the workers' channels and keeps the timers: stalls, timeouts, the watchdog, STATUS=.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import random
import selectors
import signal
import socket
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

from . import cgroups, handoff, memory, orphans, pressure
from .acceptor import fd_budget
from .accesslog import escape
from .activation import Listener
from .apploader import WSGIApp
from .config import Config, check_reload
from .dispatch import Dispatcher
from .errors import EXIT_OK, HandoffError, SockactError
from .fdstore import conn_name, take_back
from .health import Health
from .hooks import Loaded
from .hooks import Server as HookServer
from .journal import lifecycle, reopen_files
from .metrics import Snapshot, SupervisorCounters, count_states, restart_reason
from .metricserver import MetricsServer
from .notify import Notifier
from .parking import Conn, ParkingLot
from .pool import Action, Halt, Kill, Ready, Reloaded, ReloadFailed, Retire, Spawn, WorkerPool
from .scoreboard import Scoreboard
from .signals import SignalWakeup
from .states import IN_SERVICE, Phase, WorkerState
from .switchboard import Switchboard
from .tally import Tally
from .turnaway import app_failed, turn_away
from .worker import COLLECT_SIGNAL, DRAIN_SIGNAL, REOPEN_SIGNAL, WorkerShell
from .workers import WorkerProcess, describe_status, spawn

log = logging.getLogger("sockact.supervisor")

# Every signal a gunicorn user sends is handled, so that none kills the supervisor unannounced.
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN,
                   signal.SIGTTOU, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)
TICK = 0.5  # seconds between timer checks (keep-alive expiry, timeouts, STATUS)
RESUMED_AFTER = 2.0  # seconds a tick may come late before the supervisor takes itself for stopped, then resumed
MEMORY_INTERVAL = 1.0  # seconds between two reads of the workers' memory (max_worker_memory)
QUICK_STOP_GRACE = 1.0
SCOREBOARD_SLOTS = 1024  # most workers alive at once, old and new generations together
# Connections one worker holds at most. A connection waiting for its head costs a worker one fd
# and a little memory, so this is high: slow heads must not fill the workers (gunicorn's
# worker_connections is 1000, but its async workers hold a greenlet per connection).
WORKER_CAPACITY = 10000
CHANNEL_BATCH = 64  # messages read from one channel per wakeup before others get a turn
CHANNEL_DRAIN = 1 << 20  # a dead worker's channel is read to its end
STORE_BARRIER_TIMEOUT = 5.0  # seconds to wait for systemd to read the stored fds before exiting


class Supervisor:
    def __init__(self, config: Config, listeners: list[Listener], notifier: Notifier,
                 apps: Mapping[str, WSGIApp] | None = None,
                 reload_config: Callable[[], Config] | None = None,
                 stored: list[tuple[int, str]] | None = None, hooks: Loaded | None = None) -> None:
        self.reload_config = reload_config  # re-reads the settings' sources at HUP
        self.hooks = hooks or Loaded({})  # the user's server hooks, imported at start
        self._from_store = stored or []  # (fd, name) of connections a previous instance stored
        self._stored = 0  # connections given to systemd's fd store at this stop
        self.listeners = listeners
        self.notifier = notifier
        self.apps = apps  # preloaded apps, or None to import in each worker
        self.pool: WorkerPool[Config] = WorkerPool(config)
        self.dispatcher: Dispatcher[int, Conn] = Dispatcher(config.queue_size, WORKER_CAPACITY)
        self.workers: dict[int, WorkerProcess] = {}
        self.parked = ParkingLot([config.listener(lst.name).keepalive for lst in listeners])
        self.switchboard = Switchboard(self.dispatcher, self.parked, self.workers, listeners,
                                       self._register, self._unregister, self._watch_channel)
        self.switchboard.head_limits = _head_limits(config, listeners)
        self.acceptor = self.switchboard.acceptor
        self.exit_code = EXIT_OK
        self._selector: selectors.BaseSelector | None = None
        self._scoreboard: Scoreboard | None = None
        self._health: Health | None = None
        self.counters = SupervisorCounters()
        self._tally: Tally | None = None  # the workers' request counts; None: no metrics listener
        self._metrics: MetricsServer | None = None
        self._signals = SignalWakeup(HANDLED_SIGNALS)
        self._stop_deadline = 0.0
        self._drain_until = 0.0  # a stop was asked; until then the workers serve, their health says 503
        self._next_tick = 0.0
        self._next_stall_check = 0.0
        self._next_memory_check = 0.0
        self._memory_last = 0  # the worker whose USS was read last: the next look reads the next one
        self._cgroups: cgroups.WorkerGroups | None = None  # a cgroup per worker (worker_memory_limit)
        self._pressure: pressure.PressureWatch | None = None  # systemd's MemoryPressureWatch=
        self._last_progress = (0, 0)
        self._halted = False  # the app failed to load: clients waiting for it get a 503

    @property
    def config(self) -> Config:
        return self.pool.serving_config

    @property
    def stopping(self) -> bool:
        return self.pool.phase in (Phase.DRAINING, Phase.STOPPING)

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        self.acceptor.budget = fd_budget(_FD_RESERVE)  # first: a limit too low is a start-up error
        self._delegate(self.config)
        self._selector = selectors.DefaultSelector()
        self._scoreboard = Scoreboard(SCOREBOARD_SLOTS)
        self._health = Health(self._scoreboard, self.workers, self.notifier)
        self._start_metrics()
        self._watch_pressure()
        if self.apps is not None:
            # A preloaded app moves out of the collector's reach once, so the workers' collections
            # never write to its objects and the pages stay shared (CPython's gc.freeze() advice).
            gc.collect()
            gc.freeze()
        self._register(self._signals.install(), self._on_wakeup, None)
        try:
            self._take_back_stored()
            self._carry_out(self.pool.start(time.monotonic()))
            self.switchboard.update_accepting(self.stopping)
            while not (self.stopping and not self.workers):
                self._loop_once()
            if self._halted:
                self._turn_away()  # whoever came during the quick stop
            if self._stored:
                # The stored fds must reach systemd while this process is still the service's main one.
                self.notifier.barrier(STORE_BARRIER_TIMEOUT)
                lifecycle(log, "stop", "stopped: %d keep-alive connections left in systemd's fd store "
                          "for the next instance", self._stored)
        finally:
            self._close_all()
        return self.exit_code

    def _loop_once(self) -> None:
        assert self._selector is not None
        now = time.monotonic()
        wait = self._next_tick - now
        if self.dispatcher.held or self.dispatcher.queued:
            wait = min(wait, self._next_stall_check - now)
        for key, _ in self._selector.select(max(0.0, wait)):
            handler, arg = key.data
            handler(arg)
        now = time.monotonic()
        if now >= self._next_stall_check:
            self._check_stalls(now)
        if now >= self._next_tick:
            self._tick(now)

    # ------------------------------------------------------------------ signals

    def _on_wakeup(self, _: None) -> None:
        for signum in self._signals.read():
            self.dispatch_signal(signum)

    def dispatch_signal(self, signum: int) -> None:
        """Run ``handle_<name>`` for a signal number (tests feed signals here directly)."""
        name = signal.Signals(signum).name[3:].lower()
        handler: Callable[[], None] | None = getattr(self, f"handle_{name}", None)
        if handler is not None:
            handler()

    def handle_term(self) -> None:
        """Graceful stop: stop accepting, finish in-flight and queued requests, then exit."""
        if self.stopping:
            return
        if self.config.drain_delay and not self._drain_until:
            self._announce_stop(self.config.drain_delay)
            return
        self._carry_out(self.pool.term())
        self._stop_deadline = time.monotonic() + self.config.graceful_timeout
        self.notifier.stopping()
        lifecycle(log, "stop", "stopping: draining %d connections held by workers (graceful timeout %.0fs)",
                  self.dispatcher.held, self.config.graceful_timeout)
        self.switchboard.update_accepting(self.stopping)
        if self._keeping:
            self._store_all()
        else:
            self.switchboard.close_parked(serve_readable=True)
            for w in self.workers.values():
                w.signal(signal.SIGTERM)  # in-flight responses will carry Connection: close
        self._retire_when_drained()

    def _announce_stop(self, delay: float) -> None:
        """drain_delay: load balancers see 503 on the health path and take this host out, then the stop."""
        self._drain_until = time.monotonic() + delay
        self.notifier.stopping()
        self.notifier.extend_timeout(delay + self.config.graceful_timeout + 5.0)
        lifecycle(log, "stop", "stopping in %.1fs: serving meanwhile, the health path answers 503", delay)
        for w in self.workers.values():
            w.signal(DRAIN_SIGNAL)  # the worker's health answer turns to 503

    def handle_int(self) -> None:
        """Quick stop: close everything, give workers a moment, then kill them."""
        if self.pool.phase is Phase.STOPPING and self._stop_deadline:
            return
        self._carry_out(self.pool.quick())
        self._stop_deadline = time.monotonic() + QUICK_STOP_GRACE
        self.notifier.stopping()
        lifecycle(log, "stop", "quick stop")
        self.switchboard.update_accepting(self.stopping)
        self.switchboard.close_parked(serve_readable=False)
        self.switchboard.close_queued()
        for w in self.workers.values():
            w.signal(signal.SIGQUIT)

    handle_quit = handle_int

    # ------------------------------------------------------------------ systemd's fd store

    @property
    def _keeping(self) -> bool:
        """Whether a graceful stop leaves idle keep-alive connections in systemd's fd store."""
        return self.config.fd_store and self.notifier.can_store_fds

    def _store_all(self) -> None:
        """Stopping: parked and queued connections go to the store now; workers hand theirs back.

        A retired worker finishes its calls with keep-alive responses and hands every connection
        back at its next request boundary (PARK), where _store() takes it.
        """
        for conn in self.parked.take_all():
            self._unregister(conn.fd)
            self._store(conn)
        for conn in self.dispatcher.take_queued():
            self._store(conn)
        for w in self.workers.values():
            self.dispatcher.remove(w.pid)
            w.retire()
            for conn in self.switchboard.take_outbox(w):
                self._store(conn)

    def _store(self, conn: Conn) -> None:
        """Give ``conn`` to systemd's fd store and close our copy (a request already read cannot go)."""
        if conn.proxy is not None:
            pass  # its PROXY header would be looked for again after the restart: the balancer reconnects
        elif not conn.data and self.notifier.store_fd(conn.fd, conn_name(self.listeners[conn.listener].name)):
            self._stored += 1
        elif conn.data:
            log.warning("closing connection %d at stop: its request was read but not served", conn.id)
        os.close(conn.fd)

    def _take_back_stored(self) -> None:
        """Park the connections the previous instance stored, and empty the store: they are ours alone now."""
        if not self._from_store:
            return
        found = take_back(self._from_store, [lst.name for lst in self.listeners],
                          self.acceptor.reserve_ids(len(self._from_store)))
        self._from_store = []
        for name in sorted(found.names):
            self.notifier.remove_stored(name)
        for conn in found.conns:
            self.switchboard.park(conn, False)
        log.log(logging.WARNING if found.closed else logging.INFO, "%s", found.summary())

    def handle_hup(self) -> None:
        """Reload: a new generation with the settings read anew; a bad file fails the reload at once."""
        if self.stopping or self._drain_until:
            log.warning("reload ignored: stopping")  # `sockact reload` waits, then says the process exited
            return
        self.notifier.reloading()
        config, error = self.config, None
        if self.reload_config is not None:
            try:
                config = self.reload_config()
                config.check_names([lst.name for lst in self.listeners])
                check_reload(self.config, config, [lst.name for lst in self.listeners])
                self._delegate(config)
            except SockactError as exc:
                error = "; ".join([*str(exc).splitlines(), "keeping the running settings and workers"])
        if error is None and self.apps is not None and _apps(config, self.listeners) != set(self.apps):
            error = "with preload on, a changed app needs a restart; keeping the running settings and workers"
        if error is None:
            self.hooks.call("on_reload", HookServer(os.getpid(), config))
            lifecycle(log, "reload", "reloading: starting generation %d of %d workers",
                      self.pool.current.number + 1, config.workers)
        self._carry_out(self.pool.hup(config, error, time.monotonic()))

    def handle_usr1(self) -> None:
        """gunicorn's meaning: reopen the log files, here and in every worker (logrotate's postrotate)."""
        log.info("reopening log files")
        reopen_files()
        for w in self.workers.values():
            w.signal(REOPEN_SIGNAL)

    def handle_usr2(self) -> None:
        # gunicorn's USR2 starts a new master on the same sockets. Under systemd the socket unit
        # holds them and a restart keeps the clients waiting; without it, HUP reloads the app.
        log.warning("SIGUSR2 ignored: sockact does not re-execute itself; HUP reloads the app, "
                    "and under systemd a restart keeps the sockets and their clients")

    def handle_winch(self) -> None:
        # gunicorn's daemon mode stops its workers at WINCH; in a terminal it is a window resize.
        log.debug("SIGWINCH ignored")

    def handle_ttin(self) -> None:
        self._carry_out(self.pool.resize(+1, time.monotonic()))
        log.info("one worker more: %d", self.pool.current.target)

    def handle_ttou(self) -> None:
        self._carry_out(self.pool.resize(-1, time.monotonic()))
        log.info("one worker fewer: %d", self.pool.current.target)

    def handle_chld(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._worker_exited(pid, status)

    # ------------------------------------------------------------------ the pool's actions

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Spawn):
                self._spawn(action.generation, action.config)
            elif isinstance(action, Retire):
                self.dispatcher.remove(action.pid)
                if action.pid in self.workers:
                    w = self.workers[action.pid]
                    w.retire()
                    for conn in self.switchboard.take_outbox(w):
                        self.switchboard.route(conn)
            elif isinstance(action, Kill):
                self.dispatcher.remove(action.pid)
                if action.pid in self.workers:
                    self.workers[action.pid].signal(action.signum)
            elif isinstance(action, Halt):
                log.error("%s", action.reason)
                self.exit_code = action.exit_code
                self._stop_deadline = 0.0
                self._halted = True
                self._turn_away()
                self.handle_int()
            elif isinstance(action, Ready):
                self.notifier.ready(self.status_line())
                lifecycle(log, "ready", "ready: %d workers serving on %s", self.pool.current.target,
                          ", ".join(f"{lst.name}={lst.address}" for lst in self.listeners))
                self.hooks.call("when_ready", HookServer(os.getpid(), self.config))
            elif isinstance(action, Reloaded):
                self.counters.reloads["succeeded"] += 1
                self._apply_settings()
                lifecycle(log, "ready", "reload done: generation %d serving", action.generation)
                self.notifier.reload_finished(True, "")
            elif isinstance(action, ReloadFailed):
                self.counters.reloads["failed"] += 1
                log.error("reload failed: %s", action.reason)
                self.notifier.reload_finished(False, action.reason)

    def _apply_settings(self) -> None:
        """The supervisor's own share of a new generation's settings."""
        config = self.config
        self.parked.keepalive = [config.listener(lst.name).keepalive for lst in self.listeners]
        self.switchboard.head_limits = _head_limits(config, self.listeners)
        self.dispatcher.queue_size = config.queue_size

    def _spawn(self, generation: int, config: Config) -> None:
        assert self._scoreboard is not None
        try:
            slot = self._scoreboard.allocate()
        except IndexError:
            log.error("cannot start a worker: %d workers alive already", SCOREBOARD_SLOTS)
            return
        names = [lst.name for lst in self.listeners]
        scoreboard, apps, tally, hooks = self._scoreboard, self.apps, self._tally, self.hooks
        if tally is not None:
            tally.clear(slot)

        jitter = random.randint(0, config.max_requests_jitter) if config.max_requests else 0
        max_requests = config.max_requests + jitter

        def child_main(chan: socket.socket) -> int:
            if group is not None:
                cgroups.enter(group)  # before the app's first page: a page is charged where it was faulted
            return WorkerShell(chan, config, names, scoreboard, slot, apps, max_requests, tally, hooks).run()

        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, (*HANDLED_SIGNALS, DRAIN_SIGNAL, COLLECT_SIGNAL))
        try:
            group = self._cgroups.prepare(slot, config.worker_memory_limit) if self._cgroups else None
            w = spawn(child_main, self._close_in_child, slot, generation, config.thread_ceiling)
        except OSError as exc:
            # Out of fds or processes: not the app's fault. The pool tries again at the next tick.
            self._scoreboard.release(slot)
            log.error("cannot start a worker: %s", exc.strerror or exc)
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        if tally is not None:
            w.on_sent = self.counters.handed_off
        self.workers[w.pid] = w
        self.pool.spawned(w.pid, generation, time.monotonic())
        self._register(w.chan, self._on_channel, w)
        lifecycle(log, "worker_spawned", "worker %d started (generation %d)", w.pid, generation,
                  sockact_worker_pid=w.pid)

    def _close_in_child(self) -> None:
        """In a new worker: drop every descriptor that belongs to the supervisor.

        Signals stay blocked until the worker has installed its own handlers (WorkerShell).
        """
        self._release_fds()

    def _release_fds(self) -> None:
        """Close every descriptor the supervisor holds but the scoreboard: in a new worker, and at exit."""
        self._signals.close()
        if self._metrics is not None:
            self._metrics.close_clients()
        if self._selector is not None:
            self._selector.close()  # first: the fds below need no unregistering one by one
        if self._pressure is not None:
            self._pressure.close()  # a worker must not hold the PSI trigger
        for lst in self.listeners:
            lst.sock.close()
        for w in self.workers.values():
            w.chan.close()
            for conn in (*w.outbox, *w.holding.values()):
                os.close(conn.fd)
        for conn in self.parked:
            os.close(conn.fd)
        self.switchboard.close_queued()

    def _on_channel(self, w: WorkerProcess, batch: int = CHANNEL_BATCH) -> None:
        if w.outbox:
            self.switchboard.flush_outbox(w)
        for _ in range(batch):
            try:
                msg = w.receiver.recv()
            except BlockingIOError:
                return
            except handoff.FdsLost as exc:
                # Out of fds here: the copy in flight is lost, but the worker did nothing wrong, and
                # our own copy of the connection carries on in its place.
                kept = w.holding.pop(exc.message.conn_id, None)
                if kept is not None and exc.message.kind == handoff.PARK:
                    kept.data, kept.head_started = exc.message.data, exc.message.head_started
                    self._parked_by(w, kept)
                else:
                    if kept is not None:
                        os.close(kept.fd)
                    self.acceptor.out_of_fds(f"a connection from worker {w.pid} was dropped ({exc})")
                    self._returned(w)
                continue
            except HandoffError as exc:
                log.error("worker %d sent a bad message (%s); killing it", w.pid, exc)
                w.signal(signal.SIGKILL)
                return
            except OSError:
                msg = None
            if msg is None:  # the worker is exiting; SIGCHLD will reap it
                self._unregister(w.chan)
                self.dispatcher.remove(w.pid)
                return
            if msg.kind == handoff.READY:
                if self._drain_until:
                    w.signal(DRAIN_SIGNAL)  # born during drain_delay: its health says 503 too
                self._carry_out(self.pool.ready(w.pid, time.monotonic()))
                self.switchboard.give(self.dispatcher.add(w.pid) if self.pool.assignable(w.pid) else [])
            elif msg.kind == handoff.PARK:
                held = w.done_with(msg.conn_id)
                conn = Conn(msg.conn_id, msg.fd, msg.listener, msg.family, msg.peer, msg.hops, msg.data,
                            proxy=msg.proxy, head_started=msg.head_started)
                if held is not None and msg.data:
                    conn.since = held.since  # its request is still the one that waits: it keeps its place
                self._parked_by(w, conn)
            elif msg.kind == handoff.DONE:
                for conn_id in handoff.done_ids(msg):
                    w.done_with(conn_id)
                    self._returned(w)
            elif msg.kind == handoff.FAILED:
                w.failure = handoff.failure_reason(msg)
            elif msg.kind == handoff.RECYCLE:
                log.info("worker %d served its max_requests: recycling it", w.pid)
                w.recycled = "max-requests"
                self._carry_out(self.pool.recycle(w.pid, time.monotonic()))

    def _parked_by(self, w: WorkerProcess, conn: Conn) -> None:
        """``w`` handed ``conn`` back: park it, serve it elsewhere, or at a stop store or close it."""
        if self.stopping and self._keeping:
            self._store(conn)
        elif conn.data:
            self.counters.handbacks += 1
            self.switchboard.route(conn)  # handed back with a request already read: serve it elsewhere
        else:
            self.switchboard.park(conn, self.stopping)
        self._returned(w)

    def _returned(self, w: WorkerProcess) -> None:
        self.switchboard.give(self.dispatcher.returned(w.pid))
        if not self.dispatcher.is_available(w.pid):
            self._check_stall(w, time.monotonic())  # paused: it may be moving again
        self._retire_when_drained()
        self.switchboard.update_accepting(self.stopping)

    def _worker_exited(self, pid: int, status: int) -> None:
        w = self.workers.get(pid)
        if w is None:
            return  # a child of the app's, not a worker
        assert self._scoreboard is not None
        self.dispatcher.remove(pid)  # nothing more goes its way, not even what its last reports reroute
        waiting = self.switchboard.take_outbox(w)
        self._on_channel(w, CHANNEL_DRAIN)  # what it reported before it died: PARK and DONE
        del self.workers[pid]
        self._unregister(w.chan)
        w.chan.close()
        if self._tally is not None:
            self._tally.retire(w.slot, w.threads)  # its counts outlive it
        oom = self._killed_for_memory(w) if self._cgroups is not None else None  # said before its 502s
        self._answer_orphans(w, status)
        self._scoreboard.release(w.slot)
        lost = self.dispatcher.forget(pid)
        how, code, _ = describe_status(status)
        how = oom or how
        state = self.pool.state(pid)
        expected = state is WorkerState.RETIRING or self.stopping
        self.counters.worker_exited(restart_reason(state, w.recycled, w.generation != self.pool.current.number,
                                                   self.stopping))
        lifecycle(log, "worker_exited", "worker %d %s%s", pid, how,
                  f" with {lost} connections" if lost else "",
                  level=logging.INFO if expected else logging.WARNING,
                  sockact_worker_pid=pid, exit_status=code if code is not None else -1)
        self._carry_out(self.pool.exited(pid, code, time.monotonic(), w.failure))
        for conn in waiting:
            self.switchboard.route(conn)  # they never reached it
        self.switchboard.update_accepting(self.stopping)

    def _delegate(self, config: Config) -> None:
        """worker_memory_limit: take the service's cgroup for the workers, once; raises CgroupError."""
        if config.worker_memory_limit and self._cgroups is None:
            self._cgroups = cgroups.WorkerGroups.delegate()
            log.info("each worker runs in a cgroup of its own under %s", self._cgroups.service)

    def _killed_for_memory(self, w: WorkerProcess) -> str | None:
        """Why ``w`` died, if the kernel killed it for its cgroup's memory.max; logged, and counted."""
        assert self._cgroups is not None
        killed = self._cgroups.oom_killed(w.slot)
        self._cgroups.remove(w.slot)
        if not killed:
            return None
        w.recycled = "memory-limit"
        how = "killed by the kernel for worker_memory_limit (out of memory in its cgroup)"
        log.error("worker %d %s: its clients in a call get a 502; a new worker takes its place", w.pid, how,
                  extra={"SOCKACT_WORKER_PID": w.pid, "SOCKACT_CGROUP": str(self._cgroups.group(w.slot))})
        return how

    # ------------------------------------------------------------------ connections

    def _answer_orphans(self, w: WorkerProcess, status: int) -> None:
        """A worker died: connections it never read go to another worker; its clients still in a call
        get a 502 or 504 if no byte of the response went out."""
        assert self._scoreboard is not None
        conns, unreceived = w.take_holding(self._scoreboard.received(w.slot))
        if not conns:
            return
        timed_out = self.pool.state(w.pid) is WorkerState.ABORTED and self.config.timeout
        overdue_before = time.monotonic() - self.config.timeout if timed_out else None
        how = describe_status(status)[0]
        unread = {conn.id for conn in conns if orphans.unread_bytes(conn.fd)}
        again = 0
        for verdict in orphans.verdicts(conns, self._scoreboard.calls(w.slot), overdue_before, unread, unreceived):
            if verdict.again:
                again += 1
                self.switchboard.route(verdict.conn)  # it keeps its place in line (Conn.since)
                continue
            orphans.answer(verdict)
            if verdict.status is not None:
                phrase = HTTPStatus(verdict.status).phrase
                log.error("worker %d %s before answering %s: %d %s sent", w.pid, how, escape(verdict.line),
                          verdict.status, phrase, extra={"HTTP_REQUEST": escape(verdict.line)})
            elif verdict.line:
                log.warning("worker %d %s in the middle of the response to %s: connection closed", w.pid, how,
                            escape(verdict.line), extra={"HTTP_REQUEST": escape(verdict.line)})
        if again:
            log.warning("worker %d %s before reading %d requests: they go to other workers", w.pid, how, again)

    def _turn_away(self) -> None:
        """Answer each client queued or in a backlog with a 503 and close it.

        Under systemd, a client left in the backlog of a passed listener would start the
        service again as soon as it exits: one connection, a loop of failing starts.
        """
        queued = [conn.fd for conn in self.dispatcher.take_queued()]
        turn_away(queued, [lst.sock for lst in self.listeners], app_failed())

    def _retire_when_drained(self) -> None:
        """Draining: a worker that holds nothing more retires."""
        if self.pool.phase is not Phase.DRAINING or self.dispatcher.queued:
            return
        for w in list(self.workers.values()):
            if not w.retired and not self.dispatcher.load(w.pid):
                w.retire()

    # ------------------------------------------------------------------ timers

    def _tick(self, now: float) -> None:
        assert self._health is not None
        # This process stood still (stopped with its workers, as by a terminal's Ctrl-Z, or a paused
        # VM): the workers' heartbeats and calls stood still with it, so none is judged frozen or
        # stuck on this tick; a call that still runs at the next is judged then.
        resumed = now - self._next_tick > RESUMED_AFTER
        self._next_tick = now + min(TICK, self.notifier.watchdog_interval or TICK)
        if self.stopping:
            self._tick_stopping(now)
            return
        if self._drain_until and now >= self._drain_until:
            self.handle_term()
            return
        self.switchboard.expire(now)
        if self._metrics is not None:
            self._metrics.expire(now)
        healthy = not self.pool.boot_overdue(now) and not self.pool.count(WorkerState.ABORTED)
        for w, view in self._health.overdue(now, self.config.timeout):
            state = self.pool.state(w.pid)
            stuck = view.stuck(now, self.config.timeout)
            if state is WorkerState.ABORTED or not (stuck or state in IN_SERVICE):
                continue  # a retiring worker's loop may have ended: only its calls count, until graceful_timeout
            if resumed:
                continue
            healthy = False
            if stuck:
                lifecycle(log, "worker_timeout", "worker %d stuck for %.1fs on %s; killing it", w.pid,
                          now - view.oldest, escape(view.line) or "a request", level=logging.ERROR,
                          sockact_worker_pid=w.pid, http_request=escape(view.line))
            else:
                lifecycle(log, "worker_timeout", "worker %d frozen: its loop has not turned for %.1fs; killing it",
                          w.pid, now - view.beat, level=logging.ERROR, sockact_worker_pid=w.pid)
            self._carry_out(self.pool.timed_out(w.pid, now))
            if w.stopped():
                # Resumed to take its SIGABRT, it could read requests before it dies, and they
                # would be lost; killed as it is, they still wait unread for another worker.
                w.signal(signal.SIGKILL)
        if self.config.max_worker_memory and now >= self._next_memory_check:
            self._next_memory_check = now + MEMORY_INTERVAL
            self._check_memory(now)
        self._carry_out(self.pool.tick(now))
        self._health.report(now, healthy, self.status_line())
        self.switchboard.update_accepting(self.stopping)

    def _check_memory(self, now: float) -> None:
        """Recycle, successor first, a serving worker whose own memory passed max_worker_memory.

        RSS first, for every worker (constant time); USS, whose read costs time in proportion to
        the worker's size, for one worker past the limit by RSS per look, in turn.
        """
        limit = self.config.max_worker_memory
        over = sorted(w.pid for w in self.workers.values()
                      if not w.recycled and self.pool.state(w.pid) in IN_SERVICE
                      and (memory.rss(w.pid) or 0) > limit)
        if over:
            pid = next((p for p in over if p > self._memory_last), over[0])
            self._memory_last = pid
            w = self.workers[pid]
            used = memory.uss(pid)
            if used is not None and used > limit:
                log.warning("worker %d holds %s of its own memory (USS), past max_worker_memory %s: recycling it "
                            "once its successor is ready", w.pid, memory.megabytes(used), memory.megabytes(limit),
                            extra={"SOCKACT_RECYCLED_PID": w.pid, "SOCKACT_WORKER_USS": used})
                w.recycled = "memory"
                self._carry_out(self.pool.recycle(w.pid, now, successor_first=True))

    def _watch_pressure(self) -> None:
        """MemoryPressureWatch= (systemd 254+): wake the loop when systemd reports memory pressure."""
        try:
            watch = pressure.PressureWatch.from_environ(os.environ)
        except (OSError, ValueError) as exc:
            log.warning("memory pressure not watched (%s): %s", pressure.describe(os.environ), exc)
            return
        if watch is not None:
            self._pressure = watch
            self._register(watch.fileno(), self._on_pressure, watch)
            log.info("watching memory pressure: %s", pressure.describe(os.environ))

    def _on_pressure(self, watch: pressure.PressureWatch) -> None:
        """Memory pressure on the service: every worker collects its garbage, and the largest serving
        worker is recycled, its successor first; one at a time, so pressure that lasts does not churn."""
        if not watch.fired() or self.stopping:
            return
        for w in self.workers.values():
            w.signal(COLLECT_SIGNAL)
        if any(w.recycled for w in self.workers.values()):
            return
        sizes = {w.pid: self._memory_of(w) for w in self.workers.values()
                 if self.pool.state(w.pid) in IN_SERVICE}
        if not sizes:
            return
        largest = self.workers[max(sizes, key=lambda pid: sizes[pid])]
        log.warning("memory pressure: the workers collect their garbage; recycling worker %d, the largest (%s), "
                    "once its successor is ready", largest.pid, memory.megabytes(sizes[largest.pid]),
                    extra={"SOCKACT_RECYCLED_PID": largest.pid})
        largest.recycled = "pressure"
        self._carry_out(self.pool.recycle(largest.pid, time.monotonic(), successor_first=True))

    def _memory_of(self, w: WorkerProcess) -> int:
        """What ``w`` holds, cheaply: its cgroup's memory.current, else its RSS (the shared pages count
        alike in every worker, so the largest is still the largest)."""
        used = self._cgroups.usage(w.slot) if self._cgroups is not None else None
        return used.memory if used is not None else memory.rss(w.pid) or 0

    def _tick_stopping(self, now: float) -> None:
        if now >= self._stop_deadline:
            for w in self.workers.values():
                if not w.killed:
                    log.warning("worker %d did not finish in time; killing it", w.pid)
                    w.signal(signal.SIGKILL)
                    w.killed = True
            return
        assert self._health is not None
        progress = (self._health.requests(), len(self.workers))
        if progress != self._last_progress:
            # Still draining and moving: ask systemd for more time, a little at a time.
            self._last_progress = progress
            self.notifier.extend_timeout(min(self._stop_deadline - now, 5.0) + 1.0)
        self.notifier.status(f"stopping: {len(self.workers)} workers left, {self.dispatcher.held} connections")

    def _check_stalls(self, now: float) -> None:
        """Workers whose every app thread sits in one call get no new connections until they move."""
        self._next_stall_check = now + self.config.handback_after / 2
        for w in list(self.workers.values()):
            self._check_stall(w, now)

    def _check_stall(self, w: WorkerProcess, now: float) -> None:
        assert self._health is not None
        state = self.pool.state(w.pid)
        if state not in IN_SERVICE:
            return
        stalled = self._health.view(w).stalled(w.threads, now, self.config.handback_after)
        if stalled and state is WorkerState.READY:
            self.pool.stalled(w.pid, True)
            self.dispatcher.pause(w.pid)
        elif not stalled and state is WorkerState.STALLED:
            self.pool.stalled(w.pid, False)
            self.switchboard.give(self.dispatcher.resume(w.pid))

    def status_line(self) -> str:
        assert self._health is not None
        ready = self.pool.count(*IN_SERVICE)
        return (f"{ready} workers ({self._health.busy()} busy), {self.pool.count(WorkerState.STALLED)} stalled, "
                f"{self.dispatcher.held} connections in workers, {len(self.parked)} parked, "
                f"{self.dispatcher.queued} queued, {self._health.requests()} requests served")

    # ------------------------------------------------------------------ metrics

    def _start_metrics(self) -> None:
        """Answer scrapes on the metrics listener, if there is one; the workers count only then."""
        assert self._selector is not None
        name = self.config.metrics_listener
        index = next((i for i, lst in enumerate(self.listeners) if lst.name == name), None)
        if index is None:
            return
        from .apps import metrics as exposition  # here: prometheus_client is imported only when needed

        if not exposition.available:
            log.warning("listener %r: %s; it answers 503 until then", name, exposition.MISSING)
        self._tally = Tally(SCOREBOARD_SLOTS, len(self.listeners))
        self.acceptor.exclude(index)
        self._metrics = MetricsServer(self.listeners[index], self._selector, self._render_metrics)
        self._metrics.start(time.monotonic())

    def _render_metrics(self) -> tuple[int, str, bytes]:
        from .apps import metrics as exposition

        try:
            return 200, exposition.CONTENT_TYPE, exposition.exposition(self.metrics_snapshot())
        except RuntimeError as exc:
            return 503, exposition.CONTENT_TYPE, f"{exc}\n".encode()

    def metrics_snapshot(self) -> Snapshot:
        """Everything a scrape shows, as of now."""
        assert self._tally is not None and self._health is not None and self._metrics is not None
        return Snapshot(
            listeners={i: lst.name for i, lst in enumerate(self.listeners) if lst is not self._metrics.listener},
            layout=self._tally.layout,
            tally=self._tally.total([(w.slot, w.threads) for w in self.workers.values()]),
            in_flight=self._health.busy(),
            app_threads=dict(zip(("busy", "idle"), self._health.threads(), strict=True)),
            app_threads_max=sum(w.threads for w in self.workers.values()),
            connections={"worker": self.dispatcher.held, "parked": len(self.parked),
                         "queued": self.dispatcher.queued},
            workers=count_states(m.state for m in self.pool.members.values()),
            accepted=list(self.acceptor.accepted), accept_errors=self.acceptor.errors,
            handoff=self.counters.handoff, handbacks=self.counters.handbacks, restarts=self.counters.restarts,
            reloads=self.counters.reloads, watchdog_pings=self._health.pings,
            start_time=self.counters.start_time, **self._cgroup_usage())

    def _cgroup_usage(self) -> dict[str, dict[tuple[int, int], Any]]:
        """The worker_memory and worker_cpu of a Snapshot, from the workers' cgroups."""
        held, cpu = {}, {}
        for w in self.workers.values():
            used = self._cgroups.usage(w.slot) if self._cgroups is not None else None
            if used is not None:
                held[w.slot, w.pid], cpu[w.slot, w.pid] = used.memory, used.cpu
        return {"worker_memory": held, "worker_cpu": cpu}

    # ------------------------------------------------------------------ plumbing

    def _watch_channel(self, w: WorkerProcess, writable: bool) -> None:
        """Also wake for room in ``w``'s channel while its outbox holds connections."""
        assert self._selector is not None
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if writable else 0)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(w.chan, events, (self._on_channel, w))

    def _register(self, sock: socket.socket | int, handler: Callable[[Any], None], arg: Any) -> None:
        assert self._selector is not None
        self._selector.register(sock, selectors.EVENT_READ, (handler, arg))

    def _unregister(self, sock: socket.socket | int) -> None:
        assert self._selector is not None
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def _close_all(self) -> None:
        for w in self.workers.values():
            w.signal(signal.SIGKILL)
        for lst in self.listeners:
            lst.close()  # also unlinks a Unix socket path that sockact bound itself
        self._release_fds()
        if self._scoreboard is not None:
            self._scoreboard.close()
        if self._tally is not None:
            self._tally.close()


# fds the supervisor keeps free for itself: channels of new workers, the journal, a reload's files.
_FD_RESERVE = 64


def _head_limits(config: Config, listeners: list[Listener]) -> list[tuple[float, bool]]:
    return [(lc.header_timeout, lc.proxy_protocol != "off") for lc in (config.listener(lst.name) for lst in listeners)]


def _apps(config: Config, listeners: list[Listener]) -> set[str]:
    return {config.listener(lst.name).app for lst in listeners}
