"""The supervisor's event loop: listeners, worker channels, parked connections, signals, timers.

One thread, one selector. Signal handlers do nothing but let the C-level wakeup fd wake
the loop; the loop then calls ``handle_<signal>()``. Decisions about which worker gets a
connection belong to dispatch.Dispatcher; this module only moves fds and processes.

Who owns a connection's fd, state by state (exactly one owner at a time):
    accepted / queued   the supervisor (in the dispatcher's queue)
    handed off          the worker (the supervisor closes its copy once the send succeeds)
    parked              the supervisor (registered in the selector, closed after --keepalive)
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import resource
import select
import selectors
import signal
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import handoff
from .accesslog import escape
from .activation import Listener
from .apploader import WSGIApp
from .dispatch import Dispatcher
from .errors import APP_LOAD_ERROR, EXIT_OK, WORKER_BOOT_ERROR, HandoffError, SockactError
from .journal import lifecycle
from .notify import Notifier
from .parking import Conn, ParkingLot
from .scoreboard import Scoreboard
from .worker import WorkerLoop
from .workers import BOOTING, READY, RETIRING, WorkerProcess, describe_status, spawn

log = logging.getLogger("sockact.supervisor")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                   signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD)
TICK = 0.5  # seconds between timer checks (keep-alive expiry, --timeout, STATUS)
STATUS_INTERVAL = 1.0  # systemd asks for STATUS= no more than about once a second
ABORT_GRACE = 2.0  # after SIGABRT for --timeout, SIGKILL if the worker is still there
QUICK_STOP_GRACE = 1.0
MAX_BACKOFF = 10.0  # seconds between respawns when workers keep dying at start-up
SCOREBOARD_SLOTS = 1024  # most workers alive at once, old and new generations together


class Supervisor:
    def __init__(self, config: Any, listeners: list[Listener], notifier: Notifier,
                 apps: Mapping[str, WSGIApp] | None = None,
                 reload_config: Callable[[], Any] | None = None) -> None:
        self.config = config
        self.reload_config = reload_config  # re-reads the settings' sources at HUP
        self.listeners = listeners
        self.notifier = notifier
        self.apps = apps  # preloaded apps, or None to import in each worker
        self.dispatcher: Dispatcher[int, Conn] = Dispatcher(config.queue_size)
        self.workers: dict[int, WorkerProcess] = {}
        self.parked = ParkingLot([config.listener(lst.name).keepalive for lst in listeners])
        self.target = config.workers
        self.generation = 0
        self.requests = 0
        self.stopping: str | None = None  # None, "graceful" or "quick"
        self.exit_code = EXIT_OK
        self.ever_ready = False
        self.reloading = False
        self._selector: selectors.BaseSelector | None = None
        self._scoreboard: Scoreboard | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._accepting = False
        self._next_conn_id = 1
        self._stop_deadline = 0.0
        self._spawn_after = 0.0
        self._boot_failures = 0
        self._next_tick = 0.0
        self._next_status = 0.0
        self._next_ping = 0.0
        self._unhealthy_logged = False
        self._last_progress = (0, 0)
        self._fd_limit: tuple[int, int] | None = None  # the limits before run() raised them

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        self._selector = selectors.DefaultSelector()
        self._scoreboard = Scoreboard(SCOREBOARD_SLOTS)
        self._fd_limit = _raise_fd_limit()
        self._install_signals()
        try:
            self._set_accepting(True)
            self._maintain()
            while not (self.stopping and not self.workers):
                self._loop_once()
        finally:
            self._close_all()
        return self.exit_code

    def _loop_once(self) -> None:
        assert self._selector is not None and self._scoreboard is not None
        for key, _ in self._selector.select(max(0.0, self._next_tick - time.monotonic())):
            handler, arg = key.data
            handler(arg)
        self._scoreboard.set_waiting(self.dispatcher.queued)
        now = time.monotonic()
        if now >= self._next_tick:
            self._tick(now)

    # ------------------------------------------------------------------ signals

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for sig in HANDLED_SIGNALS:
            # A Python-level handler is needed for the wakeup fd to be written; it does nothing else.
            signal.signal(sig, _wake_only)
        self._register(self._wake_r, self._on_wakeup, None)

    def _on_wakeup(self, _: None) -> None:
        assert self._wake_r is not None
        while True:
            try:
                data = self._wake_r.recv(512)
            except BlockingIOError:
                return
            for signum in data:
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
        self.stopping = "graceful"
        self._stop_deadline = time.monotonic() + self.config.graceful_timeout
        self.notifier.stopping()
        lifecycle(log, "stop", "stopping: draining %d busy workers (graceful timeout %.0fs)",
                  self.dispatcher.busy, self.config.graceful_timeout)
        self._set_accepting(False)
        self._close_parked(serve_readable=True)
        for w in self.workers.values():
            w.signal(signal.SIGTERM)  # in-flight responses will carry Connection: close
        self._retire_idle_when_drained()

    def handle_int(self) -> None:
        """Quick stop: close everything, give workers a moment, then kill them."""
        if self.stopping == "quick":
            return
        self.stopping = "quick"
        self._stop_deadline = time.monotonic() + QUICK_STOP_GRACE
        self.notifier.stopping()
        lifecycle(log, "stop", "quick stop")
        self._set_accepting(False)
        self._close_held()
        for w in self.workers.values():
            w.signal(signal.SIGQUIT)

    handle_quit = handle_int

    def handle_hup(self) -> None:
        """Reload: start a new generation; each new worker that is ready retires an old one."""
        if self.stopping:
            return
        self._reread_config()
        self.generation += 1
        self.reloading = True
        self._boot_failures = 0
        self._spawn_after = 0.0
        self.notifier.reloading()
        lifecycle(log, "reload", "reloading: starting generation %d of %d workers", self.generation, self.target)
        self._maintain()

    def _reread_config(self) -> None:
        """Take the settings anew for the next generation; a bad file keeps the running ones.

        Listening sockets, preloaded apps and logging stay as they are: they belong to the
        supervisor, which a reload does not restart.
        """
        if self.reload_config is None:
            return
        try:
            config = self.reload_config()
        except SockactError as exc:
            log.error("reload: %s; keeping the running settings", exc)
            return
        self.config = config
        self.target = config.workers
        self.parked.keepalive = [config.listener(lst.name).keepalive for lst in self.listeners]
        self.dispatcher.queue_size = config.queue_size

    def handle_ttin(self) -> None:
        self.target += 1
        log.info("one worker more: %d", self.target)
        self._maintain()

    def handle_ttou(self) -> None:
        self.target = max(1, self.target - 1)
        log.info("one worker fewer: %d", self.target)
        self._maintain()

    def handle_chld(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._worker_exited(pid, status)

    # ------------------------------------------------------------------ workers

    def _maintain(self) -> None:
        """Spawn or retire workers of the current generation to reach the target count."""
        if self.stopping:
            return
        current = [w for w in self.workers.values() if w.generation == self.generation and w.state != RETIRING]
        missing = self.target - len(current)
        if missing > 0 and time.monotonic() >= self._spawn_after:
            for _ in range(missing):
                self._spawn()
        elif missing < 0:
            # Retire the least useful first: booting, then idle, then busy.
            current.sort(key=lambda w: (w.state != BOOTING, self.dispatcher.is_busy(w.pid)))
            for w in current[:-missing]:
                self._retire(w)

    def _spawn(self) -> None:
        assert self._scoreboard is not None
        try:
            slot = self._scoreboard.allocate()
        except IndexError:
            log.error("cannot start a worker: %d workers alive already", SCOREBOARD_SLOTS)
            return
        names = [lst.name for lst in self.listeners]
        scoreboard, config, apps = self._scoreboard, self.config, self.apps

        def child_main(chan: socket.socket) -> int:
            return WorkerLoop(chan, config, names, scoreboard.writer(slot), apps).run()

        jitter = random.randint(0, self.config.max_requests_jitter) if self.config.max_requests else 0
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            w = spawn(child_main, self._close_in_child, slot, self.generation, self.config.max_requests + jitter)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        self.workers[w.pid] = w
        self._register(w.chan, self._on_channel, w)
        lifecycle(log, "worker_spawned", "worker %d started (generation %d)", w.pid, w.generation,
                  sockact_worker_pid=w.pid)

    def _close_in_child(self) -> None:
        """In a new worker: drop every descriptor that belongs to the supervisor.

        Signals stay blocked until the worker has installed its own handlers (WorkerLoop).
        """
        signal.set_wakeup_fd(-1)
        # A worker holds a handful of fds; the app may still use select(), which breaks above 1024.
        if self._fd_limit and resource.getrlimit(resource.RLIMIT_NOFILE) != self._fd_limit:
            with contextlib.suppress(ValueError, OSError):  # a seccomp filter may forbid it
                resource.setrlimit(resource.RLIMIT_NOFILE, self._fd_limit)
        if self._selector is not None:
            self._selector.close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        for lst in self.listeners:
            lst.sock.close()
        for w in self.workers.values():
            w.chan.close()
        for conn in self.parked:
            os.close(conn.fd)
        for conn in self.dispatcher.take_queued():
            os.close(conn.fd)

    def _retire(self, w: WorkerProcess) -> None:
        self.dispatcher.worker_gone(w.pid)
        w.retire()

    def _on_channel(self, w: WorkerProcess) -> None:
        # One message per wakeup: the selector is level-triggered, so another pending message wakes
        # us again, and the common case (one reply) saves a recvmsg() that would fail with EAGAIN.
        try:
            msg = w.receiver.recv()
        except BlockingIOError:
            return
        except HandoffError as exc:
            log.error("worker %d sent a bad message (%s); killing it", w.pid, exc)
            w.signal(signal.SIGKILL)
            return
        except OSError:
            msg = None
        if msg is None:  # the worker is exiting; SIGCHLD will reap it
            self._unregister(w.chan)
            self.dispatcher.worker_gone(w.pid)
            return
        if msg.kind == handoff.READY:
            self._worker_ready(w)
        elif msg.kind in (handoff.PARK, handoff.DONE):
            self.requests += msg.requests
            w.requests += msg.requests
            if msg.kind == handoff.PARK:
                self._park(Conn(msg.conn_id, msg.fd, msg.listener, msg.family, msg.peer, msg.hops))
            self._worker_idle(w)

    def _worker_ready(self, w: WorkerProcess) -> None:
        if w.state == RETIRING:
            return
        w.state = READY
        self._boot_failures = 0
        if w.generation < self.generation:
            self._retire(w)  # an old worker finished booting after a reload began
            return
        # Rolling reload: each worker of the new generation that is ready replaces one old worker.
        old = next((o for o in self.workers.values() if o.generation < self.generation and o.state != RETIRING),
                   None)
        if old is not None:
            self._retire(old)
        self._worker_idle(w)
        self._check_ready()

    def _check_ready(self) -> None:
        ready = sum(1 for o in self.workers.values() if o.state == READY and o.generation == self.generation)
        if ready < self.target:
            return
        if not self.ever_ready:
            self.ever_ready = True
            self.notifier.ready(self.status_line())
            lifecycle(log, "ready", "ready: %d workers serving on %s", ready,
                      ", ".join(f"{lst.name}={lst.address}" for lst in self.listeners))
        elif self.reloading:
            self.reloading = False
            self.notifier.ready(self.status_line())
            lifecycle(log, "ready", "reload done: generation %d serving", self.generation)

    def _worker_idle(self, w: WorkerProcess) -> None:
        if w.state != READY:
            return
        if w.max_requests and w.requests >= w.max_requests:
            log.info("worker %d served %d requests: recycling it", w.pid, w.requests)
            self._retire(w)
            self._maintain()
            return
        assignment = self.dispatcher.worker_ready(w.pid)
        if assignment is not None:
            self._hand_off(*assignment)
        self._retire_idle_when_drained()
        if not self._accepting and not self.stopping and self.dispatcher.accepting:
            self._set_accepting(True)

    def _worker_exited(self, pid: int, status: int) -> None:
        w = self.workers.pop(pid, None)
        if w is None:
            return  # a child of the app's, not a worker
        assert self._scoreboard is not None
        self._unregister(w.chan)
        w.chan.close()
        self._scoreboard.release(w.slot)
        self.dispatcher.worker_gone(pid)
        how, code, _ = describe_status(status)
        expected = w.state == RETIRING or self.stopping
        lifecycle(log, "worker_exited", "worker %d %s", pid, how,
                  level=logging.INFO if expected else logging.WARNING,
                  sockact_worker_pid=pid, exit_status=code if code is not None else -1)
        if self.stopping:
            return
        if w.state == BOOTING:
            self._boot_failed(w, code)
        self._maintain()

    def _boot_failed(self, w: WorkerProcess, code: int | None) -> None:
        app_broken = code in (APP_LOAD_ERROR, WORKER_BOOT_ERROR)
        if app_broken and not self.ever_ready:
            # The app cannot load at all: respawning would loop forever. Halt with the worker's code.
            log.error("the app failed to load (worker exit code %s); stopping", code)
            self.exit_code = code or APP_LOAD_ERROR
            self.handle_int()
            return
        if app_broken and self.reloading:
            self._abort_reload()
            return
        self._boot_failures += 1
        delay = min(MAX_BACKOFF, 0.1 * 2 ** self._boot_failures)
        self._spawn_after = time.monotonic() + delay
        log.warning("worker died while starting (%d in a row); next start in %.1fs", self._boot_failures, delay)

    def _abort_reload(self) -> None:
        """A new generation cannot load the app: keep serving with the workers we have."""
        log.error("reload failed: the new code does not load; keeping generation %d", self.generation - 1)
        for w in list(self.workers.values()):
            if w.state == BOOTING and w.generation == self.generation:
                self._retire(w)
                w.signal(signal.SIGKILL)
            elif w.state != RETIRING:
                w.generation = self.generation  # adopt the old workers into the current generation
        self.reloading = False
        self.notifier.ready(self.status_line() + " (reload failed)")

    # ------------------------------------------------------------------ connections

    def _set_accepting(self, on: bool) -> None:
        if on == self._accepting:
            return
        self._accepting = on
        for index, lst in enumerate(self.listeners):
            if on:
                self._register(lst.sock, self._on_listener, index)
            else:
                self._unregister(lst.sock)

    def _on_listener(self, index: int) -> None:
        lsock = self.listeners[index].sock
        while self.dispatcher.accepting:
            try:
                # _accept() is accept4(SOCK_CLOEXEC) without wrapping the fd in a socket object.
                fd, addr = lsock._accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept: %s; leaving new clients in the backlog for a moment", exc.strerror)
                    self._set_accepting(False)  # the next tick accepts again
                    return
                continue  # ECONNABORTED and friends: that client is gone, take the next one
            family = lsock.family
            peer = (addr[0], addr[1]) if family != socket.AF_UNIX else None
            conn = Conn(self._next_conn_id, fd, index, family, peer)
            self._next_conn_id += 1
            self._route(conn)
        self._set_accepting(False)  # the queue is full: let the kernel backlog hold clients

    def _route(self, conn: Conn) -> None:
        assignment = self.dispatcher.offer(conn)
        if assignment is not None:
            self._hand_off(*assignment)

    def _hand_off(self, pid: int, conn: Conn) -> None:
        w = self.workers[pid]
        conn.hops += 1
        msg = handoff.Message(handoff.CONN, conn.id, conn.listener, conn.family, conn.peer, conn.hops,
                              data=conn.data, fd=conn.fd)
        try:
            handoff.send(w.chan, msg)
        except OSError as exc:
            log.warning("cannot hand connection %d to worker %d (%s); trying another", conn.id, pid, exc)
            self.dispatcher.worker_gone(pid)
            w.signal(signal.SIGKILL)
            conn.hops -= 1
            self._route(conn)
            return
        os.close(conn.fd)  # the worker owns it now

    def _park(self, conn: Conn) -> None:
        if self.stopping:
            os.close(conn.fd)
            return
        self.parked.park(conn, time.monotonic())
        self._register(conn.fd, self._on_parked, conn)

    def _on_parked(self, conn: Conn) -> None:
        # Readable: a request, or the client hanging up. Either way a worker reads it; peeking
        # here first would cost a syscall on every keep-alive request to save one on the last.
        self._unregister(conn.fd)
        self.parked.unpark(conn)
        self._route(conn)

    def _close_parked(self, serve_readable: bool) -> None:
        for conn in self.parked.take_all():
            self._unregister(conn.fd)
            if serve_readable and _readable(conn.fd):
                self._route(conn)  # a request may be on its way: serve it, then close
            else:
                os.close(conn.fd)

    def _retire_idle_when_drained(self) -> None:
        if self.stopping != "graceful" or self.dispatcher.queued:
            return
        for w in list(self.workers.values()):
            if w.state != RETIRING and not self.dispatcher.is_busy(w.pid):
                self._retire(w)

    # ------------------------------------------------------------------ timers

    def _tick(self, now: float) -> None:
        self._next_tick = now + min(TICK, self.notifier.watchdog_interval or TICK)
        if self.stopping:
            self._tick_stopping(now)
            return
        for conn in self.parked.expired(now):
            self._unregister(conn.fd)
            os.close(conn.fd)
        healthy = self._check_timeouts(now)
        if self.notifier.watchdog_interval and now >= self._next_ping:
            if healthy:
                self.notifier.watchdog()
                self._next_ping = now + self.notifier.watchdog_interval
                self._unhealthy_logged = False
            elif not self._unhealthy_logged:
                self._unhealthy_logged = True
                lifecycle(log, "watchdog_unhealthy", "unhealthy: a worker is stuck past --timeout; "
                          "withholding watchdog pings", level=logging.WARNING)
        if now >= self._next_status:
            self._next_status = now + STATUS_INTERVAL
            self.notifier.status(self.status_line())
        if not self._accepting and self.dispatcher.accepting:
            self._set_accepting(True)
        self._maintain()

    def _tick_stopping(self, now: float) -> None:
        if now >= self._stop_deadline:
            for w in self.workers.values():
                if not w.aborted_at:
                    log.warning("worker %d did not finish in time; killing it", w.pid)
                    w.signal(signal.SIGKILL)
                    w.aborted_at = now
            return
        progress = (self.requests, len(self.workers))
        if progress != self._last_progress:
            # Still draining and moving: ask systemd for more time, a little at a time.
            self._last_progress = progress
            self.notifier.extend_timeout(min(self._stop_deadline - now, 5.0) + 1.0)
        self.notifier.status(f"stopping: {len(self.workers)} workers left, {self.dispatcher.busy} busy")

    def _check_timeouts(self, now: float) -> bool:
        """Abort workers stuck past --timeout; True when no busy worker is overdue."""
        assert self._scoreboard is not None
        healthy = True
        for w in self.workers.values():
            if not self.dispatcher.is_busy(w.pid) and not w.aborted_at:
                continue
            started, _, raw = self._scoreboard.read(w.slot)
            line = escape(raw)  # the client's path: it must not forge a log line
            if w.aborted_at:
                healthy = False
                if now - w.aborted_at > ABORT_GRACE:
                    w.signal(signal.SIGKILL)
            elif started and now - started > self.config.timeout:
                healthy = False
                w.aborted_at = now
                lifecycle(log, "worker_timeout", "worker %d stuck for %.1fs on %s; killing it", w.pid,
                          now - started, line or "a request", level=logging.ERROR,
                          sockact_worker_pid=w.pid, http_request=line)
                self.dispatcher.worker_gone(w.pid)
                w.signal(signal.SIGABRT)
        return healthy

    def status_line(self) -> str:
        parked = len(self.parked)
        ready = sum(1 for w in self.workers.values() if w.state == READY)
        return (f"{ready} workers ({self.dispatcher.busy} busy), {parked} parked, "
                f"{self.dispatcher.queued} queued, {self.requests} requests served")

    # ------------------------------------------------------------------ plumbing

    def _register(self, sock: socket.socket | int, handler: Callable[[Any], None], arg: Any) -> None:
        assert self._selector is not None
        self._selector.register(sock, selectors.EVENT_READ, (handler, arg))

    def _unregister(self, sock: socket.socket | int) -> None:
        assert self._selector is not None
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def _close_held(self) -> None:
        """Close every connection the supervisor holds, parked or queued."""
        self._close_parked(serve_readable=False)
        for conn in self.dispatcher.take_queued():
            os.close(conn.fd)

    def _close_all(self) -> None:
        self._close_held()
        for w in self.workers.values():
            w.signal(signal.SIGKILL)
            w.chan.close()
        signal.set_wakeup_fd(-1)
        for lst in self.listeners:
            lst.close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._selector is not None:
            self._selector.close()
        if self._scoreboard is not None:
            self._scoreboard.close()


def _readable(fd: int) -> bool:
    """Whether a parked connection has something to read (a request, or end-of-file)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _raise_fd_limit() -> tuple[int, int]:
    """Lift the soft fd limit to the hard one: every parked keep-alive client holds one fd here.

    systemd gives services a soft limit of 1024 and a hard one far above it, expecting programs
    that need more (and do not use select()) to raise it themselves. Returns the old limits.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("open-files limit stays at %d (%s); set LimitNOFILE= in the unit for more "
                        "parked clients", soft, exc)
    return soft, hard


def _wake_only(signum: int, frame: object) -> None:
    """Signal handler: the wakeup fd has already woken the loop; nothing to do here."""
