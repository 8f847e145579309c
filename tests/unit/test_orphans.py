"""What a dead worker's clients get, decided from its connections and its scoreboard lines: no I/O."""

from __future__ import annotations

import contextlib
import socket

from sockact.ipc import handoff
from sockact.ipc.scoreboard import IDLE_MARKS, Call, Rest, Scoreboard, SlotWriter
from sockact.policy.parking import Conn
from sockact.supervisor.orphans import Verdict, answer, unread_bytes, verdicts, written_bytes
from sockact.worker.connstates import ConnState
from sockact.worker.owner import Owned


def conn(conn_id: int, fd: int = -1) -> Conn:
    return Conn(conn_id, fd, 0, socket.AF_INET, ("127.0.0.1", 40000 + conn_id))


def test_each_connection_gets_what_its_call_allows() -> None:
    conns = [conn(1), conn(2), conn(3), conn(4)]
    calls = [Call(2, "GET /slow", False, 100.0), Call(3, "GET /stream", True, 100.0), Call(4, "GET /new", False, 140.0)]
    got = {v.conn.id: (v.status, v.line) for v in verdicts(conns, calls, overdue_before=None)}
    # 1: idle, closed as its worker would have; 3: its response had begun, so it is cut, not replaced
    assert got == {1: (None, ""), 2: (502, "GET /slow"), 3: (None, "GET /stream"), 4: (502, "GET /new")}


def test_a_connection_never_read_goes_to_another_worker() -> None:
    # 1: bytes wait unread and no call: never read, so served elsewhere. 2: the same, but it came
    # with bytes of its own (a hand-back), which the worker may have served: closed, never replayed.
    # 3: nothing waits: idle, or read in part; closed. 4: in a call: its 502, whatever waits behind.
    handed_back = conn(2)
    handed_back.data = b"GET / HTTP/1.1\r\n\r\n"
    calls = [Call(4, "GET /slow", False, 100.0)]
    got = {v.conn.id: (v.again, v.status) for v in verdicts([conn(1), handed_back, conn(3), conn(4)], calls,
                                                             overdue_before=None, unread={1, 2, 4})}
    assert got == {1: (True, None), 2: (False, None), 3: (False, None), 4: (False, 502)}


def test_bytes_a_hand_back_brought_are_judged_by_what_was_written_since() -> None:
    # Each came with a hand-back's head, at 300 bytes written. 1 and 2: a response went out since,
    # so the worker answered it; 1's next request waits unread: another worker, without the old
    # head. 2: nothing waits: idle, closed. 3: nothing went out: the head was never answered, and
    # whether the worker consumed it cannot be told: a 502, never a silent close. 4: the kernel
    # cannot say: closed. 5: only the blank lines allowed between requests came: as if none.
    conns = [conn(n) for n in range(1, 6)]
    for handed_back in conns:
        handed_back.data, handed_back.written = b"GET /next HTTP/1.1\r\n\r\n", 300
    conns[4].data = b"\r\n"
    written = {1: 420, 2: 420, 3: 300, 4: None, 5: 300}
    got = {v.conn.id: (v.again, v.served, v.status) for v in verdicts(conns, [], None, unread={1, 3, 4, 5},
                                                                       written=written)}
    assert got == {1: (True, True, None), 2: (False, False, None), 3: (False, False, 502), 4: (False, False, None),
                   5: (True, False, None)}
    # The 502's log line names the request, as a call's line does.
    assert [v.line for v in verdicts(conns[2:3], [], None, written=written)] == ["GET /next"]


def test_a_connection_that_never_reached_the_worker_goes_elsewhere_with_its_bytes() -> None:
    # Sent after the messages the worker took from its channel: it never arrived, so even a
    # hand-back's bytes are still whole in the supervisor's hands.
    handed_back = conn(2)
    handed_back.data = b"GET / HTTP/1.1\r\n\r\n"
    got = {v.conn.id: v.again for v in verdicts([conn(1), handed_back], [], overdue_before=None, unreceived={2})}
    assert got == {1: False, 2: True}


def test_the_connection_the_loop_was_reading_gets_a_502_unless_it_was_never_read() -> None:
    # 1: the loop was reading it, and nothing waits in the kernel: what it read (a head, whole or in
    # part) is lost with the worker, and the client waits for an answer. 2: idle beside it: closed.
    got = {v.conn.id: (v.again, v.status) for v in verdicts([conn(1), conn(2)], [], overdue_before=None, reading=1)}
    assert got == {1: (False, 502), 2: (False, None)}
    # Its bytes still wait unread: the worker died before its read took them; another worker reads them.
    got = {v.conn.id: (v.again, v.status) for v in verdicts([conn(1)], [], overdue_before=None, unread={1},
                                                             reading=1)}
    assert got == {1: (True, None)}
    # In a call by now: the call's line decides.
    got = {v.conn.id: v.status for v in verdicts([conn(1)], [Call(1, "GET /", True, 1.0)], None, reading=1)}
    assert got == {1: None}


