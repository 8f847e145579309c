"""A worker's quick exit (Ctrl-C's SIGINT, the supervisor's SIGQUIT) writes its access lines first, once.

Both signals come at a Ctrl-C: the second may be handled inside the first's flush, between two bytecodes.
That moment cannot be caused on purpose against the real process, so the flush here takes the second
signal itself."""

from __future__ import annotations

import signal

import pytest

from sockact.worker import shell


class Flushed(Exception):
    """os._exit's stand-in: ends the handler as the real one ends the process."""


def test_the_second_quick_stop_signal_inside_the_first_flush_lets_the_flush_end(monkeypatch):
    worker = shell.WorkerShell(None, None, [], None, 0, None, 0)  # type: ignore[arg-type]
    events: list[str] = []

    def exit_(code: int) -> None:
        events.append(f"exit {code}")
        raise Flushed

    class Access:
        def flush_before_exit(self) -> None:
            events.append("flush begins")
            worker._quick_exit(signal.SIGQUIT, None)  # the supervisor's, as the flush runs
            events.append("flush ends")

    monkeypatch.setattr(shell.os, "_exit", exit_)
    worker.access = Access()  # type: ignore[assignment]
    with pytest.raises(Flushed):
        worker._quick_exit(signal.SIGINT, None)
    assert events == ["flush begins", "flush ends", "exit 0"]
