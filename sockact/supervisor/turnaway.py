"""Turning clients away when the app cannot be served: a 503 to each, then close.

When the app fails to load, the supervisor halts (and a start that fails earlier, on a bad
setting, exits). A client still waiting in a listener's
backlog would keep a systemd-passed listener readable after the exit, and systemd would
start the service again at once for it: one connection, a start loop. So before it exits
the supervisor accepts what is waiting, answers each client ``503`` and closes; the next
start then costs a new connection. All of it is non-blocking and bounded: so many
connections at most, and LINGER_SECONDS in all for the clients to read the answer.

Three ways lead here, each with its one call: the supervisor's halt (stopping.py), and a start that
fails before the supervisor runs, on a setting or on an import, with ``--preload`` or without
(``turn_away_at_start``, from the command line's start).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from collections.abc import Iterable, MutableMapping, Sequence

from sockact.errors import SockactError
from sockact.http.dates import http_date
from sockact.http.engine import error_message
from sockact.http.limits import LINGER_BYTES, LINGER_SECONDS
from sockact.systemd.activation import Listener, from_systemd

log = logging.getLogger("sockact.supervisor")

MOST = 4096  # connections answered at most in one turn-away; the rest see the socket closed
BATCH = 256  # fds held at once: accepted, answered, closed, then the next batch
RETRY_AFTER = 10  # seconds; a client that retries sooner starts the broken service once more
_POLL_IN = select.POLLIN | select.POLLHUP | select.POLLERR


def app_failed() -> bytes:
    """The answer for a client of an app that failed to load."""
    return error_message(503, http_date(), headers=f"Retry-After: {RETRY_AFTER}\r\n",
                         detail="the app failed to load; the reason is in sockact's log (the journal)")


def start_failed() -> bytes:
    """The answer for a client of a service that cannot start (a bad setting, say)."""
    return error_message(503, http_date(), headers=f"Retry-After: {RETRY_AFTER}\r\n",
                         detail="sockact cannot start; the reason is in sockact's log (the journal)")


def turn_away_at_start(taken: Sequence[Listener], response: bytes, environ: MutableMapping[str, str]) -> int:
    """A start that fails (a bad setting, a hook or a preloaded app that does not import...): answer
    each client waiting in a listener's backlog with ``response`` before the exit. Left in a passed
    socket's backlog, it would make systemd start the failing service again at once, and again: a
    start loop for as long as the client waits. ``taken``: the listeners, if they were taken already;
    without them, those systemd passed (``environ``'s LISTEN_FDS). Returns how many were answered."""
    listeners = list(taken)
    if not listeners and "LISTEN_FDS" in environ:
        with contextlib.suppress(SockactError, ImportError):  # none to take: nothing to answer
            listeners = from_systemd(environ) or []
    return turn_away([], [lst.sock for lst in listeners], response)


def turn_away(fds: Iterable[int], listeners: Iterable[socket.socket], response: bytes,
              seconds: float = LINGER_SECONDS) -> int:
    """Send ``response`` to each connection in ``fds`` (they are ours to close) and to each one
    waiting in a listener's backlog, then close them; returns how many were answered."""
    deadline = time.monotonic() + seconds
    batch = [socket.socket(fileno=fd) for fd in fds]
    answered = 0
    for listener in listeners:
        more = True
        while more and answered + len(batch) < MOST:
            accepted, more = _accept(listener, min(BATCH, MOST - answered) - len(batch))
            batch += accepted
            if len(batch) >= BATCH:
                answered += _answer(batch, response, deadline)
                batch = []
    answered += _answer(batch, response, deadline)
    if answered:
        log.warning("answered %d waiting connections: %s", answered, response.split(b"\r\n", 1)[0].decode())
    return answered


def _accept(listener: socket.socket, most: int) -> tuple[list[socket.socket], bool]:
    """Up to ``most`` connections from the backlog; and whether more may be waiting."""
    conns: list[socket.socket] = []
    while len(conns) < most:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return conns, False
        except OSError:
            # Out of fds, or the client gave up: whoever is still waiting sees the socket closed.
            return conns, False
        conns.append(conn)
    return conns, True


def _answer(conns: list[socket.socket], response: bytes, deadline: float) -> int:
    """Answer and close ``conns``; wait until ``deadline`` at most for each client to close first."""
    for conn in conns:
        conn.setblocking(False)
        with contextlib.suppress(OSError):
            # A fresh connection's send buffer takes the whole answer; a short send is the client's loss.
            conn.send(response)
            conn.shutdown(socket.SHUT_WR)
    _linger(conns, deadline)
    for conn in conns:
        conn.close()
    return len(conns)


def _linger(conns: list[socket.socket], deadline: float) -> None:
    """Read and drop what the clients send until each has closed, or ``deadline``.

    Closing a socket with unread input makes the kernel send a reset, which can destroy the
    answer in the client's receive buffer before it reads it (see http.limits: lingering close).
    """
    poller = select.poll()
    by_fd = {conn.fileno(): conn for conn in conns}
    dropped = dict.fromkeys(by_fd, 0)
    for fd in by_fd:
        poller.register(fd, _POLL_IN)
    while dropped and (left := deadline - time.monotonic()) > 0:
        for fd, _ in poller.poll(left * 1000):
            try:
                data = by_fd[fd].recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            dropped[fd] += len(data)
            if not data or dropped[fd] >= LINGER_BYTES:
                poller.unregister(fd)  # the client has closed (or will not stop): done with it
                del dropped[fd]
