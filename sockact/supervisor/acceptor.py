"""Accepting on the listeners, within the fd budget, backing off from errors that recur.

The supervisor holds an fd for every connection: queued or parked, and also its own copy of
each one a worker holds (for a 502/504 if the worker dies), and a hand-back briefly needs
one more, until the old copy is closed. So it accepts only while the connections it and its
workers hold stay below its budget (the open-files limit less a reserve). At the budget, a new
client takes the place of the parked keep-alive client idle longest, which is closed (as nginx
reuses idle connections when it runs out): an idle client reconnects when it next asks, while a
new one would wait in the backlog for a keep-alive timeout. With none parked, new clients wait in
the kernel's backlog, and accepting resumes on its own when connections close. An accept that
fails for want of fds or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) or for a reason not known to
be the client's stops accepting for a short, growing interval. Each such condition is logged once per LOG_INTERVAL
(a flood of clients brings them on), then the count of the times left out (logs.flood).
"""

from __future__ import annotations

import errno
import logging
import resource
import select
import socket
import struct
from collections.abc import Callable
from functools import partial
from typing import Any

from sockact.errors import ConfigError
from sockact.logs.flood import LineLimit, Lines
from sockact.policy.parking import Conn
from sockact.systemd.activation import Listener

log = logging.getLogger("sockact.supervisor")

LOG_INTERVAL = 10.0  # seconds between two log lines about the same trouble
BACKOFF_FIRST = 0.05  # seconds without accepting after a failed accept()
BACKOFF_MAX = 1.0
# The client is gone or was refused: take the next one at once.
_CLIENT_ERRORS = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR, errno.ECONNRESET})
_UNIX = int(socket.AF_UNIX)
_INET = int(socket.AF_INET)
_INET6 = int(socket.AF_INET6)
# struct tcp_info (linux/tcp.h): on a listener, tcpi_unacked is how many connections wait in its accept queue.
_BACKLOG = struct.Struct("=I")
_BACKLOG_AT = 24
_TCP_INFO_SIZE = _BACKLOG_AT + _BACKLOG.size

Register = Callable[[Any, Callable[[Any], None], Any], None]
Unregister = Callable[[Any], None]


