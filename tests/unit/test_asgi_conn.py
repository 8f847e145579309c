"""asgi/conn.py's writes against the scoreboard: when the response of a call counts as begun.

A worker killed while its client waits gives that client a 502 only if no byte of the response went
out. The scoreboard line must therefore say "begun" before the first byte of the real response
reaches the kernel, and must never say it for a 100 Continue that went out whole: a worker killed
after it still owes the client a 502. The socket is real (a socketpair); it notes, at each send,
what the scoreboard says at that moment, which is what a supervisor reading it then would see."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from sockact.asgi.conn import AsgiConnection, Batch
from sockact.http import Limits, Site
from sockact.http.limits import LINGER_BYTES
from sockact.ipc import handoff
from sockact.ipc.scoreboard import Scoreboard
from sockact.worker.connstates import ConnState

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Watched(socket.socket):
    """A real socket that notes, at each send, whether the scoreboard says the response has begun."""

    def note(self, board: Scoreboard, slot: int) -> None:
        self.board, self.slot, self.seen = board, slot, []

    def send(self, data, flags=0):  # type: ignore[override]
        self.seen.append((bytes(data[:12]), self.board.calls(self.slot)[0].responded))
        return super().send(data, flags)


@pytest.fixture
def call():
    board = Scoreboard(1)
    slot = board.allocate()
    ours, client = socket.socketpair()
    sock = Watched(ours.family, ours.type, 0, fileno=ours.detach())
    sock.note(board, slot)
    loop = asyncio.new_event_loop()
    site = Site(app=None, limits=Limits(), header_timeout=10.0, io_timeout=30.0, access_log=False, listener="http")
    msg = handoff.Message(handoff.CONN, conn_id=7, family=socket.AF_UNIX)
    conn = AsgiConnection(loop, msg, sock, site, {}, lambda _: None, threading.Lock(), ConnState.CALL, 0.0)
    line = board.writer(slot, 0)
    line.begin(b"POST /", 7, conn.written)  # as the runner begins a call's line
    conn.call_line = conn.answering = line
    yield conn, sock, client, board, slot
    conn.detach()
    sock.close()
    client.close()
    loop.close()
    board.close()


def test_a_whole_100_continue_never_marks_the_response_begun_and_the_real_one_does_before_it_goes(call):
    conn, sock, client, board, slot = call
    conn.write(CONTINUE, interim=True)
    assert client.recv(100) == CONTINUE
    assert sock.seen == [(CONTINUE[:12], False)]
    assert not board.calls(slot)[0].responded  # a worker killed now leaves its client a 502
    conn.write(HEAD, b"ok")
    assert sock.seen[1] == (HEAD[:12], True)  # marked before the first byte went


def test_the_connection_counts_every_byte_written_sent_or_not(call):
    # The count a call's line takes before its response and at its end: interim responses and what the
    # kernel has not taken yet count too, as the kernel's own count of bytes written will.
    conn = call[0]
    conn.write(CONTINUE, interim=True)
    conn.write(HEAD, b"ok")
    assert conn.written == len(CONTINUE) + len(HEAD) + 2
    conn.write(b"")
    assert conn.written == len(CONTINUE) + len(HEAD) + 2


def test_a_100_continue_the_kernel_does_not_take_whole_marks_the_response_begun(call):
    conn, sock, _, board, slot = call
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        while True:
            socket.socket.send(sock, b"x" * 65536)  # fill the kernel's buffer; the client reads nothing yet
    conn.write(CONTINUE, interim=True)
    assert board.calls(slot)[0].responded  # a 502 after part of it would reach the client garbled



def test_a_close_lingering_behind_output_its_client_does_not_read_drops_at_most_linger_bytes(call):
    """An answer that waits for a client that reads nothing and sends on: the close lingers, dropping what the client
    sends while the answer waits to go out, and stops reading past LINGER_BYTES, as WSGI's linger does, rather than
    read (at the client's pace, a gigabyte a second on loopback) until the close's deadline."""
    conn, _, client, _, _ = call
    conn.write(b"x" * (8 * 1024 * 1024))  # more than the kernel takes: the rest waits in the connection's buffer
    assert conn.backlogged
    conn.close(linger=True, timeout=30.0)
    conn.resume_reading()  # watched, as a connection the loop was reading
    dropped = 0
    while conn.watched and dropped < 64 * LINGER_BYTES:
        client.sendall(b"z" * 65536)
        conn._on_readable()  # the loop's reader, as the socket is readable
        dropped += 65536
    assert not conn.watched and dropped <= LINGER_BYTES + 65536
    assert not conn.closed  # its deadline ends it (expire_close)


def test_a_close_behind_output_its_client_does_not_read_reads_no_more(call):
    """A close without linger (a 408 at header_timeout, say) whose answer waits for a client that reads nothing: the
    connection is not read any more. It was, while the answer waited (up to io_timeout), and what the client sent
    piled up in the engine unparsed, without bound."""
    conn = call[0]
    conn.write(b"x" * (8 * 1024 * 1024))  # more than the kernel takes: the rest waits in the connection's buffer
    conn.resume_reading()  # watched, as a connection the loop was reading for its next head
    conn.close(timeout=30.0)
    assert not conn.closed and not conn.watched

@pytest.fixture
def batched():
    """Two connections of one runner's loop, each with its client's end."""
    loop = asyncio.new_event_loop()
    lock = threading.Lock()
    site = Site(app=None, limits=Limits(), header_timeout=10.0, io_timeout=30.0, access_log=False, listener="http")
    conns = []
    for conn_id in (1, 2):
        a, b = socket.socketpair()
        msg = handoff.Message(handoff.CONN, conn_id=conn_id, family=socket.AF_UNIX)
        conn = AsgiConnection(loop, msg, a, site, {}, lambda _: None, lock, ConnState.CALL, 0.0, Batch(loop, lock))
        conns.append((conn, b))
    yield loop, conns
    for conn, peer in conns:
        conn.detach()
        conn.sock.close()
        peer.close()
    loop.close()


def test_what_a_turn_writes_goes_out_at_its_end_in_order(batched):
    loop, [(conn, peer), (other, other_peer)] = batched
    conn.write(b"one ")
    other.write(b"answer")
    conn.write(b"two")
    assert not conn.flushed and not conn.backlogged  # queued: nothing refused by the kernel
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(100)  # nothing sent yet
    loop.call_soon(loop.stop)
    loop.run_forever()  # the turn ends
    assert peer.recv(100) == b"one two" and other_peer.recv(100) == b"answer"
    assert conn.flushed


def test_an_interim_response_a_close_and_a_large_body_go_out_at_once(batched):
    _, [(conn, peer), (other, _)] = batched
    conn.write(b"HTTP/1.1 100 Continue\r\n\r\n", interim=True)
    assert peer.recv(100).startswith(b"HTTP/1.1 100")
    other.write(b"x" * (64 * 1024 + 1))
    assert other.flushed  # over WRITE_HIGH: sent as it comes
    conn.write(b"bye")
    conn.close()
    assert peer.recv(100) == b"bye"


def test_the_monitor_sends_what_a_blocked_turn_queued(batched):
    _, [(conn, peer), _] = batched
    conn.write(b"answer")
    conn.push_stalled()  # the loop is blocked in another call: the monitor, holding the lock, sends it
    assert peer.recv(100) == b"answer" and conn.flushed


class CountingLoop(asyncio.SelectorEventLoop):
    """asyncio's own loop, noting each watch it ends (remove_reader: an epoll_ctl, and another for the watch
    begun again)."""

    removed = 0

    def remove_reader(self, fd):  # type: ignore[override]
        self.removed += 1
        return super().remove_reader(fd)


def test_bytes_behind_a_whole_request_cost_no_new_watch_on_asyncios_loop():
    """A call's request is read whole and its client sends more (pipelined, or a byte before it resets). Under uvloop
    the connection is watched anew, since libuv reports no reset that came with the bytes read; asyncio's loop reads
    the reset as input, so its watch stays: two epoll_ctl calls a read, for every pipelined read, were spent there."""
    loop = CountingLoop()
    ours, client = socket.socketpair()
    site = Site(app=None, limits=Limits(), header_timeout=10.0, io_timeout=30.0, access_log=False, listener="http")
    msg = handoff.Message(handoff.CONN, conn_id=7, family=socket.AF_UNIX)
    conn = AsgiConnection(loop, msg, ours, site, {}, lambda _: None, threading.Lock(), ConnState.CALL, 0.0)
    try:
        conn.engine.receive_data(b"GET /poll HTTP/1.1\r\nHost: t\r\n\r\n")
        assert conn.engine.next_event() is not None and conn.engine.body_done()  # the call has its request whole
        conn.resume_reading()  # as a call waiting for input watches it
        for piece in (b"GET /next", b" HTTP/1.1\r\n"):
            client.send(piece)
            conn._on_readable()  # the loop's reader, as the socket is readable
        assert conn.engine.unparsed() == b"GET /next HTTP/1.1\r\n" and conn.watched
        assert loop.removed == 0
    finally:
        conn.detach()
        ours.close()
        client.close()
        loop.close()
