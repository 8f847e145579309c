"""sockact's HTTP/1.1 layer: a sans-I/O engine over httptools, the WSGI adapter, and the loop between them.

The public API, used by the worker loop:
``serve_connection(sock, site, ...) -> Outcome`` with ``Site``, ``Limits`` and ``Outcome``.
"""

from ..errors import InvalidResponse, ProtocolError
from .engine import Connection
from .limits import Limits
from .server import HTTPConnection, Outcome, Site, Step, serve_connection

__all__ = ["Connection", "HTTPConnection", "InvalidResponse", "Limits", "Outcome", "ProtocolError", "Site", "Step",
           "serve_connection"]
