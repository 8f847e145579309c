"""A request head's deadline while the supervisor holds its connection. Pure: no sockets, no clock.

A connection that has not yet sent a whole head keeps header_timeout counted from when its head
deadline started (``Conn.head_started``): its accept, the moment a parked keep-alive connection
became readable, or the first byte of a head a worker handed back. While it waits in the
supervisor (queued because every worker is busy, or handed back by a stalled one), nobody reads
it, so the supervisor looks at what it holds and what waits unread in the kernel once the
deadline has passed, and this module says what follows.
"""

from __future__ import annotations

import enum

from sockact.http.proxyprotocol import ProxyProtocolError, parse

HEAD_END = b"\r\n\r\n"  # as http.engine finds the end of a head


class Verdict(enum.Enum):
    WAITS = "waits"  # a whole head waits for a worker: its deadline was met, it stays in line
    SILENT = "silent"  # nothing sent (or the client left, or no PROXY header yet): closed without a word
    LATE = "late"  # part of a head came, not the whole: 408, closed


def overdue(head_started: float, timeout: float, now: float) -> bool:
    """Whether a head deadline that runs (``head_started`` set) has passed at ``now``."""
    return head_started > 0.0 and now - head_started > timeout


def verdict(seen: bytes, preface: bool) -> Verdict:
    """What a connection past its head deadline gets. ``seen``: its bytes read and not served, then
    those waiting unread; ``preface``: a PROXY header is still to be read (its peer is a balancer:
    no whole header in time is closed without a word, as a worker does)."""
    if preface:
        try:
            header = parse(seen)
        except ProxyProtocolError:
            return Verdict.SILENT  # a worker would refuse it too, without a word
        if header is None:
            return Verdict.SILENT
        seen = seen[header[1]:]
    if not seen:
        return Verdict.SILENT
    return Verdict.WAITS if HEAD_END in seen else Verdict.LATE
