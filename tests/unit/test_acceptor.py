"""acceptor.Acceptor's decisions: what it accepts, what it skips, when it backs off, and the fd budget.

Most tests script a fake listener's accept() (the fds are numbers nobody opens); the first runs
the budget against a real loopback listener."""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
from types import SimpleNamespace
from typing import Any

import pytest

from sockact.errors import ConfigError
from sockact.logs.flood import summary
from sockact.policy.parking import Conn
from sockact.supervisor import acceptor
from sockact.supervisor.acceptor import BACKOFF_FIRST, BACKOFF_MAX, LOG_INTERVAL, Acceptor, fd_budget
from sockact.systemd.activation import Listener


def test_an_accept_batch_stops_at_the_fd_budget_and_the_rest_wait_in_the_backlog():
    lsock = socket.create_server(("127.0.0.1", 0), backlog=16)
    lsock.setblocking(False)
    routed: list[Conn] = []
    watched: set[socket.socket] = set()
    acceptor = Acceptor([Listener(lsock, "http", owned=True)], routed.append,
                        lambda sock, _handler, _arg: watched.add(sock), watched.discard)
    acceptor.budget = 5
    clients = [socket.create_connection(lsock.getsockname(), timeout=5) for _ in range(8)]
    try:
        acceptor.set_accepting(True, held=2, now=0.0)
        assert watched == {lsock}
        select.select([lsock], [], [], 5)
        acceptor.accept(0)
        assert len(routed) == 3  # 2 held + 3 = the budget; the other 5 stay in the backlog
        assert acceptor.held == 5
        acceptor.set_accepting(True, held=5, now=0.0)
        assert not watched  # at the budget: not watching, so the loop does not spin on the listener
        acceptor.set_accepting(True, held=3, now=0.0)  # two closed: room for two more
        acceptor.accept(0)
        assert len(routed) == 5
    finally:
        close_all(routed, clients, lsock)


def close_all(routed: list[Conn], clients: list[socket.socket], lsock: socket.socket) -> None:
    for conn in routed:
        os.close(conn.fd)
    for sock in clients:
        sock.close()
    lsock.close()


