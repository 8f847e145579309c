"""The worker process's shell, after the fork: set the process up, load the app, say READY.

The shell owns the channel and the process: signals, the app, READY. Serving belongs to
a runner, chosen by the apps' interface: wsgirunner.EventLoop holds many connections at once
and runs a WSGI app in ``threads`` to ``max_threads`` app threads; asgi.runner.AsgiRunner runs an ASGI app on an
asyncio loop, after the app's lifespan startup, before READY. An empty read on the channel
means the supervisor wants the worker gone (or has died): the runner hands back what it
holds, finishes the calls in progress, and returns.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import logging
import os
import signal
import socket
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sockact.apploader import WSGIApp, add_virtualenv, load_all
from sockact.asgi.interface import WSGI, choose, contradiction, one_interface
from sockact.config import Config, ListenerConfig
from sockact.errors import APP_LOAD_ERROR, EXIT_OK, WORKER_BOOT_ERROR, SockactError
from sockact.hooks import Loaded
from sockact.hooks import Server as HookServer
from sockact.hooks import Worker as HookWorker
from sockact.http import Limits, Site
from sockact.http.forwarded import Trust
from sockact.http.limits import OUTBOX_TOTAL, SpoolBudget
from sockact.http.site import client_budget, no_app
from sockact.ipc import handoff
from sockact.ipc.scoreboard import MAX_THREADS, Scoreboard, SpareLines, Waiting
from sockact.ipc.tally import Tally
from sockact.logs import flood
from sockact.logs.access import AccessLog
from sockact.logs.journal import installed_sendv
from sockact.proctitle import worker_title
from sockact.systemd import notify
from sockact.worker.guard import end_if_orphaned
from sockact.worker.wsgirunner import EventLoop

if TYPE_CHECKING:
    from sockact.worker.asgirunner import AsgiRunner

log = logging.getLogger("sockact.worker")

# The supervisor tells its workers that a stop is coming (drain_delay) with a signal no operator
# sends by hand: USR1 keeps gunicorn's meaning, reopen the log files, in every process of the
# service (`systemctl kill -s USR1` reaches the workers too).
DRAIN_SIGNAL = signal.SIGRTMIN
REOPEN_SIGNAL = signal.SIGUSR1
COLLECT_SIGNAL = signal.SIGRTMIN + 1  # the service is under memory pressure: collect garbage now


class WorkerShell:
    """One worker's life after the fork; built in the child (construction touches nothing)."""

    def __init__(self, chan: socket.socket, config: Config, listener_names: Sequence[str],
                 scoreboard: Scoreboard, slot: int, apps: Mapping[str, WSGIApp] | None,
                 max_requests: int, tally: Tally | None = None, hooks: Loaded | None = None,
                 locals_: Sequence[tuple[str, int] | None] = ()) -> None:
        self.chan = chan
        self.config = config
        self.listener_names = list(listener_names)
        self.locals = list(locals_)  # by listener: its connections' local address when one (Listener.local)
        self.scoreboard = scoreboard
        self.slot = slot
        self.preloaded = apps
        self.max_requests = max_requests  # with its jitter; 0: never recycled
        self.tally = tally  # request counts for the metrics; None: none are kept
        self.hooks = hooks or Loaded({})
        self.pid = 0
        self.runner: EventLoop | AsgiRunner | None = None
        self.access: AccessLog | None = None
        self.quitting = False  # a quick stop's signal came

    def run(self) -> int:
        """The worker's whole life; returns its exit code."""
        self.pid = os.getpid()
        step = ""  # what raised, for the supervisor's one line: the hook, not the app, when it is the hook
        try:
            self._setup_process()
            worker_title(self.slot + 1, self.config.app)
            step = "hook post_fork raised "
            self.hooks.call_or_raise("post_fork", *self._hook_args())
            step = ""
            sites = self._build_sites()
            self.runner = self._build_runner(sites)
            self.runner.on_retire = end_if_orphaned(os.getppid(), self.config.graceful_timeout)
        except SockactError as exc:
            _tell_why(self.chan, str(exc), exc.explained())
            # Any start-up error is fatal to the worker; the supervisor tells the two kinds apart.
            return exc.exit_code if exc.exit_code == APP_LOAD_ERROR else WORKER_BOOT_ERROR
        except Exception as exc:  # from the post_fork hook, or building the runner
            # (a hook's sys.exit() comes as "hook post_fork called sys.exit(3)", already naming the hook)
            exited = isinstance(exc.__cause__, SystemExit)
            reason = str(exc) if step and exited else f"{step}{type(exc).__name__}: {exc}"
            _tell_why(self.chan, reason, f"{reason}\n{traceback.format_exc().rstrip()}")
            return WORKER_BOOT_ERROR
        head = self.scoreboard.writer(self.slot, 0)
        self.runner.receiver.count = head.received  # which connections reached it, should it die
        try:
            head.beat()  # from READY on, a heartbeat that stops is a frozen worker
            handoff.send(self.chan, handoff.Message(handoff.READY))
        except OSError:
            return EXIT_OK  # the supervisor is gone already
        self.runner.run()
        flood.WORKER.due(time.monotonic(), every=True)  # what was left out is said before the worker goes
        if self.access is not None:
            self.access.flush()
        self.hooks.call("worker_exit", *self._hook_args())
        return EXIT_OK

    def _hook_args(self) -> tuple[HookServer, HookWorker]:
        return HookServer(os.getppid(), self.config), HookWorker(self.pid, self.slot + 1)

    def _build_runner(self, sites: list[Site]) -> EventLoop | AsgiRunner:
        """The runner for the listeners' interface; an ASGI app's lifespan startup runs here, before READY."""
        listeners = [self.config.listener(name) for name in self.listener_names]
        # Only the listeners a worker serves (not the metrics one) choose its interface and run a lifespan.
        served = [(lc, site) for lc, site in zip(listeners, sites, strict=True)
                  if self.config.serves(lc.name)]
        chosen = [(lc.name, choose(lc.interface, site.app)) for lc, site in served]
        interface = one_interface(chosen)
        for (lc, site), (_, kind) in zip(served, chosen, strict=True):
            how = "detected" if lc.interface == "auto" else "set"
            log.info("worker %d: listener %s serves %s as %s (%s)", self.pid, lc.name, lc.app, kind.upper(), how)
            if wrong := contradiction(lc.interface, site.app):
                log.warning("worker %d: listener %s: %s: %s", self.pid, lc.name, lc.app, wrong)
        # A line per app thread up to the ceiling: the supervisor reads that many (workers.py).
        lines = self.config.thread_ceiling
        slots = [self.scoreboard.writer(self.slot, i) for i in range(lines)]
        park_after = [lc.park_after for lc in listeners]
        extra: dict[str, object] = {"sockact.worker_pid": self.pid}
        if interface == WSGI:
            log.info("worker %d: %s", self.pid, self.config.thread_mode())
            return EventLoop(self.chan, sites, slots, park_after=park_after,
                             tallies=self.tally.writers(self.slot, lines) if self.tally else None,
                             handback_after=self.config.handback_after, max_requests=self.max_requests,
                             extra=extra, access=self.access, floor=self.config.threads,
                             thread_idle_timeout=self.config.thread_idle_timeout,
                             waiting=Waiting([self.scoreboard.writer(self.slot, i)
                                              for i in range(lines, MAX_THREADS)]))
        if (unused := self.config.threads_unused()) and self.slot == 0:
            log.warning("worker %d: %s", self.pid, unused)  # from the first slot's worker, not from each
        # asyncio and the ASGI runner only where an ASGI app runs: the supervisor (and a WSGI
        # worker) stays without them, and smaller.
        from sockact.asgi.lifespan import Lifespan
        from sockact.worker.asgirunner import AsgiRunner

        by_app: dict[str, Lifespan] = {}  # one an app, however many listeners serve it
        of = {lc.name: by_app.setdefault(lc.app, Lifespan(site.app, self.config.lifespan, lc.app))
              for lc, site in served}
        lifespans = [of.get(lc.name) for lc in listeners]  # None: a listener that serves no app
        runner = AsgiRunner(self.chan, sites, slots, park_after=park_after,
                            handback_after=self.config.handback_after, max_requests=self.max_requests,
                            extra=extra, lifespans=lifespans, graceful_timeout=self.config.graceful_timeout,
                            ws=self.config.ws, ws_max_size=self.config.ws_max_size,
                            ws_ping=(self.config.ws_ping_interval, self.config.ws_ping_timeout),
                            access=self.access, tally=self.tally.writer(self.slot, 0) if self.tally else None,
                            call_lines=[self.scoreboard.writer(self.slot, i)
                                        for i in range(lines, MAX_THREADS)],
                            spare=SpareLines(self.scoreboard, self.slot))
        runner.startup()
        return runner

    def _setup_process(self) -> None:
        # The supervisor's handlers came across the fork; replace every one of them, then let the
        # signals it blocked around fork() through (the supervisor already dropped its wakeup fd).
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._quick_exit)
        signal.signal(signal.SIGQUIT, self._quick_exit)
        signal.signal(DRAIN_SIGNAL, self._on_drain)
        signal.signal(REOPEN_SIGNAL, self._on_reopen)
        # Here, not by waking the loop: CPython collects at any allocation anyway, so a collection
        # between two bytecodes of the loop's thread is nothing new.
        signal.signal(COLLECT_SIGNAL, lambda signum, frame: gc.collect())
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2, signal.SIGWINCH):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        # SIGABRT (sent for --timeout) first dumps where the worker is stuck to stderr, then kills it.
        faulthandler.enable(all_threads=True)
        notify.forget(os.environ)

    def _quick_exit(self, signum: int, frame: object) -> None:
        # A quick stop (Ctrl-C, or the supervisor's SIGQUIT): out at once, but with the access lines of the
        # requests already answered (a worker flushes them only once idle, or every FLUSH_INTERVAL).
        if self.quitting:
            return  # Ctrl-C's SIGINT and the supervisor's SIGQUIT both come: the second, inside the first's flush
        self.quitting = True
        if self.access is not None:
            self.access.flush_before_exit()
        os._exit(EXIT_OK)

    def _on_term(self, signum: int, frame: object) -> None:
        # Graceful stop: finish the calls in hand, answer them with Connection: close.
        if self.runner is not None:
            self.runner.stopping = True

    def _on_drain(self, signum: int, frame: object) -> None:
        # A stop is coming (drain_delay): the health path answers 503, responses close their connections.
        if self.runner is not None:
            self.runner.draining = True

    def _on_reopen(self, signum: int, frame: object) -> None:
        # USR1, as gunicorn's: the access log file is opened anew before its next line (the error
        # log's handler notices a rotated file at each line by itself).
        if self.access is not None:
            self.access.reopen()

    def _build_sites(self) -> list[Site]:
        apps = self.preloaded
        if apps is None:
            add_virtualenv(self.config.virtualenv)
            apps = load_all(self.config.apps(self.listener_names))
        if any(self.config.listener(name).access_log for name in self.listener_names):
            self.access = AccessLog(self.config.access_logformat, self.config.access_logfile, installed_sendv())
        locals_ = self.locals or [None] * len(self.listener_names)
        budget = SpoolBudget(self.config.body_spool_total)  # the worker's, whichever listener a body came on
        outboxes = SpoolBudget(OUTBOX_TOTAL)  # the same, for the tails of WSGI responses
        return [self._site(self.config.listener(name), apps, budget, outboxes, local)
                for name, local in zip(self.listener_names, locals_, strict=True)]

    def _site(self, lc: ListenerConfig, apps: Mapping[str, WSGIApp], budget: SpoolBudget, outboxes: SpoolBudget,
              local: tuple[str, int] | None = None) -> Site:
        app = apps[lc.app] if self.config.serves(lc.name) else no_app
        limits = Limits(
            request_line=lc.limit_request_line, header_fields=lc.limit_request_fields,
            header_field_size=lc.limit_request_field_size, head=lc.limit_request_head,
            body=lc.limit_request_body, host_required=True)
        site = Site(app=app, limits=limits, header_timeout=lc.header_timeout,
                    io_timeout=self.config.timeout or IO_TIMEOUT_OFF, access_log=lc.access_log, listener=lc.name,
                    access=self.access, trust=Trust.kept(lc.forwarded_allow_ips),
                    health_path=lc.health_path.encode("ascii"), proxy_protocol=lc.proxy_protocol,
                    body_buffer=lc.body_buffer, body_spool=lc.body_spool, spool_budget=budget, outbox_budget=outboxes,
                    send_timeout=self.config.send_timeout, root_path=lc.root_path,
                    threaded=self.config.thread_ceiling > 1, client_budget=client_budget(self.config.timeout),
                    local=local)
        return site


