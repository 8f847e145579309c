"""error_logfile: the supervisor's and workers' log as a file of timestamped lines.

Moved away by logrotate, it is opened anew at the next line (WatchedFileHandler). A line it cannot
write (a full disk) goes to stderr, the journal under systemd, and the failure is said once.
"""

from __future__ import annotations

import logging
import sys
from logging.handlers import WatchedFileHandler

from sockact.logs.journal import to_stderr


class ErrorFileHandler(WatchedFileHandler):
    """error_logfile: a line it cannot write (a full disk) goes to stderr, and the failure is said once,
    and again once it writes again; logging's own handleError printed a traceback per record."""

    def __init__(self, filename: str) -> None:
        super().__init__(filename)
        self.failing = False  # the last write failed
        self._failed = False  # this record's write failed

    def emit(self, record: logging.LogRecord) -> None:
        self._failed = False
        super().emit(record)  # calls handleError on failure
        if self.failing and not self._failed:
            self.failing = False
            to_stderr(lambda: f"error_logfile {self.baseFilename}: writes again")

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):  # the record itself is bad (its arguments), not the file
            super().handleError(record)
            return
        self._failed = True
        if not self.failing:
            self.failing = True
            reason = error.strerror or repr(error)
            to_stderr(lambda: f"error_logfile {self.baseFilename}: cannot write ({reason}); its lines go to stderr "
                      "until it can")
        to_stderr(lambda: self.format(record))
