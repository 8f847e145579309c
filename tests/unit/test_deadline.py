"""The ASGI worker's last seconds before the supervisor's kill (sockact/worker/deadline.py): no clock, no loop."""

from __future__ import annotations

import pytest

from sockact.worker.deadline import MARGIN_MAX, Deadline, Step


def test_serving_until_the_worker_learns_it_stops_then_each_quarter_of_the_margin_in_turn():
    # graceful_timeout 3 s: a margin of 0.6 s, its quarters 0.15 s; learned at 10.0, killed at 13.0.
    d = Deadline(3.0)
    assert d.step(1000.0) is Step.SERVE  # no deadline runs while it serves
    d.begin(10.0)
    d.begin(11.0)  # once: a later look does not move it
    assert d.kill_at == 13.0
    assert [d.step(t) for t in (10.0, 12.39, 12.41, 12.56, 12.71, 13.5)] == \
        [Step.SERVE, Step.SERVE, Step.CLOSE, Step.CANCEL, Step.GIVE_UP, Step.GIVE_UP]


def test_the_lifespan_shutdown_may_take_until_the_last_quarter_which_is_the_exits():
    d = Deadline(3.0)
    d.begin(10.0)
    assert d.lifespan_time(12.7) == pytest.approx(0.15)
    assert d.lifespan_time(12.95) == 0.0  # past it: no time, never a negative one
    # A worker that exits before any look saw it stopping (nothing held at its EOF) begins its clock there.
    late = Deadline(30.0)
    assert late.lifespan_time(5.0) == pytest.approx(30.0 - MARGIN_MAX / 4)


@pytest.mark.parametrize(("grace", "margin"), [(30.0, MARGIN_MAX), (3.0, 0.6), (0.0, 0.0)])
def test_the_margin_is_a_share_of_graceful_timeout_capped(grace, margin):
    # Most of a long graceful_timeout stays the calls'; a short one keeps a fifth for the worker's own end.
    assert Deadline(grace).margin == pytest.approx(margin)
