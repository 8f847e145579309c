"""A WSGI connection's outbox (wsgi/wire.py), on real sockets whose reader takes nothing: what the kernel has no room
for waits there once some of the response is out, within its bounds, and only there."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from sockact.http.limits import OUTBOX_MAX, SpoolBudget
from sockact.wsgi.wire import ClientTimedOut, Wire


@pytest.fixture
def pair() -> Iterator[tuple[Wire, socket.socket]]:
    """A wire with an outbox (a budget of 2 MiB) on one end of a socket pair, and the other end, which reads only
    when a test says so."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    wire = Wire(ours, io_timeout=1.0, send_timeout=0.2)
    wire.outbox_budget = SpoolBudget(2 * OUTBOX_MAX)
    try:
        yield wire, theirs
    finally:
        ours.close()
        theirs.close()


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return data


def _fill(wire: Wire) -> int:
    """The kernel's buffers full, and the response begun there: what was sent."""
    wire.begun = wire.sent
    while wire.send_now(b"a" * 4096):
        pass
    return wire.sent


def test_a_tail_the_kernel_has_no_room_for_waits_in_the_outbox_and_goes_in_order(pair):
    wire, theirs = pair
    wire.begun = wire.sent
    response = bytes(range(256)) * 1024  # 256 KiB: far past what the kernel holds
    wire.send(response)  # returns at once: the rest is in the outbox
    assert wire.outbox is not None and 0 < len(wire.outbox) < len(response)
    wire.send(b"and the end")  # behind it
    assert wire.outbox_budget is not None and wire.outbox_budget.used == len(wire.outbox)
    received = b""
    while wire.outbox is not None:
        received += theirs.recv(65536)
        wire.send_outbox()  # the loop's, each time the socket has room
    received += _read(theirs, len(response) + len(b"and the end") - len(received))
    assert received == response + b"and the end" and wire.outbox_budget.used == 0


def test_nothing_of_the_response_out_yet_and_no_outbox_the_write_waits(pair):
    # Were a tail kept before any of its response went out, a worker that died then would leave its client
    # looking idle to the supervisor (every byte it counts written), parked, its request lost without a 502.
    wire, _ = pair
    _fill(wire)
    wire.begun = wire.sent  # the next response begins here, and the kernel takes none of it
    with pytest.raises(ClientTimedOut):
        wire.send(b"b" * 1000)
    assert wire.outbox is None


def test_past_its_bounds_the_write_waits_and_keeps_nothing(pair):
    wire, _ = pair
    _fill(wire)
    with pytest.raises(ClientTimedOut):
        wire.send(b"c" * (OUTBOX_MAX + 1))  # one connection's bound
    assert wire.outbox is None
    assert wire.outbox_budget is not None
    wire.outbox_budget.used = wire.outbox_budget.total - 10  # the worker's bound, all but spent by others
    with pytest.raises(ClientTimedOut):
        wire.send(b"d" * 1000)
    assert wire.outbox is None
    with pytest.raises(ClientTimedOut):
        wire.send(b"e" * 1000, keep=False)  # an answer a linger or a close follows goes whole, or not at all


def test_a_streams_next_piece_goes_at_once_once_the_client_has_taken_the_outbox(pair):
    # The loop writes the outbox only after the call; while the app streams on, its next write sends what waits
    # first, or the stream's pieces would wait behind it for the whole call.
    wire, theirs = pair
    sent = _fill(wire)
    wire.send(b"f" * 1000)
    assert wire.outbox is not None and len(wire.outbox) == 1000
    _read(theirs, sent)  # the client takes all the kernel held: room again
    wire.send(b"next piece")
    assert wire.outbox is None
    assert _read(theirs, 1000 + len(b"next piece")) == b"f" * 1000 + b"next piece"
