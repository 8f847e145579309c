"""Starting a worker, seen from the supervisor: a scoreboard slot, a cgroup (worker_memory_limit),
the fork, and what the child must not keep of the supervisor's descriptors.

Fork discipline (workers.spawn): everything the worker needs is built before the fork; the
supervisor's signals stay blocked across it, until the worker has installed its own handlers.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from typing import TYPE_CHECKING

from sockact.config import Config
from sockact.logs.journal import lifecycle
from sockact.supervisor.workers import spawn
from sockact.worker.shell import COLLECT_SIGNAL, DRAIN_SIGNAL, WorkerShell, prepare

if TYPE_CHECKING:
    from sockact.supervisor.core import Supervisor

log = logging.getLogger("sockact.supervisor")


class Forker:
    def __init__(self, sup: Supervisor, blocked: tuple[int, ...], slots: int) -> None:
        self.sup = sup
        self.blocked = (*blocked, DRAIN_SIGNAL, COLLECT_SIGNAL)  # blocked across the fork
        self.slots = slots  # the scoreboard's: most workers alive at once

    def delegate(self, config: Config) -> None:
        """worker_memory_limit: take the service's cgroup for the workers, once; raises CgroupError."""
        sup = self.sup
        if config.worker_memory_limit and sup.cgroups is None:
            from sockact.systemd import cgroups  # here: only worker_memory_limit needs it

            sup.cgroups = cgroups.WorkerGroups.delegate()
            log.info("each worker runs in a cgroup of its own under %s", sup.cgroups.service)

    def spawn(self, generation: int, config: Config) -> None:
        sup = self.sup
        assert sup.scoreboard is not None
        try:
            slot = sup.scoreboard.allocate()
        except IndexError:
            log.error("cannot start a worker: %d workers alive already", self.slots)
            return
        names = [lst.name for lst in sup.listeners]
        locals_ = [lst.local for lst in sup.listeners]
        prepare(config, names)  # here, not in the worker: what it makes is shared then
        scoreboard, apps, tally, hooks = sup.scoreboard, sup.apps, sup.tally, sup.hooks
        if tally is not None:
            tally.clear(slot)

        max_requests = config.max_requests
        if max_requests and config.max_requests_jitter:
            import random  # here: most starts have no jitter to draw

            max_requests += random.randint(0, config.max_requests_jitter)
        # While workers keep crashing, a new one's start is no news: its lines would come a crash each.
        quiet = sup.pool.crashes.looping

        def child_main(chan: socket.socket) -> int:
            if quiet:  # the worker's start lines are its only ones below WARNING
                logging.getLogger("sockact.worker").setLevel(logging.WARNING)
            if group is not None:
                from sockact.systemd.cgroups import enter  # imported by delegate() already

                enter(group)  # before the app's first page: a page is charged where it was faulted
            return WorkerShell(chan, config, names, scoreboard, slot, apps, max_requests, tally, hooks,
                               locals_).run()

        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.blocked)
        try:
            group = sup.cgroups.prepare(slot, config.worker_memory_limit) if sup.cgroups else None
            w = spawn(child_main, self.release_fds, slot, generation, config.thread_ceiling)
        except OSError as exc:
            # Out of fds or processes: not the app's fault. The pool tries again at the next tick.
            sup.scoreboard.release(slot)
            log.error("cannot start a worker: %s", exc.strerror or exc)
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        if tally is not None:
            w.on_sent = sup.counters.handed_off
        sup.workers[w.pid] = w
        sup.pool.spawned(w.pid, generation, time.monotonic())
        sup.register(w.chan, sup.channels.read, w)
        lifecycle(log, "worker_spawned", "worker %d started (generation %d)", w.pid, generation,
                  level=logging.DEBUG if quiet else logging.INFO, sockact_worker_pid=w.pid)

    def release_fds(self) -> None:
        """Close every descriptor the supervisor holds but the scoreboard: in a new worker (signals
        stay blocked there until it has installed its own handlers), and at exit."""
        sup = self.sup
        sup.signals.close()
        if sup.scrape.server is not None:
            sup.scrape.server.close_clients()
        if sup.selector is not None:
            sup.selector.close()  # first: the fds below need no unregistering one by one
        sup.memory.close()
        for lst in sup.listeners:
            lst.sock.close()
        for w in sup.workers.values():
            w.chan.close()
            for conn in (*w.outbox, *w.holding.values()):
                os.close(conn.fd)
        for conn in sup.parked:
            os.close(conn.fd)
        sup.switchboard.close_queued()
