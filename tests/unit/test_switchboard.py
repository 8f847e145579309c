"""switchboard.Switchboard carrying out the dispatcher's and the parking lot's decisions, with fake
workers and a fake selector. The dispatcher and parking lot are the real, pure ones; the client
connections are real socketpairs, so a test can see that an fd was closed, or what a client was told."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from sockact.ipc import handoff
from sockact.policy.dispatch import Dispatcher
from sockact.policy.parking import Conn, ParkingLot
from sockact.supervisor.switchboard import Switchboard
from sockact.supervisor.workers import WorkerProcess

HEADER_TIMEOUT = 10.0
KEEPALIVE = 5.0


class FakeWorker(WorkerProcess):
    """A WorkerProcess whose channel takes ``room`` more connections (None: any number), or is
    broken, and whose signals are noted, not sent: the outbox and its order are the real class's."""

    made: ClassVar[list[FakeWorker]] = []  # closed after each test

    def __init__(self, pid: int, room: int | None = None, broken: bool = False) -> None:
        ours, self._theirs = socket.socketpair()
        super().__init__(pid, ours, slot=0, generation=1, threads=1)
        self.room = room
        self.broken = broken
        self.got: list[Conn] = []
        self.batches: list[int] = []  # connections in each message sent
        self.signals: list[int] = []
        self.made.append(self)

    def _send(self, conns: list[Conn]) -> int:
        if self.broken:
            raise BrokenPipeError("the worker is gone")
        taken = conns if self.room is None else conns[:self.room]
        if self.room is not None:
            self.room -= len(taken)
        self.got += taken
        self.batches.append(len(taken))
        return len(taken)

    def signal(self, signum: int) -> None:
        self.signals.append(signum)

    def close(self) -> None:
        self.chan.close()
        self._theirs.close()


@pytest.fixture(autouse=True)
def _close_workers() -> Iterator[None]:
    yield
    for worker in FakeWorker.made:
        worker.close()
    FakeWorker.made.clear()


class Board:
    """A switchboard over fake workers, with the selector's registrations and the channel watches."""

    def __init__(self, *workers: FakeWorker, queue_size: int = 4, capacity: int = 10, proxied: bool = False) -> None:
        self.dispatcher: Dispatcher[int, Conn] = Dispatcher(queue_size, capacity)
        self.parked = ParkingLot([KEEPALIVE])
        self.workers = {w.pid: w for w in workers}
        self.registered: dict[int, Any] = {}  # fd (or listener socket) -> handler's argument
        self.watches: list[tuple[int, bool]] = []
        listener = SimpleNamespace(sock=object())
        self.sb = Switchboard(self.dispatcher, self.parked, self.workers, [listener],  # type: ignore[arg-type]
                              self._register, self.registered.pop, lambda w, on: self.watches.append((w.pid, on)))
        self.sb.head_limits = [(HEADER_TIMEOUT, proxied)]
        self.handlers: dict[Any, Any] = {}
        for w in workers:
            self.dispatcher.add(w.pid)

    def _register(self, key: Any, handler: Any, arg: Any) -> None:
        self.registered[key] = arg
        self.handlers[key] = handler


class Pairs(list[socket.socket]):
    """The client ends of a test's connections, and the supervisor's ends still to close after it."""

    ours: set[int]


@pytest.fixture
def pairs() -> Iterator[Pairs]:
    made = Pairs()
    made.ours = set()
    yield made
    for sock in made:
        sock.close()
    for fd in made.ours:  # the ones the switchboard gave to a fake worker, or left parked
        with contextlib.suppress(OSError):
            os.close(fd)


def conn(pairs: Pairs, conn_id: int = 1, head_started: float = 0.0) -> Conn:
    """A real connection the supervisor holds (its fd), whose client end the test keeps."""
    ours, theirs = socket.socketpair()
    pairs.append(theirs)
    pairs.ours.add(ours.fileno())
    return Conn(conn_id, ours.detach(), 0, socket.AF_UNIX, None, head_started=head_started)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def heard(client: socket.socket) -> bytes:
    """What the client was told before its connection ended."""
    client.settimeout(5)
    return b"".join(iter(lambda: client.recv(4096), b""))


