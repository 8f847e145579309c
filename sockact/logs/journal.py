"""Logging setup: journald with structured fields when stderr goes to the journal, else stderr lines.

Contract:
- ``setup_logging()`` runs once in the supervisor, before any fork; workers inherit the handler.
- Under journald every record carries PRIORITY, SYSLOG_IDENTIFIER=sockact, SOCKACT_WORKER_PID and
  SOCKACT_LISTENER, plus every upper-case field a caller passed in ``extra`` (access records pass
  SOCKACT_CONN_ID, REMOTE_ADDR, HTTP_METHOD, ...). Lifecycle events also carry a MESSAGE_ID, which
  the catalog (``EVENTS`` below, rendered by ``catalog()``) explains for ``journalctl -x``.
- Logging never raises into the caller: a record that cannot be sent to the journal is written to
  stderr instead, and one that cannot be written anywhere is dropped.

``python -m sockact.logs.journal --catalog`` prints the catalog that ships as
packaging/systemd/sockact.catalog.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sockact.errors import ConfigError

IDENTIFIER = "sockact"
LOGGER_NAME = "sockact"


class Event(NamedTuple):
    """One lifecycle event: its journald MESSAGE_ID and its catalog entry."""

    message_id: str
    subject: str
    body: str


# The one source of truth for lifecycle events. MESSAGE_IDS and the catalog are derived from it.
# An id never changes once released: operators filter on it (journalctl MESSAGE_ID=...).
EVENTS: dict[str, Event] = {
    "ready": Event(
        "5d3b9f3a0c7e4d52a6f1d2c4b8e90a11",
        "sockact is ready and serving",
        "The sockact supervisor has started its workers on the sockets passed to it and told the\n"
        "service manager READY=1. From now on connections are accepted and handed to workers.\n"
        "\n"
        "The unit's status line (systemctl status) shows the number of workers, how many app calls\n"
        "are running (busy), how many workers are stalled, the connections parked between keep-alive\n"
        "requests and the requests served.",
    ),
    "reload": Event(
        "7a1c2e9b44f04a8fb1d3e6c5a2f70b22",
        "sockact is reloading",
        "The sockact supervisor received SIGHUP (systemctl reload) and reported RELOADING=1.\n"
        "It starts a new generation of workers, which import the application afresh; each new\n"
        "worker that is ready retires an old one once that one has finished its request. The\n"
        "listening sockets stay open throughout, so no connection is refused.\n"
        "\n"
        "When the new generation serves, READY=1 is sent again. The configuration file is read\n"
        "again for the new generation: if it has an error, no new worker is started; if the new\n"
        "workers cannot import the app, they are stopped. Either way the old generation keeps\n"
        "serving, and systemctl reload (which runs sockact reload) fails with the reason.\n"
        "Listening addresses, logging and preloaded apps change only with a restart of the service.",
    ),
    "stop": Event(
        "c4e8a1b7d9024f35a0b6e3d1f8c27c33",
        "sockact is stopping",
        "The sockact supervisor received SIGTERM and reported STOPPING=1. It stops handing out new\n"
        "connections and lets in-flight requests finish within graceful_timeout (extending the\n"
        "service manager's stop timeout while requests still make progress), then exits.\n"
        "\n"
        "Connections that arrive meanwhile wait in the socket's backlog; with socket activation\n"
        "they start the service again.",
    ),
    "worker_spawned": Event(
        "1f6d3a8c5b9e4e07b2a4c6d8e0f13d44",
        "A sockact worker was started",
        "The sockact supervisor forked a worker process (its pid is in SOCKACT_WORKER_PID). Each\n"
        "worker holds many connections and serves `threads` requests at a time, up to\n"
        "`max_threads` if set (an ASGI app, many), so workers times that bounds the WSGI\n"
        "requests served concurrently.",
    ),
    "worker_exited": Event(
        "9b2e4c6a8d0f4f19a3b5c7e9d1f24e55",
        "A sockact worker exited",
        "A worker process of sockact (SOCKACT_WORKER_PID) exited. Workers exit on purpose when\n"
        "they are recycled (max_requests), at reload and at stop; the supervisor then replaces\n"
        "them as needed.\n"
        "\n"
        "An unexpected exit, such as a crash of the application or of a C extension, is logged\n"
        "at a higher priority. If workers keep failing to boot (the application cannot be\n"
        "imported), the supervisor stops instead of restarting them forever: see the messages\n"
        "logged before this one.",
    ),
    "worker_timeout": Event(
        "e3a5c7b9d1f34a2bb4c6d8e0f2a35f66",
        "A sockact worker was killed for exceeding its timeout",
        "A worker (SOCKACT_WORKER_PID) spent longer than the configured timeout on one request\n"
        "without finishing it. The supervisor sent it SIGABRT, which makes it log the Python\n"
        "stack it was stuck in, then SIGKILL, and started a replacement. The request it was\n"
        "serving is named in this message; its client got a 504 Gateway Timeout, or, if its\n"
        "response had begun, saw the connection close.\n"
        "\n"
        "If the request legitimately takes this long, raise the timeout setting\n"
        "(SOCKACT_TIMEOUT= in a drop-in, or 'timeout' in the configuration file). Otherwise look\n"
        "for the endless loop or blocking call in the stack logged just before this message.",
    ),
    "watchdog_unhealthy": Event(
        "2c4e6a8b0d1f4c3db5e7f9a1c3e46a77",
        "sockact stopped its watchdog pings",
        "The sockact supervisor is not healthy, so it no longer sends WATCHDOG=1 to the service\n"
        "manager: a worker has been in one call, or its loop has stood still, for longer than\n"
        "the timeout setting; or workers keep crashing soon after they start and none serves\n"
        "while the next one's start waits; or the supervisor's own loop has stopped turning.\n"
        "\n"
        "If the condition does not clear before WatchdogSec= runs out, systemd kills the service\n"
        "and, with Restart=on-failure, starts it again; the listening socket stays open, so\n"
        "clients wait rather than being refused.",
    ),
}

# Lifecycle events: name -> journald MESSAGE_ID (documented in packaging/systemd/sockact.catalog).
MESSAGE_IDS: dict[str, str] = {name: event.message_id for name, event in EVENTS.items()}

# syslog priorities (sd-daemon.h); a level between two named ones takes the more severe.
_PRIORITIES: tuple[tuple[int, int], ...] = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)
_DEBUG_PRIORITY = 7

# Journal field names: upper-case letters, digits and underscores, not starting with an
# underscore (those are trusted fields that journald adds itself) and at most 64 bytes.
_FIELD_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")

# Fields the handler sets itself; a caller's ``extra`` cannot override them.
_OWN_FIELDS = frozenset({"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "SYSLOG_PID", "CODE_FILE",
                         "CODE_LINE", "CODE_FUNC", "LOGGER", "EXCEPTION_TEXT"})

STDERR_FORMAT = "[%(process)d] %(levelname)s %(name)s: %(message)s"


def priority(levelno: int) -> int:
    """The syslog priority for a logging level."""
    for threshold, prio in _PRIORITIES:
        if levelno >= threshold:
            return prio
    return _DEBUG_PRIORITY


def journal_fields(record: logging.LogRecord, message: str) -> list[str | bytes]:
    """The journal fields of one record, as ``KEY=value`` items in a stable order.

    Values are sent as text, except bytes, which go to the journal as they are.
    """
    fields: dict[str, Any] = {
        "MESSAGE": message,
        "PRIORITY": priority(record.levelno),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "SOCKACT_WORKER_PID": record.process,
        "SOCKACT_LISTENER": "",
        "LOGGER": record.name,
        "CODE_FILE": record.pathname,
        "CODE_LINE": record.lineno,
        "CODE_FUNC": record.funcName,
    }
    for key, value in record.__dict__.items():
        if value is not None and key not in _OWN_FIELDS and _FIELD_RE.match(key):
            fields[key] = value
    if record.exc_text:
        fields["EXCEPTION_TEXT"] = record.exc_text
    return [key.encode() + b"=" + value if isinstance(value, bytes) else f"{key}={value}"
            for key, value in fields.items()]


def _format_with_exception(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The message, followed by the traceback and stack if the record has them."""
    message = record.getMessage()
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        message = f"{message}\n{record.exc_text}"
    if record.stack_info:
        message = f"{message}\n{formatter.formatStack(record.stack_info)}"
    return message


