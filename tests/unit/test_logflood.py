"""flood.LineLimit's decisions, with the clock given, and what flood.Lines logs of them: the first BURST
lines of a kind in an interval, then one summary with the count of the ones left out."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

from sockact.logs.flood import BURST, INTERVAL, LineLimit, Lines, summary


def test_the_first_burst_of_a_kind_passes_and_the_rest_are_counted_until_the_interval_ends():
    limit = LineLimit(burst=3, interval=10.0)
    said = [limit.admit("refused PROXY header", now) for now in (0.0, 1.0, 2.0, 3.0, 4.0, 9.9)]
    assert said == [(True, 0)] * 3 + [(False, 0)] * 3
    # The next line after the interval: logged, and the three left out are said first.
    assert limit.admit("refused PROXY header", 10.0) == (True, 3)
    assert limit.admit("refused PROXY header", 11.0) == (True, 0)  # a new interval, its own burst


def test_kinds_are_limited_each_on_its_own():
    limit = LineLimit(burst=1, interval=10.0)
    assert limit.admit("a", 0.0) == (True, 0)
    assert limit.admit("a", 1.0) == (False, 0)
    assert limit.admit("b", 1.0) == (True, 0)


def test_a_summary_is_due_at_the_tick_after_the_interval_even_when_no_line_of_its_kind_comes_again():
    limit = LineLimit(burst=1, interval=10.0)
    for now in (0.0, 1.0, 2.0):
        limit.admit("a", now)
    limit.admit("b", 5.0)
    assert limit.due(9.0) == []
    assert limit.due(10.0) == [("a", 2)]
    assert limit.due(20.0) == []  # said once; "b" left nothing out, and is forgotten too
    assert not limit.counting
    assert limit.admit("a", 20.0) == (True, 0)


def test_every_count_is_due_as_the_process_exits():
    limit = LineLimit(burst=1, interval=10.0)
    limit.admit("a", 0.0)
    limit.admit("a", 1.0)
    assert limit.due(2.0) == [] and limit.due(2.0, every=True) == [("a", 1)]


def test_the_summary_names_the_kind_and_the_count():
    assert summary("refused PROXY header", 1234, 10.0) == \
        "refused PROXY header: ... and 1,234 more like this in the last 10 s, not logged"


def test_lines_logs_the_burst_then_one_summary_at_the_level_of_its_kind(caplog, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("sockact.logs.flood.time.monotonic", lambda: clock[0])
    lines = Lines()
    log = logging.getLogger("sockact.worker")
    with caplog.at_level(logging.INFO, logger="sockact.worker"):
        for n in range(BURST + 25):
            lines.log("refused PROXY header", log, logging.WARNING, "conn %d: bad header; closing it", n)
        assert len(caplog.records) == BURST
        clock[0] += INTERVAL
        lines.due(clock[0])
    said = caplog.records[BURST]
    assert said.levelno == logging.WARNING and said.getMessage() == summary("refused PROXY header", 25, INTERVAL)
    assert said.SOCKACT_LEFT_OUT == 25  # a journal field: journalctl SOCKACT_LEFT_OUT=... finds them
    assert len(caplog.records) == BURST + 1


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO])
def test_a_line_below_the_log_level_counts_for_nothing(caplog, level):
    lines = Lines(LineLimit(burst=1))
    log = logging.getLogger("sockact.http")
    with caplog.at_level(logging.WARNING, logger="sockact.http"):
        for _ in range(5):
            lines.log("slow reader", log, level, "closed")
        lines.due(0.0, every=True)
    assert caplog.records == [] and not lines.limit.counting


def test_lines_from_many_threads_while_the_loop_asks_what_is_due_are_each_logged_or_counted_once(caplog):
    # A WSGI worker's app threads log these lines while its loop thread takes the summaries due.

    lines = Lines(LineLimit(burst=2, interval=0.0001))
    log = logging.getLogger("sockact.worker")
    each, threads = 5000, 4

    def flood(n: int) -> None:
        for _ in range(each):
            lines.log(f"kind {n}", log, logging.WARNING, "a line")

    workers = [threading.Thread(target=flood, args=(n,)) for n in range(threads)]
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns between any two bytecodes, as often as they can
    try:
        with caplog.at_level(logging.WARNING, logger="sockact.worker"):
            for t in workers:
                t.start()
            while any(t.is_alive() for t in workers):
                lines.due(float("inf"))
            for t in workers:
                t.join()
            lines.due(0.0, every=True)
    finally:
        sys.setswitchinterval(switching)
    logged = sum(r.getMessage() == "a line" for r in caplog.records)
    counted = sum(getattr(r, "SOCKACT_LEFT_OUT", 0) for r in caplog.records)
    assert logged + counted == each * threads
