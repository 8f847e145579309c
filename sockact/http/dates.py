"""The Date field of a response, for every part of sockact that answers a client.

The WSGI and ASGI runners, and the supervisor's own answers (a 502/504 to a dead worker's
clients, a 503 while it turns clients away, the metrics listener), all date their responses
here, so the supervisor side needs nothing of the WSGI server for it.
"""

from __future__ import annotations

from collections.abc import Callable
from wsgiref.handlers import format_date_time  # IMF-fixdate, lighter to import than email.utils

from sockact.logs.access import PerSecond

# The Date field value (RFC 9110 IMF-fixdate), formatted once a second: http_date() reads the clock itself
# (one call a response, not two). DATE.last is what it read last, for a caller that reads it inline.
DATE: PerSecond[str] = PerSecond(format_date_time)
http_date: Callable[..., str] = DATE.at
