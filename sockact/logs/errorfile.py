"""error_logfile: the supervisor's and workers' log as a file of timestamped lines.

Moved away by logrotate, it is opened anew at the next line (WatchedFileHandler). A line it cannot
write (a full disk) goes to stderr, the journal under systemd, and the failure is said once there
(logfile.Outage), as is its end; a disk that keeps filling and freeing says the pair at most once a minute.

Each line is one write(2) of the file, unbuffered (logfile.Lines): a buffer kept a line the full disk
refused and wrote it once there was room, after it had gone to stderr, among other processes' lines
(and a fork handed the worker a copy of it to write too).
"""

from __future__ import annotations

import logging
import sys
from logging.handlers import WatchedFileHandler
from typing import Any

from sockact.logs.journal import to_stderr
from sockact.logs.logfile import Lines, Outage


def _to_stderr(level: int, text: str) -> None:
    to_stderr(lambda: text)


def _to_stderr_meanwhile(count: int) -> str:
    return f"{count} line{'' if count == 1 else 's'} went to stderr meanwhile"


class ErrorFileHandler(WatchedFileHandler):
    """error_logfile: a line it cannot write (a full disk) goes to stderr, and the failure is said once,
    and again once it writes again; logging's own handleError printed a traceback per record."""

    def __init__(self, filename: str) -> None:
        self.lines = Lines()
        super().__init__(filename)
        self.writes = Outage(f"error_logfile {self.baseFilename}", "cannot write (%s); its lines go to stderr until "
                             "it can", "writes again", _to_stderr, _to_stderr_meanwhile)

    def _open(self) -> Any:
        return open(self.baseFilename, "ab", buffering=0)  # unbuffered: each line is one write(2)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reopenIfNeeded()
            if self.stream is None:  # closed (logging's shutdown) and logged to again, as FileHandler reopens
                self.stream = self._open()
            file: Any = self.stream  # _open's: bytes, unbuffered
            self.lines.write(file.write, (self.format(record) + self.terminator).encode("utf-8", "backslashreplace"))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        if self.writes.told:
            self.writes.ended()

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):  # the record itself is bad (its arguments), not the file
            super().handleError(record)
            return
        self.writes.failed(error, 1)
        to_stderr(lambda: self.format(record))