def prepare(config: Config, listener_names: Sequence[str]) -> None:
    """Made in the supervisor before it forks a worker, rather than in the worker's start: what the worker
    would make the same, each kept once a process (Trust.kept, AccessLog.line_builder). Made after the fork,
    by the compilers that make them (re's, Python's for the generated line builder) and code run there
    for the first time, they took a worker some 1 MiB of private memory: the objects made, and the pages
    of shared objects their reference counts and first runs write to. A setting the worker cannot use
    is left to the worker, which reports it as it fails to start."""
    with contextlib.suppress(ValueError):
        for name in listener_names:
            Trust.kept(config.listener(name).forwarded_allow_ips)
        if any(config.listener(name).access_log for name in listener_names):
            AccessLog.line_builder(config.access_logformat, config.access_logfile, installed_sendv())


# With timeout = 0 (no timeout), a blocking send or body read still gives up on a client after this long.
IO_TIMEOUT_OFF = 30.0


def _tell_why(chan: socket.socket, reason: str, explained: str) -> None:
    """Give the supervisor why this worker cannot start: the one-line reason, for a failed reload's
    outcome, and the whole text (a traceback), which the supervisor logs.

    The supervisor logs it, not this worker: journald names the unit of an entry from the sender's
    cgroup, which it cannot read once the sender has exited, and this worker exits at once. Such an
    entry would be missing from `journalctl -u`.
    """
    try:
        handoff.send(chan, handoff.failed(reason, explained))
    except OSError:  # the supervisor is gone: say it here
        log.error("worker %d cannot start: %s", os.getpid(), explained, extra={"SOCKACT_WORKER_PID": os.getpid()})