def test_a_call_whose_response_is_whole_leaves_an_idle_connection() -> None:
    # The worker died after the last byte of a response that keeps its connection, before its call
    # ended (the access line, the app's close()): the client has its answer. 1: its next request waits
    # unread: another worker serves it. 2: nothing waits: closed, as an idle connection is.
    calls = [Call(1, "GET /a", True, 1.0, answered=True), Call(2, "GET /b", True, 1.0, answered=True)]
    got = {v.conn.id: (v.again, v.status) for v in verdicts([conn(1), conn(2)], calls, None, unread={1})}
    assert got == {1: (True, None), 2: (False, None)}


def test_the_kernels_count_of_bytes_written_tells_how_much_of_a_begun_response_went_out() -> None:
    # Each connection had 100 bytes written on it before this worker (its hand-over's count), and the
    # worker wrote 50 more before a 30-byte response went in one send. The kernel's count now says:
    conns = [conn(i) for i in range(1, 6)]
    for c in conns[:4]:
        c.written = 100
    calls = [Call(i, "GET /", True, 1.0, written_before=50, length=30) for i in range(1, 5)]
    calls.append(Call(5, "GET /", True, 1.0, written_before=50, length=30))
    written = {1: 180, 2: 150, 3: 165, 4: None, 5: 180}
    got = {v.conn.id: (v.again, v.status) for v in verdicts(conns, calls, None, unread={1}, written=written)}
    # 1: all of it: an idle connection, whose next request waits unread (another worker serves it).
    # 2: none of it: the client still gets its 502. 3: part of it: cut, closed. 4: the kernel cannot
    # say: closed. 5: what was written before the hand-over is not known: closed.
    assert got == {1: (True, None), 2: (False, 502), 3: (False, None), 4: (False, None), 5: (False, None)}


def test_written_bytes_counts_what_was_ever_written_on_a_tcp_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname(), timeout=5):
        accepted, _ = server.accept()
        with accepted:
            assert written_bytes(accepted.fileno()) == 0
            accepted.sendall(b"x" * 1000)
            assert written_bytes(accepted.fileno()) == 1000
            accepted.setblocking(False)
            queued = 0
            with contextlib.suppress(BlockingIOError):  # the client reads nothing: some wait to be sent
                while True:
                    queued += accepted.send(b"y" * 65536)
            assert written_bytes(accepted.fileno()) == 1000 + queued
            assert accepted.fileno() >= 0  # the fd is still the caller's
    left, right = socket.socketpair()
    with left, right:
        assert written_bytes(left.fileno()) is None  # not TCP


def test_the_scoreboard_tells_a_response_begun_from_one_that_is_whole() -> None:
    board = Scoreboard(1)
    slot = board.allocate()
    line = board.writer(slot, 0)
    line.begin(b"GET /a", 11)
    assert [(c.responded, c.answered) for c in board.calls(slot)] == [(False, False)]
    line.responded()
    assert [(c.responded, c.answered) for c in board.calls(slot)] == [(True, False)]
    line.answered()
    assert [(c.responded, c.answered) for c in board.calls(slot)] == [(True, True)]
    line.end()
    line.begin(b"GET /b", 11)
    assert [(c.responded, c.answered) for c in board.calls(slot)] == [(False, False)]
    board.close()


def test_the_stamp_of_the_connection_being_read_lasts_until_what_it_read_is_accounted_for() -> None:
    board = Scoreboard(1)
    slot = board.allocate()
    loop, other = board.writer(slot, 0), board.writer(slot, 1)
    assert board.reading(slot) == 0
    loop.reading(7)  # about to read connection 7
    assert board.reading(slot) == 7
    other.begin(b"GET /a", 8)
    other.end()  # another line's call changes nothing
    assert board.reading(slot) == 7
    loop.reading(0)  # on a waiting line, or answered without a call: nothing read waits
    assert board.reading(slot) == 0
    # With one app thread, the loop thread's own call serves what it read: its end clears the stamp
    # in the same write, and leaves the rest of the slot's head alone.
    loop.clears_reading = True
    loop.beat()
    beat = board.read(slot, 1).beat
    loop.reading(9)
    loop.begin(b"GET /b", 9)
    assert board.reading(slot) == 9 and [c.conn_id for c in board.calls(slot)] == [9]
    loop.end()
    assert board.reading(slot) == 0 and board.calls(slot) == []
    assert board.read(slot, 2).requests == 2 and board.read(slot, 1).beat == beat
    board.close()


def test_unread_bytes_counts_what_waits_in_the_kernel() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert unread_bytes(ours.fileno()) == 0
        theirs.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert unread_bytes(ours.fileno()) == 18
        ours.recv(4)
        assert unread_bytes(ours.fileno()) == 14


def test_killed_for_timeout_the_overdue_call_gets_504_and_a_younger_one_502() -> None:
    calls = [Call(2, "GET /hang", False, 100.0), Call(4, "GET /new", False, 140.0)]
    got = {v.conn.id: v.status for v in verdicts([conn(2), conn(4)], calls, overdue_before=130.0)}
    assert got == {2: 504, 4: 502}


