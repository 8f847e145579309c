"""The monitor's verdicts on a WSGI worker's calls (sockact/worker/callmix.py), fed times and counts."""

from __future__ import annotations

from sockact.worker.callmix import HANDOFF_WINDOW, LOOK_SHARE, SLOW_SHARE, CallMix


def served(mix: CallMix, now: float, requests: int, slow: int = 0, long: int = 0) -> None:
    mix.slow += slow
    mix.long += long
    mix.look(now, requests)


def test_a_window_is_judged_once_it_has_served_for_its_length():
    mix = CallMix(0.0)
    served(mix, 0.5, 100, slow=4)
    assert not mix.hand_off  # not judged yet
    served(mix, HANDOFF_WINDOW, 200)
    assert mix.hand_off and not mix.often  # 4 slow calls in 200: at least one in SLOW_SHARE
    served(mix, 2 * HANDOFF_WINDOW, 200 + SLOW_SHARE * 2 + 1, slow=2)  # 2 in 101
    assert not mix.hand_off  # below one in SLOW_SHARE


def test_long_calls_are_common_from_the_first_of_a_window_and_judged_with_it():
    mix = CallMix(0.0)
    assert not mix.long_common(10)
    mix.long += 1
    assert mix.long_common(10)  # one long call in 10 so far
    assert not mix.long_common(LOOK_SHARE + 1)
    served(mix, HANDOFF_WINDOW, LOOK_SHARE)
    assert mix.often and mix.long_common(LOOK_SHARE)


def test_a_worker_that_served_nothing_keeps_its_verdicts_and_its_next_window_begins_with_a_request():
    mix = CallMix(0.0)
    served(mix, HANDOFF_WINDOW, 100, slow=10, long=10)
    assert mix.hand_off and mix.often
    # A pause of a minute: the monitor looks now and then, and nothing is served.
    for t in range(2, 62):
        served(mix, float(t), 100)
    assert mix.hand_off and mix.often
    # Traffic comes back a second after the last look: the first requests served are not a window of
    # their own, nor the tail of the pause.
    served(mix, 63.0, 103)
    assert mix.hand_off and mix.often
    served(mix, 63.5, 150)
    assert mix.hand_off and mix.often
    # A whole window of short calls after it is judged as such.
    served(mix, 63.0 + HANDOFF_WINDOW, 400)
    assert not mix.hand_off and not mix.often
