"""The supervisor's coordinator: its loop, signals, the pool's actions and the timers.

One thread, one selector. Signal handlers do nothing but let the C-level wakeup fd wake
the loop; the loop then calls ``handle_<signal>()``, and tests call ``dispatch_signal``.
Which workers exist is pool.WorkerPool's decision, which worker gets a connection is
dispatch.Dispatcher's; switchboard.Switchboard moves the connections (and says who owns
each fd when). This module runs the loop, carries out the pool's actions on processes and keeps the
timers: stalls, timeouts, the watchdog, STATUS=. Beside it in this package: the workers'
channels (channels.py), a worker's exit and its orphans (exits.py), systemd's fd store
(store.py), the metrics listener (scrape.py), the workers' memory (memwatch.py),
starting a worker (forking.py) and the stop's sequence (stopping.py).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sockact import cpupolicy, gcpause
from sockact.apploader import WSGIApp
from sockact.config import Config, check_reload, unapplied
from sockact.errors import EXIT_OK, SockactError
from sockact.hooks import Loaded
from sockact.hooks import Server as HookServer
from sockact.ipc.scoreboard import MAX_THREADS, MAX_WORKERS, Scoreboard
from sockact.ipc.tally import Tally
from sockact.logs.access import escape
from sockact.logs.journal import lifecycle, reopen_files
from sockact.policy.dispatch import Dispatcher
from sockact.policy.parking import Conn, ParkingLot
from sockact.policy.pool import Action, Halt, Kill, Ready, Reloaded, ReloadFailed, Retire, Spawn, WorkerPool
from sockact.policy.states import ENDING, IN_SERVICE, TIMED_OUT, Phase, WorkerState
from sockact.supervisor.acceptor import fd_budget
from sockact.supervisor.channels import Channels
from sockact.supervisor.exits import Exits
from sockact.supervisor.forking import Forker
from sockact.supervisor.health import STUCK, Health
from sockact.supervisor.memwatch import MemoryWatch
from sockact.supervisor.metrics import SupervisorCounters
from sockact.supervisor.scrape import Scrape
from sockact.supervisor.signals import SignalWakeup
from sockact.supervisor.stopping import Stop
from sockact.supervisor.store import StoreSequence
from sockact.supervisor.switchboard import Switchboard
from sockact.supervisor.workers import WorkerProcess
from sockact.systemd.activation import Listener
from sockact.systemd.notify import Notifier, failed_reload
from sockact.worker.shell import REOPEN_SIGNAL

if TYPE_CHECKING:
    from sockact.systemd import cgroups

log = logging.getLogger("sockact.supervisor")

# Every signal a gunicorn user sends is handled, so that none kills the supervisor unannounced.
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN,
                   signal.SIGTTOU, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)
TICK = 0.5  # seconds between timer checks (keep-alive expiry, timeouts, STATUS)
RESUMED_AFTER = 2.0  # seconds a tick may come late before the supervisor takes itself for stopped, then resumed
SCOREBOARD_SLOTS = 2 * MAX_WORKERS  # most workers alive at once, old and new generations together
# Connections one worker holds at most. A connection waiting for its head costs a worker one fd
# and a little memory, so this is high: slow heads must not fill the workers (gunicorn's
# worker_connections is 1000, but its async workers hold a greenlet per connection).
WORKER_CAPACITY = 10000


class Supervisor:
    def __init__(self, config: Config, listeners: list[Listener], notifier: Notifier,
                 apps: Mapping[str, WSGIApp] | None = None,
                 reload_config: Callable[[], Config] | None = None,
                 stored: list[tuple[int, str]] | None = None, hooks: Loaded | None = None) -> None:
        self.reload_config = reload_config  # re-reads the settings' sources at HUP
        self.hooks = hooks or Loaded({})  # the user's server hooks, imported at start
        self.listeners = listeners
        self.notifier = notifier
        self.apps = apps  # preloaded apps, or None to import in each worker
        self.pool: WorkerPool[Config] = WorkerPool(config)
        self.started = config  # what the settings read only at start (Setting.restart) keep until a restart
        self.reload_note = ""  # the last reload's settings left for a restart, in words; its outcome says them
        self.dispatcher: Dispatcher[int, Conn] = Dispatcher(config.queue_size, WORKER_CAPACITY)
        self.workers: dict[int, WorkerProcess] = {}
        self.parked = ParkingLot([config.listener(lst.name).keepalive for lst in listeners])
        self.switchboard = Switchboard(self.dispatcher, self.parked, self.workers, listeners,
                                       self.register, self.unregister, self._watch_channel)
        self.switchboard.head_limits = _head_limits(config, listeners)
        self.acceptor = self.switchboard.acceptor
        self.exit_code = EXIT_OK
        self.selector: Selector | None = None
        self.scoreboard: Scoreboard | None = None
        self.health: Health | None = None
        self.counters = SupervisorCounters()
        self.tally: Tally | None = None  # the workers' request counts; None: no metrics listener
        self.cgroups: cgroups.WorkerGroups | None = None  # a cgroup per worker (worker_memory_limit)
        self.channels = Channels(self)
        self.exits = Exits(self)
        self.store = StoreSequence(self, stored)
        self.scrape = Scrape(self)
        self.memory = MemoryWatch(self)
        self.forker = Forker(self, HANDLED_SIGNALS, SCOREBOARD_SLOTS)
        self.stop = Stop(self)
        self.signals = SignalWakeup(HANDLED_SIGNALS)
        self._next_tick = 0.0
        self._next_stall_check = 0.0
        self._now = 0.0  # the clock as the last turn of the loop ended: the next turn's wait starts from it

    @property
    def config(self) -> Config:
        return self.pool.serving_config

    @property
    def leaving(self) -> bool:
        """drain_delay: a stop was asked; until it begins the workers serve, their health says 503."""
        return self.pool.phase is Phase.LEAVING

    @property
    def stopping(self) -> bool:
        return self.pool.phase in _ENDING

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        self.acceptor.budget = fd_budget(_FD_RESERVE)  # first: a limit too low is a start-up error
        cpupolicy.batch(self.config.batch_scheduling)  # before the first fork: the workers inherit it
        self.forker.delegate(self.config)
        self.selector = Selector()
        # A line for each HTTP call an ASGI worker may have at once: one a connection, past its loop's lines.
        self.scoreboard = Scoreboard(SCOREBOARD_SLOTS, MAX_THREADS + WORKER_CAPACITY)
        self.health = Health(self.scoreboard, self.workers, self.notifier)
        self.tally = self.scrape.start(SCOREBOARD_SLOTS)
        self.memory.watch_pressure()
        if self.apps is not None:
            # A preloaded app moves out of the collector's reach once, so the workers' collections
            # never write to its objects and the pages stay shared (CPython's gc.freeze() advice).
            gc.collect()
            gc.freeze()
        gcpause.resume()  # the start's objects move out of its reach likewise, before the first fork
        self.register(self.signals.install(), self._on_wakeup, None)
        try:
            self.store.take_back()
            self.carry_out(self.pool.start(time.monotonic()))
            self.switchboard.update_accepting(self.stopping)
            self._now = time.monotonic()
            while self.workers or not self.stopping:  # workers first: asked at every turn, stopping is a property
                self._loop_once()
            if self.pool.phase is Phase.HALTED:
                self.stop.turn_away()  # whoever came during the quick stop
            self.store.finish()
        finally:
            self._close_all()
        return self.exit_code

    def _loop_once(self) -> None:
        assert self.selector is not None
        now = self._now  # one clock read a turn, not two: nothing but this turn's timers ran since
        wait = self._next_tick - now
        if self.dispatcher.held or self.dispatcher.queued:
            wait = min(wait, self._next_stall_check - now)
        switchboard = self.switchboard
        switchboard.defer()  # what this turn gives each worker goes in as few messages as it can
        try:
            for handler, arg in self.selector.ready(max(0.0, wait)):
                handler(arg)
        finally:
            switchboard.send_deferred()
        now = self._now = time.monotonic()
        if now >= self._next_stall_check:
            self._check_stalls(now)
            self._now = time.monotonic()
        if now >= self._next_tick:
            self._tick(now)
            self._now = time.monotonic()

    # ------------------------------------------------------------------ signals

    def _on_wakeup(self, _: None) -> None:
        # A terminal's Ctrl-C signals the workers too, and the kernel signals a process group's newest
        # members first: a worker's exit (CHLD) may come before the supervisor's own INT. Taken in that
        # order, the exit would read as a worker that failed to start. Every other signal goes first.
        for signum in sorted(self.signals.read(), key=_chld_last):
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
        if self.config.drain_delay and not self.leaving:
            self.stop.announce(self.config.drain_delay)
            return
        self.stop.drain()

    def handle_int(self) -> None:
        """Quick stop: close everything, give workers a moment, then kill them."""
        if self.pool.phase in (Phase.STOPPING, Phase.HALTED):
            return
        self.carry_out(self.pool.quick())
        self.stop.quick()

    handle_quit = handle_int

    def handle_hup(self) -> None:
        """Reload: a new generation with the settings read anew; a bad file fails the reload at once."""
        if self.stopping or self.leaving:
            log.warning("reload ignored: stopping")  # `sockact reload` waits, then says the process exited
            return
        self.notifier.reloading()
        requests = self.notifier.claim_reload_requests()  # the `sockact reload` processes this HUP answers
        config, error = self.config, None
        if self.reload_config is not None:
            try:
                config = self.reload_config()
                config.check_names([lst.name for lst in self.listeners])
                check_reload(self.config, config, [lst.name for lst in self.listeners])
                self.forker.delegate(config)
            except SockactError as exc:
                error = "; ".join(str(exc).splitlines())
            except Exception as exc:  # a settings source that fails in a way not foreseen fails the reload, not us
                log.exception("reload: reading the settings failed")
                error = f"reading the settings failed: {type(exc).__name__}: {exc}"
        if error is None and self.apps is not None and _apps(config, self.listeners) != set(self.apps):
            error = "with preload on, a changed app needs a restart"
        # Read once, at start (the log, the sockets, the hooks, a preloaded app): a reload that says
        # "done" must not look as if it took them, so it names each and carries on with the rest.
        activated = not any(lst.owned for lst in self.listeners)
        changed = unapplied(self.started, config, activated) if error is None else []
        # A value of the file edited where a flag or the environment wins: the edit changes nothing.
        shadowed = [note for note in config.overridden if note not in self.config.overridden] if error is None else []
        notes = [f"{change}, applied at the next restart" for change in changed]
        if changed:
            log.warning("reload: settings read only at start changed: %s", "; ".join(notes))
        for note in shadowed:
            log.warning("reload: %s", note)
        if error is None:  # a file that fails at once leaves the note of a reload under way as it was
            self.reload_note = "; ".join(notes + shadowed)
            self.hooks.call("on_reload", HookServer(os.getpid(), config))
            self.channels.failure_said = None  # a failed reload's number comes again: its failure is said anew
            lifecycle(log, "reload", "reloading: starting generation %d of %d workers",
                      self.pool.current.number + 1, config.workers)
        self.carry_out(self.pool.hup(config, error, time.monotonic(), requests))

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
        before = self.pool.current.target
        self.carry_out(self.pool.resize(+1, time.monotonic()))
        if self.pool.current.target == before:  # the most the scoreboard follows in one generation
            log.warning("SIGTTIN ignored: %d workers are the most; nothing changes", before)
        else:
            log.info("one worker more: %d", self.pool.current.target)

    def handle_ttou(self) -> None:
        before = self.pool.current.target
        self.carry_out(self.pool.resize(-1, time.monotonic()))
        if self.pool.current.target == before:  # the pool keeps one worker at least
            log.info("SIGTTOU ignored: %d worker is the fewest; nothing changes", before)
        else:
            log.info("one worker fewer: %d", self.pool.current.target)

    def handle_chld(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exits.exited(pid, status)

    # ------------------------------------------------------------------ the pool's actions

    def carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Spawn):
                self.forker.spawn(action.generation, action.config)
            elif isinstance(action, Retire):
                self.dispatcher.remove(action.pid)
                if action.pid in self.workers:
                    w = self.workers[action.pid]
                    w.retire()
                    for conn in self.switchboard.take_outbox(w):
                        self.rehome(conn)
            elif isinstance(action, Kill):
                self.dispatcher.remove(action.pid)
                if action.pid in self.workers:
                    self.workers[action.pid].signal(action.signum)
            elif isinstance(action, Halt):
                log.error("%s", action.reason)
                self.notifier.halted(action.reason)
                self.exit_code = action.exit_code  # the pool is HALTED: what follows is a quick stop
                self.stop.turn_away()
                self.stop.quick()
            elif isinstance(action, Ready):
                self.notifier.ready(self.status_line())
                lifecycle(log, "ready", "ready: %d workers serving on %s", self.pool.current.target,
                          ", ".join(f"{lst.name}={lst.address}" for lst in self.listeners))
                self.hooks.call("when_ready", HookServer(os.getpid(), self.config))
            elif isinstance(action, Reloaded):
                self.counters.reloads["succeeded"] += 1
                self._apply_settings()
                lifecycle(log, "ready", "reload done: generation %d serving", action.generation)
                self.notifier.reload_finished(True, self.reload_note, answers=action.answers)
            elif isinstance(action, ReloadFailed):
                self.counters.reloads["failed"] += 1
                log.error("reload failed: %s", failed_reload(action.reason, action.kept))
                self.notifier.reload_finished(False, action.reason, action.kept, action.answers, action.under_way)

    def retire(self, pid: int) -> None:
        """Retire worker ``pid`` now, through the pool, as every retirement goes."""
        self.carry_out(self.pool.retire(pid))

    def rehome(self, conn: Conn) -> None:
        """A connection that never reached a retired worker: another worker, or at a stop the fd store."""
        if self.stopping and self.store.keeping:
            self.store.store(conn)
        else:
            self.switchboard.route(conn)

    def _apply_settings(self) -> None:
        """The supervisor's own share of a new generation's settings."""
        config = self.config
        self.parked.keepalive = [config.listener(lst.name).keepalive for lst in self.listeners]
        self.switchboard.head_limits = _head_limits(config, self.listeners)
        self.dispatcher.queue_size = config.queue_size

    # ------------------------------------------------------------------ timers

    def _tick(self, now: float) -> None:
        assert self.health is not None
        # This process stood still (stopped with its workers, as by a terminal's Ctrl-Z, or a paused
        # VM): the workers' heartbeats and calls stood still with it, so none is judged frozen or
        # stuck on this tick; a call that still runs at the next is judged then.
        resumed = now - self._next_tick > RESUMED_AFTER
        self._next_tick = now + min(TICK, self.notifier.watchdog_interval or TICK)
        if self.stopping:
            self.stop.tick(now)
            return
        if self.stop.left(now):
            self.handle_term()
            return
        self.switchboard.expire(now)
        if self.scrape.server is not None:
            self.scrape.server.expire(now)
        healthy = not self.pool.boot_overdue(now) and not self.pool.count(*TIMED_OUT)
        why = STUCK
        if self.pool.crash_looping():  # nothing serves, and nothing will for a while
            healthy, why = False, "workers keep crashing and none serves"
        for w, view in self.health.overdue(now, self.config.timeout):
            state = self.pool.state(w.pid)
            stuck = view.stuck(now, self.config.timeout)
            if state in TIMED_OUT or not (stuck or state in IN_SERVICE):
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
            self.carry_out(self.pool.timed_out(w.pid, now))
            if w.stopped():
                # Resumed to take its SIGABRT, it could read requests before it dies, and they
                # would be lost; killed as it is, they still wait unread for another worker.
                w.signal(signal.SIGKILL)
        self.memory.tick(now)
        self.carry_out(self.pool.tick(now))
        self.health.report(now, healthy, self.status_line(), why)
        self.switchboard.update_accepting(self.stopping)

    def _check_stalls(self, now: float) -> None:
        """Workers whose every app thread sits in one call get no new connections until they move."""
        self._next_stall_check = now + self.config.handback_after / 2
        for w in list(self.workers.values()):
            self.check_stall(w, now)

    def check_stall(self, w: WorkerProcess, now: float) -> None:
        assert self.health is not None
        state = self.pool.state(w.pid)
        if state not in IN_SERVICE:
            return
        stalled = self.health.view(w).stalled(w.threads, now, self.config.handback_after)
        if stalled and state is WorkerState.READY:
            self.pool.stalled(w.pid, True)
            self.dispatcher.pause(w.pid)
        elif not stalled and state is WorkerState.STALLED:
            self.pool.stalled(w.pid, False)
            self.switchboard.give(self.dispatcher.resume(w.pid))

    def status_line(self) -> str:
        assert self.health is not None
        ready = self.pool.count(*IN_SERVICE)
        return (f"{ready} workers ({self.health.busy()} busy), {self.pool.count(WorkerState.STALLED)} stalled, "
                f"{self.dispatcher.held} connections in workers, {len(self.parked)} parked, "
                f"{self.dispatcher.queued} queued, {self.health.requests()} requests served")

    # ------------------------------------------------------------------ plumbing

    def _watch_channel(self, w: WorkerProcess, writable: bool) -> None:
        """Also wake for room in ``w``'s channel while its outbox holds connections."""
        assert self.selector is not None
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if writable else 0)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.modify(w.chan, events, (self.channels.read, w))

    def register(self, sock: socket.socket | int, handler: Callable[[Any], None], arg: Any) -> None:
        assert self.selector is not None
        self.selector.register(sock, selectors.EVENT_READ, (handler, arg))

    def unregister(self, sock: socket.socket | int) -> None:
        assert self.selector is not None
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(sock)

    def _close_all(self) -> None:
        for w in self.workers.values():
            w.signal(signal.SIGKILL)
        for lst in self.listeners:
            lst.close()  # also unlinks a Unix socket path that sockact bound itself
        self.forker.release_fds()
        if self.scoreboard is not None:
            self.scoreboard.close()
        if self.tally is not None:
            self.tally.close()


