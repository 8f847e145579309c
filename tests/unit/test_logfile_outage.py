"""A log's outage, told as it begins and as it ends, at most one pair a REPORT_INTERVAL however it flaps."""

from __future__ import annotations

import errno
import logging

import pytest

from sockact.logs import logfile
from sockact.logs.logfile import REPORT_INTERVAL, Outage


def test_a_failure_that_flaps_is_told_as_a_pair_once_an_interval_with_what_it_touched(monkeypatch: pytest.MonkeyPatch):
    clock = [1000.0]
    monkeypatch.setattr(logfile.time, "monotonic", lambda: clock[0])
    said: list[tuple[bool, str]] = []
    o = Outage("log", "cannot write (%s)", "writes again",
               lambda level, text: said.append((level == logging.ERROR, text.removeprefix("log: "))),
               lambda count: f"{count} touched")
    full = OSError(errno.ENOSPC, "No space left on device")
    o.failed(full, 2)
    o.failed(full, 1)
    o.ended()
    assert said == [(True, "cannot write (No space left on device)"), (False, "writes again; 3 touched")]
    for _ in range(5):  # a disk that keeps filling and freeing, within the interval: nothing more is said
        clock[0] += 1
        o.failed(full, 1)
        if o.told:
            o.ended()
    assert len(said) == 2
    clock[0] += REPORT_INTERVAL
    o.failed(OSError(errno.EFBIG, "File too large"), 1)
    assert said[2:] == [(True, "cannot write (File too large)")] and o.told
