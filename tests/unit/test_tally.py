"""The workers' request tally: cells written by app threads, summed and kept by the supervisor."""

import pytest

from sockact.ipc.scoreboard import MAX_THREADS
from sockact.ipc.tally import CLASSES, DURATION_BUCKETS, METHODS, WS_DURATION_BUCKETS, WS_ENDS, Tally, ws_end


def request_count(tally: Tally, cells: list[int], listener: int, method: str, klass: str) -> int:
    return cells[tally.layout.request_cell(listener, METHODS.index(method), CLASSES.index(klass))]


def test_a_request_is_counted_by_listener_method_class_and_duration_bucket():
    tally = Tally(slots=4, listeners=2)
    tally.clear(1)
    writer = tally.writer(1, 0)
    writer.record(1, b"GET", 204, 0.003)
    assert sum(tally.read(1, threads=1)) == 0  # counted in the thread's own list, not yet published
    writer.flush()
    cells = tally.read(1, threads=1)
    assert request_count(tally, cells, 1, "GET", "2xx") == 1
    assert sum(cells[:tally.layout.stride]) == 0  # listener 0 saw nothing
    bucket = DURATION_BUCKETS.index(0.005)  # 3 ms falls in the le=0.005 bucket
    assert cells[tally.layout.bucket_cell(1, bucket)] == 1
    assert cells[tally.layout.sum_cell(1)] == 3000  # microseconds
    tally.close()


def test_unknown_methods_and_statuses_fall_in_their_catch_alls():
    tally = Tally(slots=1, listeners=1)
    writer = tally.writer(0, 0)
    writer.record(0, b"PROPFIND", 207, 0.0)
    writer.record(0, b"GET", 0, 0.0)  # the client left before a response
    writer.record(0, b"GET", 999, 99.0)  # past the last bound: +Inf
    writer.flush()
    cells = tally.read(0, threads=1)
    assert request_count(tally, cells, 0, "other", "2xx") == 1
    assert request_count(tally, cells, 0, "GET", "none") == 2
    assert cells[tally.layout.bucket_cell(0, len(DURATION_BUCKETS))] == 1
    tally.close()


def test_the_threads_lines_are_summed_and_a_retired_worker_is_kept():
    tally = Tally(slots=2, listeners=1)
    for thread in range(3):
        writer = tally.writer(0, thread)
        writer.record(0, b"POST", 500, 0.01)
        writer.flush()
    assert request_count(tally, tally.read(0, threads=3), 0, "POST", "5xx") == 3
    tally.retire(0, threads=3)
    tally.clear(0)  # the slot goes to a new worker
    for slot in (0, 1):
        writer = tally.writer(slot, 0)
        writer.record(0, b"POST", 500, 0.01)
        writer.flush()
    total = tally.total([(0, 1), (1, 1)])
    assert request_count(tally, total, 0, "POST", "5xx") == 5
    tally.close()


def test_threads_past_the_lines_share_the_last_writer():
    tally = Tally(slots=1, listeners=1)
    writers = tally.writers(0, MAX_THREADS + 2)
    assert len(writers) == MAX_THREADS + 2
    assert writers[-1] is writers[-2] is writers[MAX_THREADS - 1]
    assert len(set(writers)) == MAX_THREADS
    tally.close()


def test_each_retired_worker_adds_to_the_totals():
    tally = Tally(slots=1, listeners=1)
    for served in (2, 3, 4):  # three workers in turn on one slot, each retired
        tally.clear(0)
        writer = tally.writer(0, 0)
        for _ in range(served):
            writer.record(0, b"GET", 200, 0.001)
        writer.flush()
        tally.retire(0, threads=1)
    tally.clear(0)
    assert request_count(tally, tally.total([(0, 1)]), 0, "GET", "2xx") == 9
    tally.close()


def ended(tally: Tally, cells: list[int], listener: int, how: str) -> int:
    return cells[tally.layout.ws_end_cell(listener, WS_ENDS.index(how))]