# -- routing


def test_a_connection_goes_to_the_worker_holding_fewest(pairs):
    a, b = FakeWorker(1), FakeWorker(2)
    board = Board(a, b)
    first, second = conn(pairs, 1), conn(pairs, 2)
    board.sb.route(first)
    board.sb.route(second)
    assert (a.got, b.got) == ([first], [second])
    assert first.ready_at and first.since == first.ready_at  # its wait for a worker starts now


def test_with_no_worker_free_a_connection_waits_in_the_queue_and_a_full_queue_stops_accepting(pairs):
    board = Board(queue_size=2)
    board.sb.acceptor.set_accepting(True, held=0, now=0.0)
    waiting = [conn(pairs, i) for i in range(2)]
    board.sb.route(waiting[0])
    assert board.dispatcher.queued == 1 and board.sb.acceptor.watching
    board.sb.route(waiting[1])
    assert board.dispatcher.queued == 2 and not board.sb.acceptor.watching  # the backlog holds the next
    board.sb.close_queued()
    assert not any(is_open(c.fd) for c in waiting)


@pytest.mark.parametrize(("proxied", "proxy", "answer"), [
    (False, None, b"HTTP/1.1 408 Request Timeout"),
    (True, object(), b"HTTP/1.1 408 Request Timeout"),  # the PROXY header was read: an HTTP client
    (True, None, b""),  # a PROXY header not yet read: closed without a word, as a worker does
])
def test_a_head_handed_back_past_header_timeout_ends_here_instead_of_going_to_a_worker(pairs, proxied, proxy,
                                                                                      answer):
    worker = FakeWorker(1)
    board = Board(worker, proxied=proxied)
    late = conn(pairs, head_started=time.monotonic() - HEADER_TIMEOUT - 1)
    late.proxy = proxy  # type: ignore[assignment]
    late.data = b"GET / HTTP/1.1\r\nHost: t\r\n"  # what the worker read of the head
    board.sb.route(late)
    assert not worker.got and not is_open(late.fd)
    assert heard(pairs[0]).startswith(answer) if answer else heard(pairs[0]) == b""


@pytest.mark.parametrize(("sent", "answer"), [
    (b"", b""),  # nothing sent since its accept: closed without a word
    (b"GET / HTTP/1.1\r\nHost: t\r\n", b"HTTP/1.1 408 Request Timeout"),  # unread, in the kernel
])
def test_a_connection_whose_head_deadline_passed_is_judged_by_what_waits_unread(pairs, sent, answer):
    worker = FakeWorker(1)
    board = Board(worker)
    late = conn(pairs, head_started=time.monotonic() - HEADER_TIMEOUT - 1)
    pairs[0].sendall(sent)
    board.sb.route(late)
    assert not worker.got and not is_open(late.fd)
    assert heard(pairs[0]).startswith(answer) if answer else heard(pairs[0]) == b""


def test_a_whole_head_waiting_unread_past_the_deadline_goes_to_a_worker_without_one(pairs):
    worker = FakeWorker(1)
    board = Board(worker)
    waited = conn(pairs, head_started=time.monotonic() - HEADER_TIMEOUT - 1)
    pairs[0].sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    board.sb.route(waited)
    assert worker.got == [waited] and waited.head_started == 0.0  # the worker's own deadline starts anew


def test_a_new_connection_gets_its_head_deadline_from_now_and_a_read_request_none(pairs):
    board = Board(FakeWorker(1))
    board.sb.route(new := conn(pairs, 1))
    assert new.head_started == new.since == new.ready_at
    handed_back = conn(pairs, 2)
    handed_back.data, handed_back.since = b"GET / HTTP/1.1\r\n\r\n", 1.0  # a whole request, read
    board.sb.route(handed_back)
    assert handed_back.head_started == 0.0