def _chld_last(signum: int) -> bool:
    return signum == signal.SIGCHLD


# fds the supervisor keeps free for itself: channels of new workers, the journal, a reload's files.
# ENDING as a tuple: asked at every turn of the loop, and a frozenset of Enum members calls Enum.__hash__, a
# Python function, at each look-up, where a tuple compares by identity.
_ENDING = tuple(ENDING)
_FD_RESERVE = 64
_MAX_EVENTS = 256  # fds the loop takes from one epoll_wait(); the others stay ready for the next turn


class Selector(selectors.EpollSelector):
    """The supervisor's selector, with ready(): what select() gives the loop, for less. select() works
    out each key's events (the loop acts on readable and writable alike), looks each key up through a
    method, and asks the kernel for room for every fd registered; ready() does none of that."""

    def ready(self, timeout: float) -> list[tuple[Callable[[Any], None], Any]]:
        """The (handler, argument) registered with each fd that is ready, waiting up to ``timeout`` seconds."""
        fd_to_key = self._fd_to_key  # type: ignore[attr-defined]
        out = []
        for fd, _ in self._selector.poll(timeout, _MAX_EVENTS):  # type: ignore[attr-defined]
            key = fd_to_key.get(fd)
            if key is not None:  # as select() does: an fd no longer registered is skipped
                out.append(key.data)
        return out


def _head_limits(config: Config, listeners: list[Listener]) -> list[tuple[float, bool]]:
    return [(lc.header_timeout, lc.proxy_protocol != "off") for lc in (config.listener(lst.name) for lst in listeners)]


def _apps(config: Config, listeners: list[Listener]) -> set[str]:
    """The apps the workers serve (a preload imported them): not the metrics listener's."""
    return set(config.apps(lst.name for lst in listeners))
