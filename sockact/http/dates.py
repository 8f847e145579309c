"""The Date field of a response, for every part of sockact that answers a client.

The WSGI and ASGI runners, and the supervisor's own answers (a 502/504 to a dead worker's
clients, a 503 while it turns clients away, the metrics listener), all date their responses
here, so the supervisor side needs nothing of the WSGI server for it.
"""

from __future__ import annotations

from wsgiref.handlers import format_date_time  # IMF-fixdate, lighter to import than email.utils

from sockact.logs.access import PerSecond

# What follows the Date in a response head the engine ends itself: its Server field and the head's end.
HEAD_END = b"\r\nServer: sockact\r\n\r\n"


def _dated(second: int) -> tuple[str, bytes]:
    text = format_date_time(second)
    return text, text.encode("latin-1") + HEAD_END


# The Date field value (RFC 9110 IMF-fixdate), and, encoded, the head's end from it on: made once a second,
# one cache for every caller. DATES.last is what it read last, for a caller that reads it inline (the
# engine's whole_response, on every response given whole).
DATES: PerSecond[tuple[str, bytes]] = PerSecond(_dated)


def http_date(when: float | None = None) -> str:
    """The Date field value of the second of ``when`` (time.time(); now, when None)."""
    return DATES.at(when)[0]