def test_the_timer_ends_queued_connections_whose_head_did_not_come_in_time(pairs):
    worker = FakeWorker(1)
    board = Board(worker, queue_size=8)
    board.dispatcher.pause(1)  # every worker busy: they all wait in the queue
    silent, partial, whole, young = (conn(pairs, i) for i in range(4))
    for c in (silent, partial, whole, young):
        board.sb.route(c)
    pairs[1].sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
    pairs[2].sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    now = time.monotonic()
    for c in (silent, partial, whole):
        c.head_started = now - HEADER_TIMEOUT - 1  # they were accepted that long ago
    board.sb.expire(now)
    assert sorted(c.id for c in board.dispatcher.waiting()) == [whole.id, young.id]
    assert not is_open(silent.fd) and not is_open(partial.fd)
    assert heard(pairs[0]) == b""
    assert heard(pairs[1]).startswith(b"HTTP/1.1 408 Request Timeout")
    assert whole.head_started == 0.0  # its head came: it waits for a worker, on no deadline
    board.sb.give(board.dispatcher.resume(1))
    assert worker.got == [whole, young]


def test_a_head_handed_back_within_header_timeout_goes_on_to_a_worker(pairs):
    worker = FakeWorker(1)
    board = Board(worker)
    board.sb.route(on_time := conn(pairs, head_started=time.monotonic() - 1))
    assert worker.got == [on_time]


def test_queued_assignments_skip_an_overdue_head_and_its_place_goes_to_the_next_in_line(pairs):
    worker = FakeWorker(1)
    board = Board(worker, capacity=1)
    board.dispatcher.pause(1)
    late = conn(pairs, 1, head_started=time.monotonic())
    fresh = conn(pairs, 2)
    board.sb.route(late)
    board.sb.route(fresh)
    assert board.dispatcher.queued == 2
    late.head_started -= HEADER_TIMEOUT + 1  # it waited in the queue past its header_timeout
    board.sb.give(board.dispatcher.resume(1))  # capacity 1: only the late one is assigned at first
    assert worker.got == [fresh] and not is_open(late.fd)
    assert board.dispatcher.load(1) == 1 and board.dispatcher.queued == 0


# -- a worker's channel


def test_a_full_channel_keeps_connections_in_order_in_the_outbox_and_watches_for_room_once(pairs):
    worker = FakeWorker(1, room=1)
    board = Board(worker)
    conns = [conn(pairs, i) for i in range(3)]
    for c in conns:
        board.sb.route(c)
    assert worker.got == conns[:1] and list(worker.outbox) == conns[1:]
    assert board.watches == [(1, True)]
    worker.room = 1
    board.sb.flush_outbox(worker)
    assert board.watches == [(1, True)]  # one still waits
    worker.room = None
    board.sb.flush_outbox(worker)
    assert worker.got == conns and board.watches == [(1, True), (1, False)]


def test_a_broken_channel_kills_the_worker_and_its_connections_go_to_another(pairs):
    broken, other = FakeWorker(1, room=0), FakeWorker(2)
    board = Board(broken, other, capacity=1)
    board.dispatcher.pause(2)
    waiting = conn(pairs, 1)
    board.sb.route(waiting)  # the full channel keeps it in the outbox
    assert list(broken.outbox) == [waiting]
    broken.broken = True
    board.dispatcher.resume(2)
    board.sb.flush_outbox(broken)
    assert broken.signals == [signal.SIGKILL] and not board.dispatcher.is_available(1)
    assert other.got == [waiting] and not broken.outbox


def test_the_connections_a_turn_gives_one_worker_go_in_batches_of_at_most_max_batch(pairs):
    a, b = FakeWorker(1), FakeWorker(2)
    board = Board(a, b, queue_size=64, capacity=64)
    conns = [conn(pairs, i) for i in range(2 * handoff.MAX_BATCH + 4)]
    board.sb.defer()
    for c in conns:
        board.sb.route(c)
    assert a.got == b.got == [] and len(a.outbox) + len(b.outbox) == len(conns)  # nothing sent yet
    board.sb.send_deferred()
    assert a.batches == b.batches == [handoff.MAX_BATCH, 2]  # fewest-held alternates them
    assert a.got == conns[0::2] and b.got == conns[1::2] and not a.outbox and not b.outbox
    board.sb.route(last := conn(pairs, 99))  # outside a turn's deferral: sent at once
    assert a.got[-1] is last and a.batches[-1] == 1


