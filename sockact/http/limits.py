"""The limits a request must fit in, and the fixed sizes the HTTP layer works with.

``Limits`` is per listener (built from the settings); ``SpoolBudget`` per worker; the module
constants are fixed, each with the precedent it follows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Per-listener request limits. Each names the status a request over it gets."""

    request_line: int = 8190  # -> 414; gunicorn's limit_request_line default
    header_fields: int = 100  # -> 431; gunicorn's limit_request_fields default
    header_field_size: int = 8190  # -> 431; one field line with its CRLF, as gunicorn counts
    head: int = 65536  # -> 431; request line and all fields together
    body: int = 0  # -> 413; 0 = unlimited
    # -> 400 for an HTTP/1.1 request without a Host field: RFC 9112 3.2's MUST, as h11 does. Every listener
    # asks for it (worker/shell.py, the metrics listener); the engine alone serves such a request, as gunicorn
    # and uvicorn do, so that corpora and tests written for them replay as they are.
    host_required: bool = False


# Longest chunk-size line (size and extensions). Go's net/http uses the same bound
# (maxLineLength in net/http/internal/chunked.go); extensions are never that long.
CHUNK_LINE_MAX = 4096

# Hex digits of a chunk size: 16 fill 64 bits, which is where llhttp overflows.
CHUNK_SIZE_DIGITS = 16

# An unread request body up to this size is read and dropped after the response,
# so the connection stays usable; a larger one closes it. gunicorn drains without a
# bound, h11 never drains; a bound keeps a worker from reading a large upload for nothing.
DRAIN_LIMIT = 64 * 1024

# A request body a worker reads before its app sees it (a WSGI body_buffer or body_spool body) or as an
# ASGI app asks (receive()) must be whole within timeout of its head, and that deadline moves on a second
# for each this many bytes received (Apache's mod_reqtimeout MinRate): a large upload at a real client's
# pace is never cut, a trickle is.
BODY_MIN_RATE = 1024

# A spooled request body (body_spool) is read back for wsgi.input this many bytes at a time.
SPOOL_READ = 64 * 1024

# A WSGI response's bytes the kernel has no room for, once some of the response has gone out, wait in the
# connection's outbox, which the worker's loop writes as the client takes them: the app thread is free for
# the next request, as an ASGI task is. Up to OUTBOX_MAX bytes a connection, and OUTBOX_TOTAL for all of a
# worker's at once; past either, the app thread's write waits for room as before (send_timeout). A client
# that reads slowly then costs a worker memory, not an app thread; one that reads nothing is let go after
# send_timeout, and one that trickles once its pace is below BODY_MIN_RATE.
OUTBOX_MAX = 1024 * 1024
OUTBOX_TOTAL = 32 * 1024 * 1024


class SpoolFull(OSError):
    """A spooled body would pass its worker's body_spool_total: answered as a file that cannot be written."""


class SpoolBudget:
    """The bytes a worker's spooled request bodies may hold at once (body_spool_total; 0: no bound), shared by
    its listeners; and, another of them, its WSGI outboxes (OUTBOX_TOTAL). A body takes its share on the loop's
    thread; it is given back when its file is closed, on an app thread (the call is over) or the loop's (the
    connection is closed): hence the lock, taken only for spooled bodies and outboxes."""

    __slots__ = ("lock", "total", "used")

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.lock = threading.Lock()

    def take(self, size: int) -> None:
        """Take ``size`` more bytes, or raise SpoolFull, taking nothing, if they would pass the bound."""
        if not self.fits(size):
            raise SpoolFull(f"this worker's spooled bodies hold {self.used} bytes and this one needs {size} "
                            f"more, past body_spool_total ({self.total}): raise it for more uploads at once")

    def fits(self, size: int) -> bool:
        """Take ``size`` more bytes if they are within the bound: whether they were taken."""
        with self.lock:
            if self.total and self.used + size > self.total:
                return False
            self.used += size
            return True

    def give(self, size: int) -> None:
        with self.lock:
            self.used -= size

# Bytes asked of one recv(). 64 KiB matches the default TCP receive window on loopback
# and uvicorn's read size; a typical request head arrives in one call.
RECV_SIZE = 64 * 1024

# Before closing a connection whose client may still be sending (an error answered
# before its body was read), read and drop what arrives, so the kernel does not reset
# the connection before the client reads the answer. nginx calls this lingering close
# (lingering_time 30 s, lingering_timeout 5 s); Apache waits 2 s per read. Ours are
# short, since a worker waits: at most this long in all, this long for each read
# (a client that has stopped sending is not waited for), and this many bytes.
LINGER_SECONDS = 1.0
LINGER_IDLE = 0.2
LINGER_BYTES = 256 * 1024

# A response body the app returns in one piece is sent with its head in one
# sendall() when it is at most this large; a larger one goes in its own call,
# which avoids copying it.
COALESCE_MAX = 64 * 1024
