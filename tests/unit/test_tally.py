"""The workers' request tally: cells written by app threads, summed and kept by the supervisor."""

from sockact.ipc.scoreboard import MAX_THREADS
from sockact.ipc.tally import CLASSES, DURATION_BUCKETS, METHODS, Tally


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