def test_a_deferred_batch_that_finds_the_channel_full_waits_in_order_and_watches_for_room(pairs):
    worker = FakeWorker(1, room=3)
    board = Board(worker)
    conns = [conn(pairs, i) for i in range(5)]
    board.sb.defer()
    for c in conns:
        board.sb.route(c)
    board.sb.send_deferred()
    assert worker.got == conns[:3] and list(worker.outbox) == conns[3:] and board.watches == [(1, True)]
    worker.room = None
    board.sb.flush_outbox(worker)
    assert worker.got == conns and board.watches == [(1, True), (1, False)]


def test_a_deferred_batch_on_a_broken_channel_goes_to_another_worker_once(pairs):
    broken, other = FakeWorker(1, broken=True), FakeWorker(2)
    board = Board(broken, other, capacity=4)
    conns = [conn(pairs, i) for i in range(3)]
    board.sb.defer()
    for c in conns:
        board.sb.route(c)
    board.sb.send_deferred()
    assert broken.signals == [signal.SIGKILL] and not broken.outbox
    assert sorted(c.id for c in other.got) == [0, 1, 2]  # each once
    assert board.dispatcher.load(1) == 0 and board.dispatcher.load(2) == 3


def test_a_retiring_workers_outbox_is_handed_back_to_the_dispatcher(pairs):
    worker = FakeWorker(1, room=0)
    board = Board(worker)
    board.sb.route(waiting := conn(pairs))
    assert board.dispatcher.load(1) == 1
    assert board.sb.take_outbox(worker) == [waiting]  # type: ignore[arg-type]
    assert board.dispatcher.load(1) == 0


# -- parking


def test_a_parked_connection_is_watched_and_goes_to_a_worker_when_the_client_speaks(pairs):
    worker = FakeWorker(1)
    board = Board(worker)
    idle = conn(pairs)
    idle.since = 123.0
    board.sb.park(idle, stopping=False)
    assert board.registered == {idle.fd: idle} and len(board.parked) == 1
    assert idle.since == 0.0  # its next request's wait starts when the client speaks again
    board.handlers[idle.fd](idle)  # the selector: readable
    assert not board.registered and len(board.parked) == 0 and worker.got == [idle]


def test_a_connection_handed_back_while_stopping_is_closed_not_parked(pairs):
    board = Board(FakeWorker(1))
    board.sb.park(idle := conn(pairs), stopping=True)
    assert not is_open(idle.fd) and len(board.parked) == 0 and not board.registered


def test_a_parked_connection_past_keepalive_is_unwatched_and_closed(pairs):
    board = Board(FakeWorker(1))
    board.sb.park(idle := conn(pairs), stopping=False)
    board.sb.expire(time.monotonic() + KEEPALIVE / 2)
    assert is_open(idle.fd)
    board.sb.expire(time.monotonic() + KEEPALIVE + 1)
    assert not is_open(idle.fd) and not board.registered


def test_a_parked_connection_whose_request_came_as_its_keepalive_ran_out_is_served_not_closed(pairs):
    # Its readiness and its expiry seen in one turn (a supervisor that stood still, or a request that
    # came after the selector's last look): the expiry comes first, and finds it no longer idle.
    worker = FakeWorker(1)
    board = Board(worker)
    quiet, speaking = conn(pairs, 1), conn(pairs, 2)
    for c in (quiet, speaking):
        board.sb.park(c, stopping=False)
    pairs[1].sendall(b"GET / HTTP/1.1\r\n\r\n")
    told = board.handlers[speaking.fd]
    board.sb.expire(time.monotonic() + KEEPALIVE + 1)
    assert worker.got == [speaking] and is_open(speaking.fd) and not is_open(quiet.fd)
    assert not board.registered and len(board.parked) == 0
    told(speaking)  # stale: nothing more happens to it
    assert worker.got == [speaking]