class CountingListener:
    """A real listening socket whose accept() calls are counted."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.family = sock.family
        self.getsockopt = sock.getsockopt  # a TCP listener counts the clients waiting in its backlog
        self.accepts = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def _accept(self) -> tuple[int, Any]:
        self.accepts += 1
        return self.sock._accept()  # type: ignore[attr-defined]


def test_a_batch_ends_when_no_client_waits_without_an_accept_that_fails():
    lsock = socket.create_server(("127.0.0.1", 0), backlog=16)
    lsock.setblocking(False)
    counting = CountingListener(lsock)
    acc, routed, _ = make(counting)  # type: ignore[arg-type]
    clients = [socket.create_connection(lsock.getsockname(), timeout=5) for _ in range(3)]
    try:
        acc.set_accepting(True, held=0, now=0.0)
        select.select([lsock], [], [], 5)
        acc.accept(0)
        assert len(routed) == 3 and counting.accepts == 3  # no fourth accept() to meet EAGAIN
        late = socket.create_connection(lsock.getsockname(), timeout=5)  # a later client: a later batch
        clients.append(late)
        select.select([lsock], [], [], 5)
        acc.accept(0)
        assert len(routed) == 4 and counting.accepts == 4
    finally:
        close_all(routed, clients, lsock)


class FakeListener:
    """A listening socket whose accept() gives what the test scripted, then EAGAIN. It always looks
    readable (a pipe with a byte in it stands for it in a poll set), so a batch ends at that EAGAIN."""

    def __init__(self, family: int = socket.AF_INET, script: list[Any] | None = None) -> None:
        self.family = family
        self.script = list(script or [])
        self.accepts = 0
        self._readable, writer = os.pipe()
        os.write(writer, b"x")
        os.close(writer)

    def fileno(self) -> int:
        return self._readable

    def getsockopt(self, *_: int) -> bytes:
        raise OSError(errno.ENOTSOCK, "not a socket: it cannot count its backlog, so it is polled")

    def _accept(self) -> tuple[int, Any]:
        self.accepts += 1
        if not self.script:
            raise BlockingIOError(errno.EAGAIN, "no connection waiting")
        item = self.script.pop(0)
        if isinstance(item, OSError):
            raise item
        return item


def client(fd: int) -> tuple[int, tuple[str, int]]:
    return fd, ("192.0.2.1", 40000 + fd)


def make(*socks: FakeListener) -> tuple[Acceptor, list[Conn], set[Any]]:
    """An acceptor over ``socks``, the connections it routes, and the listeners it watches."""
    routed: list[Conn] = []
    watched: set[Any] = set()
    listeners = [SimpleNamespace(sock=sock) for sock in socks]
    acc = Acceptor(listeners, routed.append, lambda sock, _handler, _arg: watched.add(sock),  # type: ignore[arg-type]
                   watched.discard)
    return acc, routed, watched


def test_a_batch_takes_every_waiting_client_until_eagain_with_ids_in_order_and_peers():
    inet = FakeListener(script=[client(10), client(11)])
    unix = FakeListener(socket.AF_UNIX, script=[(12, "")])
    acc, routed, _ = make(inet, unix)
    acc.set_accepting(True, held=0, now=0.0)
    acc.accept(0)
    acc.accept(1)
    assert [(c.id, c.fd, c.listener, c.peer) for c in routed] == [
        (1, 10, 0, ("192.0.2.1", 40010)), (2, 11, 0, ("192.0.2.1", 40011)), (3, 12, 1, None)]
    assert [c.written for c in routed] == [0, 0, 0]  # nothing written on a new connection: no look-up at hand-off
    assert acc.accepted == [2, 1] and acc.held == 3


def test_an_ipv6_clients_peer_is_its_host_and_port_without_flowinfo_and_scope():
    acc, routed, _ = make(FakeListener(socket.AF_INET6, script=[(10, ("2001:db8::1", 40010, 0, 0))]))
    acc.set_accepting(True, held=0, now=0.0)
    acc.accept(0)
    assert routed[0].peer == ("2001:db8::1", 40010)


def test_connection_ids_never_meet_the_ones_reserved_for_the_fd_store():
    acc, routed, _ = make(FakeListener(script=[client(10)]))
    first = acc.reserve_ids(5)
    acc.set_accepting(True, held=0, now=0.0)
    acc.accept(0)
    assert first == 1 and routed[0].id == 6


@pytest.mark.parametrize("code", [errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR, errno.ECONNRESET],
                         ids=errno.errorcode.get)
def test_an_accept_error_that_is_the_clients_skips_to_the_next_client(code):
    acc, routed, watched = make(FakeListener(script=[OSError(code, "x"), client(10)]))
    acc.set_accepting(True, held=0, now=0.0)
    acc.accept(0)
    assert [c.fd for c in routed] == [10]
    assert acc.errors == 1 and watched and acc.resume_at == 0.0


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EINVAL],
                         ids=errno.errorcode.get)
def test_any_other_accept_error_stops_accepting_for_a_while(code):
    sock = FakeListener(script=[OSError(code, "x"), client(10)])
    acc, routed, watched = make(sock)
    acc.set_accepting(True, held=0, now=100.0)
    acc.accept(0)
    assert not routed and not watched  # the client waits in the backlog
    assert acc.resume_at == 100.0 + BACKOFF_FIRST
    acc.set_accepting(True, held=0, now=100.0 + BACKOFF_FIRST / 2)
    assert not watched  # still backing off
    acc.set_accepting(True, held=0, now=100.0 + BACKOFF_FIRST)
    assert watched == {sock}
    acc.accept(0)
    assert [c.fd for c in routed] == [10]


def test_the_back_off_doubles_while_accept_keeps_failing_up_to_its_bound_and_resets_after_eagain():
    sock = FakeListener()
    acc, _, _ = make(sock)
    now, waits = 0.0, []
    for _ in range(8):
        acc.set_accepting(True, held=0, now=now)
        sock.script.append(OSError(errno.EMFILE, "too many open files"))
        acc.accept(0)
        waits.append(round(acc.resume_at - now, 3))
        now = acc.resume_at
    assert waits == [0.05, 0.1, 0.2, 0.4, 0.8, BACKOFF_MAX, BACKOFF_MAX, BACKOFF_MAX]
    acc.set_accepting(True, held=0, now=now)
    acc.accept(0)  # EAGAIN: accept works again
    sock.script.append(OSError(errno.EMFILE, "too many open files"))
    acc.accept(0)
    assert acc.resume_at - now == pytest.approx(BACKOFF_FIRST)


@pytest.mark.parametrize(("budget", "held", "waiting", "taken"), [
    (5, 0, 3, 3),  # room for all
    (5, 2, 8, 3),  # the batch stops at the budget; the rest wait in the backlog
    (5, 4, 8, 1),
    (5, 5, 8, 0),  # at the budget: not even watched
    (5, 9, 8, 0),  # over it (a hand-back's brief extra fd)
])
def test_the_fd_budget_bounds_an_accept_batch(budget, held, waiting, taken):
    sock = FakeListener(script=[client(fd) for fd in range(10, 10 + waiting)])
    acc, routed, watched = make(sock)
    acc.budget = budget
    acc.set_accepting(True, held=held, now=0.0)
    assert bool(watched) == (held < budget)
    acc.accept(0)
    assert len(routed) == taken and acc.held == held + taken
    assert len(sock.script) == waiting - taken


def test_at_the_budget_a_new_client_takes_the_place_of_an_idle_one_until_none_is_idle(caplog):
    sock = FakeListener(script=[client(fd) for fd in range(10, 18)])
    acc, routed, watched = make(sock)
    idle = [1, 2, 3]  # parked connections, the one idle longest first
    closed: list[int] = []
    acc.idle = idle.__len__
    acc.close_idle = lambda: closed.append(idle.pop(0)) is None
    acc.budget = 5
    acc.set_accepting(True, held=5, now=0.0)
    assert watched  # at the budget, but with idle clients to close for new ones
    with caplog.at_level(logging.ERROR, logger="sockact.supervisor"):
        acc.accept(0)
    assert closed == [1, 2, 3] and len(routed) == 3 and acc.held == 5 and acc.made_room == 3
    assert not watched and len(sock.script) == 5  # none idle any more: the rest wait in the backlog
    said = [r.getMessage() for r in caplog.records]
    assert any("the longest idle first" in line for line in said) and any("none of them idle" in line for line in said)


def test_at_the_budget_parked_clients_that_all_spoke_make_no_room(caplog):
    # close_idle finds each parked client readable (a request on its way): it serves them, closes none, and the
    # new client waits in the backlog, the listeners unwatched until connections end.
    sock = FakeListener(script=[client(10)])
    acc, routed, watched = make(sock)
    acc.idle = lambda: 2
    acc.close_idle = lambda: False
    acc.budget = 5
    acc.set_accepting(True, held=5, now=0.0)
    with caplog.at_level(logging.ERROR, logger="sockact.supervisor"):
        acc.accept(0)
    assert not routed and acc.held == 5 and acc.made_room == 0
    assert not watched and len(sock.script) == 1
    assert any("none of them idle" in r.getMessage() for r in caplog.records)


def test_accepting_off_and_stopping_unwatch_every_listener_and_a_late_readable_accepts_nothing():
    sock = FakeListener(script=[client(10)])
    acc, routed, watched = make(sock)
    acc.set_accepting(True, held=0, now=0.0)
    acc.set_accepting(False, held=0, now=0.0)
    assert not watched
    acc.accept(0)  # the selector had it readable already
    assert not routed and sock.accepts == 0


def test_a_shut_takes_the_backlog_of_the_listeners_bound_here_closes_them_and_leaves_systemds():
    """At a graceful stop a listener bound here (--bind) is emptied and closed: the kernel would reset the
    clients left in its backlog. One systemd passed keeps its clients for the next instance."""
    bound, passed, metrics = (FakeListener(script=[client(10), client(11)]), FakeListener(script=[client(12)]),
                              FakeListener(script=[client(13)]))
    routed: list[Conn] = []
    watched: set[Any] = set()
    closed: list[str] = []
    kinds = ((bound, True, "bound"), (passed, False, "passed"), (metrics, True, "metrics"))
    listeners = [SimpleNamespace(sock=sock, owned=owned, close=lambda name=name: closed.append(name))
                 for sock, owned, name in kinds]
    acc = Acceptor(listeners, routed.append, lambda sock, _handler, _arg: watched.add(sock),  # type: ignore[arg-type]
                   watched.discard)
    acc.exclude(2)
    acc.set_accepting(True, held=0, now=0.0)
    acc.shut_listeners(now=1.0)
    assert [c.fd for c in routed] == [10, 11] and closed == ["bound"]
    assert passed.accepts == 0 and metrics.accepts == 0 and not watched
    acc.set_accepting(True, held=0, now=2.0)  # whatever asks later: the stop has begun
    assert not watched


def test_an_excluded_listener_is_never_watched():
    metrics, http = FakeListener(), FakeListener()
    acc, _, watched = make(metrics, http)
    acc.set_accepting(True, held=0, now=0.0)
    acc.exclude(0)
    assert watched == {http}
    acc.set_accepting(False, held=0, now=0.0)
    acc.set_accepting(True, held=0, now=0.0)
    assert watched == {http}


def test_the_same_trouble_is_logged_once_per_interval_with_a_count_of_the_ones_left_out(caplog):
    acc, _, _ = make(FakeListener())
    acc.budget = 1
    with caplog.at_level(logging.ERROR, logger="sockact.supervisor"):
        for now in (0.0, 1.0, 2.0, LOG_INTERVAL + 0.5, LOG_INTERVAL + 1):
            acc.set_accepting(True, held=1, now=now)
        acc.set_accepting(False, held=0, now=2 * LOG_INTERVAL + 1)  # the loop's next turn past the interval
    lines = [r.getMessage() for r in caplog.records]
    # The count of the first interval's left out comes before the second's line; the second's, at a later turn.
    assert len(lines) == 4 and "LimitNOFILE" in lines[0] and lines[2] == lines[0]
    assert lines[1] == summary("fd budget", 2, LOG_INTERVAL) and lines[3] == summary("fd budget", 1, LOG_INTERVAL)


@pytest.mark.parametrize(("limit", "reserve", "budget"), [(1024, 64, 960), (65, 64, 1)])
def test_fd_budget_is_the_open_files_limit_less_the_reserve(monkeypatch, limit, reserve, budget):
    monkeypatch.setattr(acceptor, "raise_fd_limit", lambda: limit)  # the process's real limit is the OS's
    assert fd_budget(reserve) == budget


def test_an_fd_limit_that_leaves_no_fd_for_clients_is_a_start_up_error(monkeypatch):
    monkeypatch.setattr(acceptor, "raise_fd_limit", lambda: 64)
    with pytest.raises(ConfigError, match="LimitNOFILE"):
        fd_budget(64)
