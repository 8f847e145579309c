"""The scoreboard across a real fork: app threads stamp their lines, the parent reads them."""

from __future__ import annotations

import os
import time

from sockact.ipc.scoreboard import MAX_THREADS, Scoreboard, SlotView, SpareLines


def test_calls_stamped_in_a_child_are_read_by_the_parent():
    board = Scoreboard(4)
    slot = board.allocate()
    pid = os.fork()
    if pid == 0:
        try:
            first, second = board.writer(slot, 0), board.writer(slot, 1)
            first.begin(b"GET /a")
            first.end()
            first.begin(b"GET /slow\x1b")
            time.sleep(0.01)
            second.begin(b"POST /b")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    view = board.read(slot, threads=2)
    assert view.requests == 1 and view.busy == 2
    assert view.line == "GET /slow\x1b"  # the longest-running call
    assert view.oldest < view.newest
    now = time.monotonic()
    assert view.stalled(2, now + 1.0, 0.5) and not view.stalled(3, now + 1.0, 0.5)
    assert not view.stalled(2, view.newest + 0.1, 0.5)
    board.close()


def test_slots_are_reused_clean():
    board = Scoreboard(2)
    slot = board.allocate()
    board.writer(slot, 0).begin(b"GET /")
    board.release(slot)
    again = board.allocate()
    assert again == slot and board.read(slot, 1).busy == 0
    other = board.allocate()
    assert other != slot
    try:
        board.allocate()
    except IndexError:
        pass
    else:
        raise AssertionError("a full scoreboard must refuse")
    board.close()


def test_a_loop_that_stops_beating_is_frozen_unless_a_call_started_since():
    board = Scoreboard(1)
    slot = board.allocate()
    assert board.read(slot, 1).beat == 0.0 and not board.read(slot, 1).frozen(time.monotonic() + 100, 1.0)
    loop = board.writer(slot, 0)
    loop.beat()
    view = board.read(slot, 1)
    assert not view.frozen(view.beat + 0.5, 1.0) and view.frozen(view.beat + 1.5, 1.0)
    loop.begin(b"GET /slow")  # one app thread: the call runs on the loop's thread, and its timeout counts
    view = board.read(slot, 1)
    assert not view.frozen(view.newest + 0.5, 1.0) and not view.stuck(view.newest + 0.5, 1.0)
    assert view.stuck(view.newest + 1.5, 1.0)
    board.close()


def test_a_call_that_started_after_the_last_beat_is_not_a_frozen_loop():
    # The loop's thread runs the call (one app thread): it beats no more meanwhile, and the call's own
    # timeout (stuck) is what counts, from when the call started.
    view = SlotView(requests=1, busy=1, threads=1, threads_busy=1, oldest=105.0, newest=105.0, line="GET /slow",
                    beat=100.0)
    assert not view.frozen(105.5, 1.0) and not view.stuck(105.5, 1.0)
    assert view.frozen(106.5, 1.0) and view.stuck(106.5, 1.0)


def test_requests_waiting_for_an_app_thread_read_as_calls_not_yet_answered():
    from sockact.ipc.scoreboard import Waiting

    board = Scoreboard(1)
    slot = board.allocate()
    waiting = Waiting([board.writer(slot, 1), board.writer(slot, 2)])  # line 0 is the app thread's
    waiting.add(11, b"GET /a")
    waiting.add(12, b"GET /b")
    waiting.add(13, b"GET /c")  # no line left: it goes unnamed
    assert sorted((c.conn_id, c.line, c.responded) for c in board.calls(slot)) == [(11, "GET /a", False),
                                                                                   (12, "GET /b", False)]
    assert board.read(slot, 1).busy == 0  # not app calls: no stall, no timeout
    waiting.remove(11)  # its call begins
    waiting.add(13, b"GET /c")
    assert sorted(c.conn_id for c in board.calls(slot)) == [12, 13]
    board.close()


def test_a_line_begun_with_a_count_responds_with_one_byte_and_ends_with_its_length():
    # An ASGI call's line: begun with the bytes written on the connection before the call, its response's
    # beginning is the one word that changes; its end gives the length, from the count written by then.
    from sockact.ipc.scoreboard import UNKNOWN

    board = Scoreboard(1)
    slot = board.allocate()
    quick, full = board.writer(slot, 1), board.writer(slot, 2)
    quick.begin(b"GET /a", 11, 40)
    full.begin(b"GET /a", 12)
    assert [c.responded for c in board.calls(slot)] == [False, False]
    quick.responded_uncounted()
    full.responded()
    calls = sorted(board.calls(slot), key=lambda c: c.conn_id)
    assert [(c.responded, c.answered, c.written_before, c.length) for c in calls] == [(True, False, 40, 0),
                                                                                       (True, False, None, 0)]
    quick.whole(65)
    assert [(c.written_before, c.length) for c in board.calls(slot) if c.conn_id == 11] == [(40, 25)]
    quick.end()
    quick.begin(b"GET /a", 11, UNKNOWN)  # not counted: its end must not raise, and says nothing
    quick.responded_uncounted()
    quick.whole(90)
    assert [c.written_before for c in board.calls(slot) if c.conn_id == 11] == [None]
    board.close()


def test_a_line_reads_each_calls_own_count_when_begin_skips_the_one_already_there():
    # begin stores the bytes written before the response only when they change: the line must still read
    # each call's own (0 too: a connection's first call), after a responded() count, and for a writer made
    # anew; and never the length of an earlier call's response.
    from sockact.ipc.scoreboard import UNKNOWN

    board = Scoreboard(1)
    slot = board.allocate()
    line = board.writer(slot, 1)
    line.begin(b"GET /a", 7, 0)
    line.end()
    line.begin(b"GET /a", 7, 0)  # 0 again: not stored again
    assert [(c.conn_id, c.written_before) for c in board.calls(slot)] == [(7, 0)]
    line.responded_uncounted()
    line.whole(30)
    line.end()
    line.begin(b"GET /a", 7, 30)  # the next call on the connection
    assert [(c.written_before, c.length) for c in board.calls(slot)] == [(30, 0)]
    line.responded(written=40, length=10)
    line.end()
    line.begin(b"GET /a", 7, 0)  # the count responded() wrote is replaced, and its length
    assert [(c.conn_id, c.responded, c.written_before, c.length) for c in board.calls(slot)] == [(7, False, 0, 0)]
    line.responded(written=40)
    line.end()
    board.writer(slot, 1).begin(b"GET /a", 8, 40)  # another writer of that line
    line.responded(written=UNKNOWN)
    line.end()
    board.writer(slot, 1).begin(b"GET /a", 9, 40)  # the one there is UNKNOWN: replaced
    assert [(c.conn_id, c.written_before) for c in board.calls(slot)] == [(9, 40)]
    board.close()


def test_lines_made_past_the_first_are_read_with_a_dead_workers_calls():
    # An ASGI worker makes lines past the first MAX_THREADS as its calls at once grow; the parent reads as many.
    board = Scoreboard(1, MAX_THREADS + 40)
    slot = board.allocate()
    pid = os.fork()
    if pid == 0:
        try:
            spare = SpareLines(board, slot)
            lines = [spare.take() for _ in range(41)]
            assert lines[-1] is None  # the slot has no more
            for i, line in enumerate(lines[:-1]):
                assert line is not None
                line.begin(b"GET /%d" % i, conn_id=1000 + i)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert sorted(call.conn_id for call in board.calls(slot)) == list(range(1000, 1040))
    board.close()
