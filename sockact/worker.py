"""The worker process's own main loop, after the fork.

A worker loads its apps, says READY, then serves one connection at a time: it receives
the fd over its channel, serves requests synchronously until the connection is idle at a
request boundary, and hands it back (PARK) or reports it closed (DONE). It never waits
on an idle client. An empty read on the channel means the supervisor wants it gone (or
has died): it exits once the connection in hand is finished.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import select
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import handoff, notify
from .apploader import WSGIApp, add_virtualenv, load_all
from .errors import APP_LOAD_ERROR, EXIT_OK, WORKER_BOOT_ERROR, HandoffError, SockactError
from .http import Limits, Outcome, Site, serve_connection
from .scoreboard import SlotWriter

log = logging.getLogger("sockact.worker")

# How long a worker waits on its keep-alive connection for the next request before parking it,
# when no other connection is queued: a couple of loopback or LAN round trips.
LINGER_MS = 2


class WorkerLoop:
    """Serves connections handed over ``chan`` until the supervisor closes it."""

    def __init__(self, chan: socket.socket, config: Any, listener_names: Sequence[str],
                 slot: SlotWriter, apps: Mapping[str, WSGIApp] | None) -> None:
        # Nothing here touches the process: this object is built before the fork.
        self.chan = chan
        self.config = config
        self.listener_names = list(listener_names)
        self.slot = slot
        self.preloaded = apps
        self.stopping = False
        self.pid = 0
        self.sites: list[Site] = []

    def run(self) -> int:
        """The worker's whole life; returns its exit code."""
        self.pid = os.getpid()
        try:
            self._setup_process()
            self.sites = self._build_sites()
        except SockactError as exc:
            log.error("worker %d cannot start: %s", self.pid, exc, extra={"SOCKACT_WORKER_PID": self.pid})
            # Any start-up error is fatal to the worker; the supervisor tells the two kinds apart.
            return exc.exit_code if exc.exit_code == APP_LOAD_ERROR else WORKER_BOOT_ERROR
        except Exception:
            log.exception("worker %d failed while loading the app", self.pid, extra={"SOCKACT_WORKER_PID": self.pid})
            return WORKER_BOOT_ERROR
        try:
            handoff.send(self.chan, handoff.Message(handoff.READY))
        except OSError:
            return EXIT_OK  # the supervisor is gone already
        receiver = handoff.Receiver(self.chan)
        while True:
            try:
                msg = receiver.recv()
            except HandoffError as exc:
                log.error("worker %d: bad message from the supervisor: %s", self.pid, exc)
                continue
            except OSError:
                return EXIT_OK
            if msg is None:
                return EXIT_OK
            if msg.kind == handoff.CONN:
                self.serve(msg)

    def serve(self, msg: handoff.Message) -> None:
        """Serve one handed-over connection, then park it or report it closed."""
        sock = socket.socket(msg.family, socket.SOCK_STREAM, 0, fileno=msg.fd)
        self.slot.progress()
        before = self.slot.requests
        site = self.sites[msg.listener]
        extra = {
            "sockact.worker_pid": self.pid,
            "sockact.conn_id": msg.conn_id,
            "sockact.hops": msg.hops,
            "sockact.listener": site.listener,
        }
        outcome = Outcome.CLOSE
        pending = msg.data
        try:
            while True:
                outcome = serve_connection(
                    sock, site, peer=msg.peer, conn_id=msg.conn_id, pending=pending,
                    environ_extra=extra, stopping=self._is_stopping, progress=self.slot.progress)
                pending = b""
                if outcome is not Outcome.PARK or not self._linger(sock):
                    break
        except Exception:
            log.exception("worker %d: error serving connection %d", self.pid, msg.conn_id)
        reply = handoff.Message(
            handoff.PARK if outcome is Outcome.PARK else handoff.DONE,
            conn_id=msg.conn_id, listener=msg.listener, family=msg.family, peer=msg.peer,
            hops=msg.hops, requests=self.slot.requests - before,
            fd=sock.fileno() if outcome is Outcome.PARK else -1)
        try:
            handoff.send(self.chan, reply)
        except OSError as exc:
            log.debug("worker %d: cannot report to the supervisor: %s", self.pid, exc)
        finally:
            sock.close()  # parked or not, our copy goes: the supervisor holds it now
            self.slot.idle()

    def _linger(self, sock: socket.socket) -> bool:
        """Wait briefly for the client's next request instead of parking at once.

        Parking costs a round trip through the supervisor per request; a client that answers
        within LINGER is served straight away. Only while nobody waits in the supervisor's
        queue, so parking stays guaranteed under pressure.
        """
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        # In 1 ms slices (poll's resolution), so a connection queued meanwhile waits at most one.
        for _ in range(LINGER_MS):
            if self.stopping or self.slot.others_waiting():
                return False
            if poller.poll(1):
                return True
        return False

    def _is_stopping(self) -> bool:
        return self.stopping

    def _setup_process(self) -> None:
        # The supervisor's handlers came across the fork; replace every one of them, then let the
        # signals it blocked around fork() through (the supervisor already dropped its wakeup fd).
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, _quick_exit)
        signal.signal(signal.SIGQUIT, _quick_exit)
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        # SIGABRT (sent for --timeout) first dumps where the worker is stuck to stderr, then kills it.
        faulthandler.enable(all_threads=True)
        notify.forget(os.environ)

    def _on_term(self, signum: int, frame: object) -> None:
        # Graceful stop: finish the request in hand, answer it with Connection: close.
        self.stopping = True

    def _build_sites(self) -> list[Site]:
        apps = self.preloaded
        if apps is None:
            add_virtualenv(self.config.virtualenv)
            apps = load_all(self.config.listener(name).app for name in self.listener_names)
        return [self._site(self.config.listener(name), apps) for name in self.listener_names]

    def _site(self, lc: Any, apps: Mapping[str, WSGIApp]) -> Site:
        limits = Limits(
            request_line=lc.limit_request_line, header_fields=lc.limit_request_fields,
            header_field_size=lc.limit_request_field_size, head=lc.limit_request_head,
            body=lc.limit_request_body)
        # timeout = 0 turns the request timeout off, but each send or recv still needs a bound.
        io_timeout = self.config.timeout or 30.0
        site = Site(app=_tracked(apps[lc.app], self.slot), limits=limits, header_timeout=lc.header_timeout,
                    io_timeout=io_timeout, access_log=lc.access_log, listener=lc.name)
        site.environ["SCRIPT_NAME"] = lc.root_path  # the mount prefix; request_environ cuts it from PATH_INFO
        return site


def _tracked(app: WSGIApp, slot: SlotWriter) -> WSGIApp:
    """Wrap an app so the scoreboard names the request in hand (for --timeout logs) and counts it."""

    def tracked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        slot.requests += 1
        slot.progress(f"{environ.get('REQUEST_METHOD', '')} {environ.get('PATH_INFO', '')}")
        return app(environ, start_response)

    return tracked


def _quick_exit(signum: int, frame: object) -> None:
    os._exit(EXIT_OK)