class JournalHandler(logging.Handler):
    """Send each record to journald with sockact's structured fields.

    ``sendv`` is systemd.journal.sendv; tests pass a recorder. It is safe across fork():
    libsystemd sends each record as one datagram on a socket the child inherits.
    """

    def __init__(self, sendv: Callable[..., Any]) -> None:
        super().__init__()
        self.sendv = sendv

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = _format_with_exception(self.formatter or logging.Formatter(), record)
            self.sendv(*journal_fields(record, message))
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """Write the record to stderr instead; never raise.

        logging's own handleError prints a traceback per failure, which for a server would turn
        one broken journal socket into a traceback per request.
        """
        to_stderr(lambda: f"[{record.process}] {record.levelname} {record.name}: {record.getMessage()}")


def to_stderr(line: Callable[[], str]) -> None:
    """The line ``line()`` makes, where a log handler could not write its own; never raises, even when
    the record cannot be formatted."""
    try:
        sys.stderr.write(line() + "\n")
        sys.stderr.flush()
    except Exception:
        pass  # stderr is gone too; there is nowhere left to report to



class StderrHandler(logging.StreamHandler):
    """Plain lines to stderr (looked up at each record, so tests may replace sys.stderr)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter(STDERR_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        pass  # writing to stderr failed; the fallback would write to stderr again


def stderr_is_journal(environ: Mapping[str, str], fd: int = 2) -> bool:
    """True if ``fd`` is the stream systemd connected to journald (JOURNAL_STREAM=DEV:INODE).

    Compared by device and inode because a child with stderr redirected elsewhere still
    inherits JOURNAL_STREAM from its parent.
    """
    value = environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


def _journal_sendv() -> Callable[..., Any] | None:
    try:
        from systemd import journal
    except ImportError:
        return None
    sendv: Callable[..., Any] = journal.sendv
    return sendv


def setup_logging(level: str, target: str, environ: Mapping[str, str], logfile: str | None = None) -> str:
    """Configure the 'sockact' loggers; returns the target chosen: 'journal', 'stderr' or 'file'.

    ``target`` is 'journal', 'stderr' or 'auto' (journal when stderr is connected to it).
    Without the systemd bindings, 'journal' falls back to stderr rather than failing to start.
    ``logfile`` (error_logfile) overrides it: '-' for stderr, else a file of timestamped lines.
    """
    sendv = None
    if logfile is None and (target == "journal" or (target == "auto" and stderr_is_journal(environ))):
        sendv = _journal_sendv()
    handler: logging.Handler
    if sendv:
        handler = JournalHandler(sendv)
    elif logfile and logfile != "-":
        from sockact.logs.errorfile import ErrorFileHandler  # here: logging to the journal never needs it

        try:
            handler = ErrorFileHandler(logfile)
        except OSError as exc:
            raise ConfigError(f"error_logfile {logfile}: {exc.strerror}") from None
        handler.setFormatter(logging.Formatter("%(asctime)s " + STDERR_FORMAT))
    else:
        handler = StderrHandler()
    logger = logging.getLogger(LOGGER_NAME)
    for old in logger.handlers:
        old.close()
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    return "journal" if sendv else "file" if logfile and logfile != "-" else "stderr"


def installed_sendv() -> Callable[..., Any] | None:
    """The journal sender of the installed 'sockact' handler, None when logs go elsewhere."""
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        if isinstance(handler, JournalHandler):
            return handler.sendv
    return None


def reopen_files() -> None:
    """SIGUSR1: the error log file opened anew if rotation moved it away (between signals, each
    line checks that by itself)."""
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        reopen = getattr(handler, "reopenIfNeeded", None)  # a WatchedFileHandler's
        if reopen is not None:
            reopen()


class ErrorStream:
    """``wsgi.errors``: what the app writes there, logged as whole records at ERROR.

    Each ``write()`` logs the complete lines it ends, and ``flush()`` the rest, as one record: a
    logging.StreamHandler (Flask's default one writes here) writes a traceback in one call, so it
    lands as one journal entry at PRIORITY=3, not one entry per line at info as raw stderr would.
    Records carry SOCKACT_CONN_ID and the request line that ``request_line()`` gives.
    """

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, logger: logging.Logger, conn_id: int, listener: str,
                 request_line: Callable[[], str] = lambda: "") -> None:
        self._log = logger
        self.pending = ""  # written, not yet logged: the end of a line still to come
        self._conn_id = conn_id
        self._listener = listener
        self._request_line = request_line  # asked only when something is logged

    def fields(self) -> dict[str, Any]:
        """The journal fields that say which connection and request a record belongs to."""
        return {"SOCKACT_CONN_ID": self._conn_id, "SOCKACT_LISTENER": self._listener,
                "HTTP_REQUEST": self._request_line()}

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.pending += text
        end = self.pending.rfind("\n")
        if end >= 0:
            whole, self.pending = self.pending[:end], self.pending[end + 1:]
            if whole:
                self._emit(whole)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        whole, self.pending = self.pending, ""
        if whole:
            self._emit(whole)

    def _emit(self, text: str) -> None:
        self._log.error("%s", text, extra=self.fields())


def lifecycle(logger: logging.Logger, event: str, message: str, *args: Any,
              level: int = logging.INFO, **fields: Any) -> None:
    """Log a lifecycle event with its MESSAGE_ID and extra upper-case journal fields."""
    extra = {"MESSAGE_ID": MESSAGE_IDS[event], **{k.upper(): v for k, v in fields.items()}}
    logger.log(level, message, *args, extra=extra)


def catalog() -> str:
    """The journal catalog for EVENTS, in the format ``journalctl --update-catalog`` reads."""
    entries = []
    for event in EVENTS.values():
        entries.append(
            f"-- {event.message_id}\n"
            f"Subject: {event.subject}\n"
            f"Defined-By: {IDENTIFIER}\n"
            f"\n"
            f"{event.body}\n"
        )
    header = ("# Journal catalog for sockact's lifecycle messages, shown by journalctl -x.\n"
              "# Generated by 'python -m sockact.logs.journal --catalog'; edit EVENTS in sockact/logs/journal.py.\n")
    return header + "\n" + "\n".join(entries)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sockact.logs.journal --catalog``: print the journal catalog."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["--catalog"]:
        sys.stderr.write("usage: python -m sockact.logs.journal --catalog\n")
        return 2
    sys.stdout.write(catalog())
    return 0


if __name__ == "__main__":
    sys.exit(main())
