"""sockact's HTTP/1.1 layer: a sans-I/O engine over httptools, the WSGI adapter, and the connection between them.

What the workers use: ``Site`` and ``Limits`` (a listener's settings), ``Connection`` (the engine),
and ``HTTPConnection`` with ``Step`` (one connection the WSGI runner drives, worker/wsgirunner.py).
``serve_connection`` with ``Outcome`` serves one connection start to end with blocking reads; only
tests drive it.
"""

from sockact.errors import InvalidResponse, ProtocolError
from sockact.http.engine import Connection
from sockact.http.limits import Limits
from sockact.wsgi.server import HTTPConnection, Outcome, Site, Step, serve_connection

__all__ = ["Connection", "HTTPConnection", "InvalidResponse", "Limits", "Outcome", "ProtocolError", "Site", "Step",
           "serve_connection"]
