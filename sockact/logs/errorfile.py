"""error_logfile: the supervisor's and workers' log as a file of timestamped lines.

Moved away by logrotate, it is opened anew at the next line (WatchedFileHandler). A line it cannot
write (a full disk) goes to stderr, the journal under systemd, and the failure is said once.

Each line is one write(2) of the file, unbuffered: a buffer kept a line the full disk refused and
wrote it once there was room, cut where the room had run out, among other processes' lines (and a
fork handed the worker a copy of it to write too). A line the disk takes in part (it filled
within the line) stays so, and the process's next line begins on a line of its own.
"""

from __future__ import annotations

import logging
import sys
from logging.handlers import WatchedFileHandler
from typing import Any

from sockact.logs.journal import to_stderr


class ErrorFileHandler(WatchedFileHandler):
    """error_logfile: a line it cannot write (a full disk) goes to stderr, and the failure is said once,
    and again once it writes again; logging's own handleError printed a traceback per record."""

    def __init__(self, filename: str) -> None:
        self._cut = False  # this process's last line went in part only: the next begins with a newline
        super().__init__(filename)
        self.failing = False  # the last write failed

    def _open(self) -> Any:
        return open(self.baseFilename, "ab", buffering=0)  # unbuffered: each line is one write(2)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reopenIfNeeded()
            if self.stream is None:  # closed (logging's shutdown) and logged to again, as FileHandler reopens
                self.stream = self._open()
            self._write((self.format(record) + self.terminator).encode("utf-8", "backslashreplace"))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        if self.failing:
            self.failing = False
            to_stderr(lambda: f"error_logfile {self.baseFilename}: writes again")

    def _write(self, line: bytes) -> None:
        """``line`` in one write as a rule; after a short one (the disk filled within it) the rest, whose write
        then raises and says why. What was not written is dropped: stderr has the line."""
        file: Any = self.stream  # _open's: bytes, unbuffered
        view = memoryview(b"\n" + line if self._cut else line)
        size = len(view)
        try:
            while view:
                view = view[file.write(view):]
        finally:
            if len(view) != size:  # some of it went in: cut, unless all did
                self._cut = bool(view)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):  # the record itself is bad (its arguments), not the file
            super().handleError(record)
            return
        if not self.failing:
            self.failing = True
            reason = error.strerror or repr(error)
            to_stderr(lambda: f"error_logfile {self.baseFilename}: cannot write ({reason}); its lines go to stderr "
                      "until it can")
        to_stderr(lambda: self.format(record))
