"""sockact's HTTP/1.1 layer, sans I/O: what both the WSGI and the ASGI side stand on.

The engine (``Connection``, engine.py) turns bytes into request events and responses into bytes,
within a listener's ``Limits``; rules.py and chunked.py are its framing rules; a ``Site`` (site.py)
is a listener as the workers serve it. What both interfaces read from a head (requests.py), check
in a response (responses.py) and write in the logs (logline.py) is here once. Nothing here owns a
socket: the runners in sockact/worker/ do, and sockact/wsgi/ puts PEP 3333 on top.
"""

from sockact.errors import InvalidResponse, ProtocolError
from sockact.http.engine import Connection
from sockact.http.limits import Limits
from sockact.http.site import Site

__all__ = ["Connection", "InvalidResponse", "Limits", "ProtocolError", "Site"]