@pytest.mark.parametrize(("opened", "code", "denied", "rejected", "client_left", "how"), [
    (True, 1000, False, False, False, "1000"),
    (True, 1001, False, False, False, "1001"),
    (True, 1005, False, False, False, "1005"),  # a close frame without a code
    (True, 1006, False, False, True, "1006"),  # the client went away without one
    (True, 1011, False, False, False, "1011"),
    (True, 3000, False, False, False, "app"),
    (True, 4999, False, False, False, "app"),
    (True, 1012, False, False, False, "other"),  # IANA's, past RFC 6455
    (True, 1004, False, False, False, "other"),  # reserved
    (True, 5000, False, False, False, "other"),
    (True, 65535, False, False, False, "other"),
    (False, 1006, True, False, False, "denied"),
    (False, 1006, True, False, True, "denied"),  # the client left in the middle of the denial
    (False, 1006, False, True, False, "rejected"),
    (False, 1006, False, True, True, "rejected"),
    (False, 1006, False, False, False, "error"),  # the app failed, or returned, before it answered
    (False, 1006, False, False, True, "1006"),  # the client left before the handshake was answered
    (False, 1001, False, False, False, "1001"),  # the worker drained before the handshake was answered
])
def test_how_a_websocket_ended_is_one_of_a_bounded_set(opened, code, denied, rejected, client_left, how):
    assert WS_ENDS[ws_end(opened, code, denied, rejected, client_left)] == how


def test_a_websocket_is_open_from_its_accept_to_its_end_and_counted_by_how_it_ended():
    tally = Tally(slots=2, listeners=2)
    layout = tally.layout
    writer = tally.writer(1, 0)
    writer.ws_opened(1)
    writer.ws_opened(1)
    writer.flush()
    cells = tally.read(1, threads=1)
    assert cells[layout.ws_open_cell(1)] == 2 and cells[layout.ws_open_cell(0)] == 0
    writer.ws_ended(1, WS_ENDS.index("app"), 42.0)
    writer.ws_ended(1, WS_ENDS.index("rejected"), None)  # never opened: the open count stays
    writer.flush()
    cells = tally.read(1, threads=1)
    assert cells[layout.ws_open_cell(1)] == 1
    assert ended(tally, cells, 1, "app") == 1 and ended(tally, cells, 1, "rejected") == 1
    assert cells[layout.ws_bucket_cell(1, WS_DURATION_BUCKETS.index(60.0))] == 1  # 42 s: le=60
    assert sum(cells[layout.ws_bucket_cell(1, 0):layout.ws_bucket_cell(1, layout.ws_buckets)]) == 1
    assert cells[layout.ws_sum_cell(1)] == 42_000_000 and cells[layout.sum_cell(1)] == 0
    assert sum(cells[:layout.stride]) == 0  # listener 0 saw nothing
    tally.close()


def test_a_dead_workers_open_websockets_leave_the_open_count_as_lost():
    tally = Tally(slots=2, listeners=1)
    layout = tally.layout
    for slot in (0, 1):
        writer = tally.writer(slot, 0)
        for _ in range(3):
            writer.ws_opened(0)
        writer.ws_ended(0, WS_ENDS.index("1000"), 1.0)
        writer.flush()
    assert tally.total([(0, 1), (1, 1)])[layout.ws_open_cell(0)] == 4
    tally.retire(0, threads=1)  # killed with two sessions open
    tally.clear(0)
    total = tally.total([(1, 1)])
    assert total[layout.ws_open_cell(0)] == 2  # the live worker's alone
    assert ended(tally, total, 0, "lost") == 2
    assert ended(tally, total, 0, "1000") == 2  # the dead worker's ended sessions are still counted
    tally.retire(1, threads=1)
    assert tally.total([])[layout.ws_open_cell(0)] == 0
    assert ended(tally, tally.total([]), 0, "lost") == 4
    tally.close()