class Acceptor:
    def __init__(self, listeners: list[Listener], route: Callable[[Conn], None],
                 register: Register, unregister: Unregister) -> None:
        self.listeners = listeners
        # Each listener's address family as a plain int, looked up at its first accept: socket.family makes
        # an enum on every read.
        self._families = [-1] * len(listeners)
        # How many clients wait on each listener (_waiting_clients, made at its first accept): asked when the
        # ones known to wait are taken, instead of the accept that would otherwise end each batch with EAGAIN.
        # That failing accept4() costs the kernel a socket and a file made and freed, and Python an exception:
        # several times a poll(0).
        self._askers: list[Callable[[], int] | None] = [None] * len(listeners)
        self.route = route
        self._register = register
        self._unregister = unregister
        self.budget = 1 << 30  # connections held at most; set by the supervisor from its fd limit
        # At the budget: how many idle (parked) connections could make room, and closing the one idle longest.
        self.idle: Callable[[], int] = lambda: 0
        self.close_idle: Callable[[], bool] = lambda: False
        self.made_room = 0  # idle connections closed for a new client
        self.held = 0  # connections held now, as last told
        self.watching = False
        self.resume_at = 0.0  # backing off until then
        self._backoff = 0.0
        self._next_id = 1
        self.accepted = [0] * len(listeners)  # connections accepted, by listener
        self.errors = 0  # accept() calls that failed
        self._excluded: set[int] = set()  # listeners another part of the supervisor answers
        self._lines = Lines(LineLimit(burst=1, interval=LOG_INTERVAL))
        self._now = 0.0
        self.shut = False  # the stop has begun: never watching again; the listeners bound here are closed

    def reserve_ids(self, count: int) -> int:
        """The first of ``count`` connection ids for connections not accepted here (the fd store's)."""
        first = self._next_id
        self._next_id += count
        return first

    def set_accepting(self, on: bool, held: int, now: float) -> None:
        """Watch the listeners when ``on``, within the budget and outside a back-off."""
        self._now, self.held = now, held
        self._lines.due(now)
        if on and held >= self.budget and not self.idle():
            self._at_budget()
            on = False
        if on and now < self.resume_at:
            on = False
        self._watch(on and not self.shut)

    def shut_listeners(self, now: float) -> int:
        """The stop begins: accept no more. A listener systemd passed stays with systemd, and what waits
        in its backlog waits for the next instance. One bound here (--bind) dies with this process, and
        the kernel would reset each client in its backlog when it closes, a request sent and no answer:
        so what its backlog holds is taken in now (into the dispatcher's queue past queue_size if need
        be), to be served as the stop serves the connections already here, and the listener is closed
        at once, so that a client coming later is refused (and retries, or its balancer tries another
        host) instead of waiting for a reset. The metrics listener stays open: a scrape may watch the
        stop. Returns how many clients were taken from the backlogs."""
        self._now = now
        self._watch(False)
        self.shut = True
        before = sum(self.accepted)
        for index, lst in enumerate(self.listeners):
            if lst.owned and index not in self._excluded:
                self._take(index)
                lst.close()
        return sum(self.accepted) - before

    def _watch(self, on: bool) -> None:
        if on == self.watching:
            return
        self.watching = on
        for index, lst in enumerate(self.listeners):
            if index in self._excluded:
                continue
            if on:
                self._register(lst.sock, self.accept, index)
            else:
                self._unregister(lst.sock)

    def exclude(self, index: int) -> None:
        """Never accept on listener ``index`` (the metrics listener: the supervisor answers it itself)."""
        if self.watching:
            self._unregister(self.listeners[index].sock)
        self._excluded.add(index)

    def accept(self, index: int) -> None:
        """The listener is readable: accept a batch, while clients wait, up to the budget."""
        if self.watching:
            self._take(index)

    def _take(self, index: int) -> None:
        """Accept while clients wait on listener ``index`` and the budget allows, and while the listeners are
        watched (a connection routed may end that: the dispatcher's queue full); at a shut, whether watched or
        not: the backlog is emptied past queue_size, as its clients would be reset at the exit."""
        lsock = self.listeners[index].sock
        family = self._families[index]
        asker = self._askers[index]
        if asker is None:
            family = self._families[index] = int(lsock.family)
            asker = self._askers[index] = _waiting_clients(lsock, family)
        left = 1  # clients known to wait: the selector just said one does
        while self.watching or self.shut:
            if not left:
                left = asker()  # asked again once they are taken: more may have come meanwhile
                if not left:
                    self._backoff = 0.0
                    return
            left -= 1
            if self.held >= self.budget:
                # The client idle longest makes room for the one waiting, if one is idle.
                if not self.idle() or not self.close_idle():
                    self._at_budget()
                    self._watch(False)  # until connections close (update_accepting): the listener stays readable
                    return
                self.held -= 1
                self.made_room += 1
                self.trouble("fd budget idle", f"{self.budget} connections held, the most the open-files limit "
                             "allows: parked keep-alive clients are closed, the longest idle first, to make room "
                             "for new ones (raise LimitNOFILE= for more)")
            try:
                # _accept() is accept4(SOCK_CLOEXEC) without wrapping the fd in a socket object.
                fd, addr = lsock._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                self._backoff = 0.0
                return
            except OSError as exc:
                self.errors += 1
                if exc.errno in _CLIENT_ERRORS:
                    continue
                self._back_off(exc)
                return
            # IPv4's address is (host, port) as it is; IPv6's adds flowinfo and scope_id.
            peer = addr if family == _INET else addr[:2] if family == _INET6 else None
            conn = Conn(self._next_id, fd, index, family, peer)
            # Nothing written on it yet. Set here, not passed as written=0: a class called with a keyword
            # argument makes a dict for it, at every connection.
            conn.written = 0
            self._next_id += 1
            self.accepted[index] += 1
            self.held += 1
            self.route(conn)

    def _at_budget(self) -> None:
        self.trouble("fd budget", f"{self.held} connections held, the most the open-files limit allows, none of "
                     "them idle; new clients wait in the backlog (raise LimitNOFILE= for more)")

    def _back_off(self, exc: OSError) -> None:
        self._backoff = min(BACKOFF_MAX, max(BACKOFF_FIRST, self._backoff * 2))
        self.resume_at = self._now + self._backoff
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        self.trouble(f"accept {name}", f"accept: {exc.strerror or exc} ({name}); new clients wait in the "
                     f"backlog, accepting again in {self._backoff:.2f}s")
        self._watch(False)

    def out_of_fds(self, what: str) -> None:
        self.trouble("out of fds", f"out of file descriptors: {what}")

    def trouble(self, key: str, message: str) -> None:
        """Log ``message`` now, or count it if the same trouble was logged within LOG_INTERVAL."""
        self._lines.log(key, log, logging.ERROR, "%s", message, now=self._now)


def _waiting_clients(lsock: Any, family: int) -> Callable[[], int]:
    """How to ask ``lsock`` how many clients wait now (at least; a poll can only say 1 or 0).

    A TCP listener's tcp_info gives its accept queue's length (tcpi_unacked, for a listener): a
    getsockopt() takes the clients waiting together, where a poll(0) before each accept costs one a
    client. Anything else (a Unix socket, a kernel that will not say) is polled."""
    if family in (_INET, _INET6):
        try:
            lsock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        except OSError:
            pass
        else:
            return partial(_backlog, lsock.getsockopt)
    probe = select.poll()
    probe.register(lsock, select.POLLIN)
    return partial(_polled, probe.poll)


def _backlog(getsockopt: Callable[[int, int, int], bytes]) -> int:
    info = getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    return _BACKLOG.unpack_from(info, _BACKLOG_AT)[0] if len(info) == _TCP_INFO_SIZE else 1


def _polled(poll: Callable[[int], list[tuple[int, int]]]) -> int:
    return 1 if poll(0) else 0


def raise_fd_limit() -> int:
    """Lift the soft fd limit to the hard one: every parked keep-alive client holds one fd here.

    systemd gives services a soft limit of 1024 and a hard one far above it, expecting programs
    that need more (and do not use select()) to raise it themselves. Workers inherit the raised
    limit: each holds many connections. Returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
        except (ValueError, OSError) as exc:
            log.warning("open-files limit stays at %d (%s); set LimitNOFILE= in the unit for more "
                        "parked clients", soft, exc)
    return soft


def fd_budget(reserve: int) -> int:
    """Connections the supervisor may hold: the open-files limit, raised as far as it goes, less the
    ``reserve`` it keeps for itself. None left is a start-up error: sockact would say ready and never
    accept (a unit's LimitNOFILE= set too low)."""
    limit = raise_fd_limit()
    budget = limit - reserve
    if budget < 1:
        raise ConfigError(f"open-files limit {limit} leaves no file descriptor for clients: sockact keeps "
                          f"{reserve} for itself; raise LimitNOFILE= (ulimit -n) above {reserve}")
    return budget
