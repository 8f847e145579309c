"""The error tree. Each exception carries its outcome: an exit code or an HTTP status.

Callers never map exception types to outcomes with isinstance chains; they read
``exc.exit_code`` (start-up errors) or ``exc.status`` (HTTP errors).
"""

from __future__ import annotations

# Exit codes: the contract between worker and supervisor, and between sockact and systemd.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad command line or configuration
EXIT_NO_LISTENERS = 3  # nothing to listen on, or a bad inherited fd, or the address is in use
WORKER_BOOT_ERROR = 4  # a worker failed before it could serve (import error, bad virtualenv)
APP_LOAD_ERROR = 5  # the app could not be imported; the supervisor halts rather than respawn forever
EXIT_INTERRUPTED = 130  # a check or a start cut short by Ctrl-C (128 + SIGINT, as a shell reports it)


# What an app's call may raise as its own failure: anything. sys.exit(), a KeyboardInterrupt, and a
# library's own BaseException (asyncio.CancelledError out of an asyncio.run() in a WSGI view, gevent's
# GreenletExit) are too: left to propagate, one ended a WSGI worker with every other client it held,
# or, in a pool thread, the thread alone, its client never answered; an ASGI call's client got no
# answer (gunicorn and uvicorn make them a 500 too). Nothing of sockact's own is raised into a call.
APP_FAILURES: tuple[type[BaseException], ...] = (BaseException,)


class SockactError(Exception):
    """A fatal start-up error; the message is one line for the operator."""

    exit_code = EXIT_FAILURE
    traceback = ""  # the lines that explain it further (an app's traceback), logged with it

    def explained(self) -> str:
        """The message followed by its traceback: one log record, one journal entry."""
        return f"{self}\n{self.traceback}" if self.traceback else str(self)


class ConfigError(SockactError):
    exit_code = EXIT_USAGE


class ListenerError(SockactError):
    exit_code = EXIT_NO_LISTENERS


class AppLoadError(SockactError):
    exit_code = APP_LOAD_ERROR

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


class Interrupted(SockactError):
    """A Ctrl-C (SIGINT) that came before the supervisor's loop takes it for a quick stop."""

    exit_code = EXIT_INTERRUPTED


class ProtocolError(Exception):
    """The client broke HTTP/1.1 or one of sockact's limits: answer ``status`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class InvalidResponse(ValueError):
    """The application called start_response (or wrote) in a way PEP 3333 forbids: a 500."""

    status = 500


class HandoffError(Exception):
    """A malformed message on a supervisor<->worker channel: the peer is not a sockact process."""
