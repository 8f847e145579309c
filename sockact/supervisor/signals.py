"""Signals that only wake a selector loop: handlers do nothing, the numbers arrive on a socket.

``signal.set_wakeup_fd`` makes the C-level handler write each signal's number to a socket
that the loop watches; the loop reads them and acts in its own time, outside any handler
(gunicorn's arbiter does the same with a pipe). Handle signals nowhere else.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterable


class SignalWakeup:
    def __init__(self, signals: Iterable[signal.Signals]) -> None:
        self.signals = tuple(signals)
        self._r: socket.socket | None = None
        self._w: socket.socket | None = None

    def install(self) -> socket.socket:
        """Route the signals to the wakeup socket; returns its readable end, for the selector."""
        self._r, self._w = socket.socketpair()
        for sock in (self._r, self._w):
            sock.setblocking(False)
        signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        for sig in self.signals:
            # A Python-level handler is needed for the wakeup fd to be written; it does nothing else.
            signal.signal(sig, _wake_only)
        return self._r

    def read(self) -> bytes:
        """The numbers of the signals that arrived since the last read, in order."""
        assert self._r is not None
        got = b""
        while True:
            try:
                got += self._r.recv(512)
            except BlockingIOError:
                return got

    def close(self) -> None:
        """Stop routing signals here (in a new worker, and at exit) and close the socket."""
        signal.set_wakeup_fd(-1)
        for sock in (self._r, self._w):
            if sock is not None:
                sock.close()


def _wake_only(signum: int, frame: object) -> None:
    """Signal handler: the wakeup fd has already woken the loop; nothing to do here."""
