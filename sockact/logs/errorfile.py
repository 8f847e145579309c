"""error_logfile: the supervisor's and workers' log as a file of timestamped lines.

Moved away by logrotate, it is opened anew at the next line (WatchedFileHandler). A line it cannot
write (a full disk) goes to stderr, the journal under systemd, and the failure is said once, and its
end: a disk that keeps filling and freeing says the pair at most once a minute (outage.py).
"""

from __future__ import annotations

import logging
import sys
from logging.handlers import WatchedFileHandler

from sockact.logs.journal import to_stderr
from sockact.logs.outage import Outage


class ErrorFileHandler(WatchedFileHandler):
    """error_logfile: a line it cannot write (a full disk) goes to stderr, and the failure is said once,
    and again once it writes again (a pair a minute at most); logging's own handleError printed a traceback
    per record."""

    def __init__(self, filename: str) -> None:
        super().__init__(filename)
        self.outage = Outage("cannot write (%s); its lines go to stderr until it can", "writes again",
                             lambda _, text: to_stderr(lambda: f"error_logfile {self.baseFilename}: {text}"),
                             lambda count: f"{count} line{'' if count == 1 else 's'} went to stderr meanwhile")
        self._failed = False  # this record's write failed

    def emit(self, record: logging.LogRecord) -> None:
        self._failed = False
        super().emit(record)  # calls handleError on failure
        if self.outage.told and not self._failed:
            self.outage.ended()

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):  # the record itself is bad (its arguments), not the file
            super().handleError(record)
            return
        self._failed = True
        self.outage.failed(error, 1)
        to_stderr(lambda: self.format(record))