def test_closing_the_parked_serves_the_ones_with_a_request_on_its_way_and_closes_the_rest(pairs):
    worker = FakeWorker(1)
    board = Board(worker)
    quiet, speaking = conn(pairs, 1), conn(pairs, 2)
    for c in (quiet, speaking):
        board.sb.park(c, stopping=False)
    pairs[1].sendall(b"GET / HTTP/1.1\r\n")
    board.sb.close_parked(serve_readable=True)
    assert worker.got == [speaking] and not is_open(quiet.fd)
    assert not board.registered and len(board.parked) == 0


def test_making_room_serves_a_parked_client_that_spoke_and_closes_the_next_idle_one(pairs):
    # At the fd budget the one idle longest is closed for a new client; one that sent a request in the
    # meantime is not idle. Its readiness, told in the same turn, then finds it gone and does nothing.
    worker = FakeWorker(1)
    board = Board(worker)
    speaking, quiet, newest = conn(pairs, 1), conn(pairs, 2), conn(pairs, 3)
    for c in (speaking, quiet, newest):
        board.sb.park(c, stopping=False)
    pairs[0].sendall(b"GET / HTTP/1.1\r\n\r\n")
    told = board.handlers[speaking.fd]
    assert board.sb.acceptor.close_idle()
    assert worker.got == [speaking] and not is_open(quiet.fd) and is_open(newest.fd)
    assert list(board.registered) == [newest.fd] and len(board.parked) == 1
    told(speaking)  # stale: nothing more happens to it
    assert worker.got == [speaking] and len(board.parked) == 1
    pairs[2].sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert not board.sb.acceptor.close_idle()  # none idle: nothing closed
    assert worker.got == [speaking, newest] and len(board.parked) == 0


def test_update_accepting_counts_every_connection_held_and_stops_when_stopping(pairs):
    board = Board(FakeWorker(1))
    board.sb.acceptor.budget = 2
    board.sb.park(conn(pairs, 1), stopping=False)
    board.sb.update_accepting(stopping=False)
    assert board.sb.acceptor.watching and board.sb.acceptor.held == 1
    board.sb.route(conn(pairs, 2))
    board.sb.update_accepting(stopping=False)
    # parked + held by workers: at the budget, but a new client would take the parked one's place
    assert board.sb.acceptor.held == 2 and board.sb.acceptor.watching
    board.sb.acceptor.close_idle()
    assert len(board.parked) == 0
    board.sb.route(conn(pairs, 3))
    board.sb.update_accepting(stopping=False)
    assert board.sb.acceptor.held == 2 and not board.sb.acceptor.watching  # none idle: the rest wait
    board.sb.acceptor.budget = 10
    board.sb.update_accepting(stopping=True)
    assert not board.sb.acceptor.watching


def test_a_channel_watched_for_room_is_unwatched_once_nothing_waits_however_the_outbox_emptied(pairs):
    # A channel watched for room while nothing waits to be sent is writable at every turn of the loop:
    # the supervisor would spin. Whatever emptied the outbox, the next send or event unwatches it.
    worker = FakeWorker(1, room=0)
    board = Board(worker)
    board.sb.route(conn(pairs, 0))
    assert board.watches == [(1, True)]
    board.sb.take_outbox(worker)  # retired: what waited goes elsewhere
    board.sb.flush_outbox(worker)  # its channel's next event
    assert board.watches == [(1, True), (1, False)] and not worker.out_watched
    worker.room = 1
    board.sb.route(conn(pairs, 1))  # sent at once: nothing to watch
    worker.room = 0
    board.sb.route(conn(pairs, 2))
    board.sb.route(conn(pairs, 3))  # behind the one that waits
    worker.room = None
    board.sb.flush_outbox(worker)  # room again: both go, and the watch ends with them
    assert board.watches == [(1, True), (1, False), (1, True), (1, False)] and not worker.outbox
