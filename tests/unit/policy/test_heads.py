"""What a connection past its head deadline gets while the supervisor holds it: pure, no sockets."""

from __future__ import annotations

import pytest

from sockact.policy.heads import Verdict, overdue, verdict

V1 = b"PROXY TCP4 192.0.2.1 192.0.2.2 40000 80\r\n"


def test_a_deadline_runs_only_once_it_has_begun():
    assert not overdue(0.0, 10.0, 1000.0)  # no head deadline runs (a whole request was read)
    assert not overdue(995.0, 10.0, 1000.0)
    assert overdue(985.0, 10.0, 1000.0)


@pytest.mark.parametrize(("seen", "preface", "expected"), [
    (b"", False, Verdict.SILENT),  # nothing sent: closed without a word
    (b"GET / HTTP/1.1\r\nHost: t\r\n", False, Verdict.LATE),  # part of a head: 408
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", False, Verdict.WAITS),  # a whole head waits for a worker
    (b"GET / HTTP/1.1\r\nHost: t\r\n\r\npartial body", False, Verdict.WAITS),
    (b"", True, Verdict.SILENT),
    (V1[:10], True, Verdict.SILENT),  # no whole PROXY header: closed without a word, as a worker does
    (b"GET / HTTP/1.1\r\n\r\n", True, Verdict.SILENT),  # no PROXY header at all
    (V1, True, Verdict.SILENT),  # the PROXY header, then nothing
    (V1 + b"GET / HTTP/1.1\r\n", True, Verdict.LATE),
    (V1 + b"GET / HTTP/1.1\r\n\r\n", True, Verdict.WAITS),
])
def test_the_verdict_on_a_late_head(seen, preface, expected):
    assert verdict(seen, preface) is expected
