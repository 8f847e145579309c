"""The stop's timer, fed ticks: systemd is asked for time ahead of need, up to graceful_timeout."""

from __future__ import annotations

from types import SimpleNamespace

from sockact.supervisor.stopping import EXTEND_AHEAD, Stop


class Notifier:
    def __init__(self) -> None:
        self.extended: list[tuple[float, float]] = []
        self.now = 0.0

    def extend_timeout(self, seconds: float) -> None:
        self.extended.append((self.now, seconds))

    def status(self, text: str) -> None:
        pass


def test_one_long_request_keeps_the_stop_extended_to_its_deadline_and_no_further():
    notifier = Notifier()
    sup = SimpleNamespace(notifier=notifier, workers={1: object()}, dispatcher=SimpleNamespace(held=1))
    stop = Stop(sup)  # type: ignore[arg-type]
    stop._deadline = 30.0  # graceful_timeout from a drain that began at 0
    covered = 0.0
    for tick in range(0, 59):  # every 0.5 s, no request completing: the one in flight takes it all
        now = notifier.now = tick * 0.5
        stop.tick(now)
        covered = max([covered] + [at + seconds for at, seconds in notifier.extended])
        assert covered > now + EXTEND_AHEAD - 0.5, f"systemd's stop timeout could run out at {now}"
    assert covered <= 31.0  # never beyond the deadline this process keeps itself (plus a second)
    assert len(notifier.extended) < 15  # a few seconds at a time, not a message each tick