def test_the_scoreboard_tells_which_connection_a_call_serves_and_whether_it_answered() -> None:
    board = Scoreboard(2)
    slot = board.allocate()
    first, second = board.writer(slot, 0), board.writer(slot, 1)
    first.begin(b"GET /a", 11)
    second.begin(b"POST /b", 12)
    second.responded()
    assert [(c.conn_id, c.line, c.responded) for c in board.calls(slot)] == [(11, "GET /a", False),
                                                                              (12, "POST /b", True)]
    first.end()
    assert [c.conn_id for c in board.calls(slot)] == [12]
    board.close()


def test_answer_sends_the_status_and_ends_the_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname(), timeout=5) as client:
        accepted, _ = server.accept()
        answer(Verdict(conn(1, accepted.detach()), 502, "GET /"))
        data = b""
        while chunk := client.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 502 Bad Gateway\r\n") and b"Connection: close\r\n" in data
    assert data.endswith(b"\r\n\r\n502 Bad Gateway\n")


def test_a_connection_marked_at_a_request_boundary_is_parked_or_told_408_when_the_kernel_agrees() -> None:
    # Each had 100 bytes written on it before this worker, which wrote 40 more by its mark. 1: idle, and the
    # kernel counts all 140: parked. 2: idle, but 10 of them still waited in the worker's buffers: closed.
    # 3: idle, but its next request waits unread: another worker. 4: part of a head, no more: a 408 (the
    # rest of it may wait unread). 5: the kernel cannot say (or the connection is closing): closed.
    # 6: not counted at its hand-over: closed. 7: no mark: closed, as before.
    conns = [conn(n) for n in range(1, 8)]
    for c in conns[:5]:
        c.written = 100
    resting = {n: Rest(40, n == 4) for n in range(1, 7)}
    written = {1: 140, 2: 130, 3: 140, 4: 140, 5: None, 6: 140, 7: 140}
    got = {v.conn.id: (v.park, v.again, v.status) for v in verdicts(conns, [], None, unread={3, 4}, written=written,
                                                                     resting=resting)}
    assert got == {1: (True, False, None), 2: (False, False, None), 3: (False, True, None), 4: (False, False, 408),
                   5: (False, False, None), 6: (False, False, None), 7: (False, False, None)}
    # The mark is written after the read it describes: it tells more than the stamp of the read under way.
    assert [(v.park, v.status) for v in verdicts(conns[:1], [], None, reading=1, written=written,
                                                 resting=resting)] == [(True, None)]
    # A request read whole behind a call's whole response (pipelined), and no call begun for it: a 502, and
    # what waits unread behind it stays there.
    read = {1: Rest(40, False, read=True)}
    assert [(v.again, v.status) for v in verdicts(conns[:1], [Call(1, "GET /a", True, 1.0, answered=True)], None,
                                                  unread={1}, written=written, resting=read)] == [(False, 502)]
    # A call's line comes first: in a call, the mark (an earlier boundary's) says nothing.
    calls = [Call(1, "GET /", False, 1.0)]
    assert [v.status for v in verdicts(conns[:1], calls, None, written=written, resting=resting)] == [502]


def _resting(writer: SlotWriter, conn_id: int) -> Owned:
    """A connection of the worker that writes on ``writer``'s slot, marking itself as the runners' do."""
    conn = Owned(handoff.Message(handoff.CONN, conn_id=conn_id), None, ConnState.IDLE, 0.0)  # type: ignore[arg-type]
    conn.marked(writer.mark_of(conn_id))
    return conn


def test_the_scoreboard_keeps_a_mark_per_connection_until_it_is_wiped() -> None:
    board = Scoreboard(2)
    slot = board.allocate()
    other = board.allocate()
    loop = board.writer(slot, 0)
    seven, eight, ten = (_resting(loop, conn_id) for conn_id in (7, 8, 10))
    seven.rest(120)
    eight.rest(300, in_head=True)
    ten.rest(2**40, read=True)
    _resting(board.writer(other, 0), 9).rest(5)
    assert board.resting(slot) == {7: Rest(120, False), 8: Rest(300, True), 10: Rest(2**40, False, True)}
    for conn in (ten, eight):  # about to be read again: the runners wipe the mark inline
        conn.mark[conn.mark_at] = 0
    _resting(loop, 7 + IDLE_MARKS).rest(60)  # another connection's mark takes the place of 7's: 7 is not known any more
    assert board.resting(slot) == {7 + IDLE_MARKS: Rest(60, False)}
    assert board.resting(other) == {9: Rest(5, False)}
    board.close()


def test_written_bytes_of_an_established_connection_only_while_both_sides_are_open() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname(), timeout=5):
        accepted, _ = server.accept()
        with accepted:
            accepted.sendall(b"x" * 10)
            assert written_bytes(accepted.fileno(), established=True) == 10
            accepted.shutdown(socket.SHUT_WR)  # the worker began to close it
            assert written_bytes(accepted.fileno(), established=True) is None
            assert written_bytes(accepted.fileno()) == 10
