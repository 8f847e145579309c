"""ASGI scopes built from the HTTP engine's request heads. No I/O here.

``path`` is the whole request path, percent-decoded as UTF-8 (the prefix included, as
uvicorn and Starlette expect since ASGI spec 2.4 / Starlette 0.33); ``root_path`` is the
mount prefix when the path lies under it, as SCRIPT_NAME is for WSGI.

Behind a trusted proxy (forwarded.py decides whom to believe, for WSGI and ASGI alike),
the forwarded fields set ``client`` (port 0 when the proxy names none, as uvicorn's
ProxyHeadersMiddleware does), ``scheme`` (ws/wss for a WebSocket), the Host header and
``server``, as they set REMOTE_ADDR, wsgi.url_scheme, HTTP_HOST and SERVER_PORT for WSGI.
The fields themselves stay in ``headers`` either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sockact.http.events import Request
from sockact.http.forwarded import FIELDS, Origin, Trust, collect, from_fields
from sockact.http.requests import decoded_path, split_host

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
_FORWARDED = frozenset(name.encode() for name in FIELDS)
_WS_SCHEMES = {"http": "ws", "https": "wss"}
# The last request's fields as the engine gave them, lower-cased, and whether a forwarded one is
# among them: a client sends the same fields on each request of its connections, so most requests
# find theirs here. Only the loop's thread builds scopes.
_LAST: list[Any] = [None, (), False]


def conn_scope(peer: tuple[Any, ...] | str | None, server: tuple[str, int] | None, root_path: str,
               state: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The keys that are the same for every request on one connection, and an HTTP request's defaults
    (``type`` and ``scheme``), so that a request's scope starts as a copy of it."""
    client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
    return {"type": "http", "asgi": ASGI_VERSION, "http_version": "1.1", "scheme": "http", "client": client,
            "server": server, "root_path": root_path, "state": state,
            "extensions": {"sockact": extra, "http.response.pathsend": {}}}


def request_scope(base: dict[str, Any], request: Request, websocket: bool = False,
                  trust: Trust | None = None) -> dict[str, Any]:
    """The scope of one request (``websocket``: of the WebSocket it opens). ``trust`` is given when
    the connection's peer is a trusted proxy, whose forwarded fields then count."""
    scope = base.copy()
    raw = request.path or b"/"
    path = decoded_path(raw).decode("utf-8", "replace")  # ASGI: percent-decoded, as UTF-8
    root = base["root_path"]
    if root and not (path.startswith(root) and path[len(root):len(root) + 1] in ("", "/")):
        scope["root_path"] = ""  # outside the mount: the app sees it unprefixed, as SCRIPT_NAME does
    own_dicts(scope, base)
    scope["http_version"] = request.version
    scope["path"] = path
    scope["raw_path"] = raw
    scope["query_string"] = request.query
    fields, last = request.headers, _LAST
    if fields == last[0]:
        headers, forwarded = list(last[1]), last[2]
    else:
        headers = [(name.lower(), value) for name, value in fields]
        forwarded = any(name in _FORWARDED for name, _ in headers)
        last[:] = fields.copy(), tuple(headers), forwarded
    scope["headers"] = headers
    if trust is not None and forwarded:
        origin = from_fields(collect(headers), trust)
        if origin is not None:
            _apply_origin(scope, origin, websocket)
    if websocket:
        scope["type"] = "websocket"
        if scope["scheme"] == "http":  # a trusted proxy's scheme is set already
            scope["scheme"] = "ws"
        scope["subprotocols"] = [p.strip().decode("latin-1") for name, value in request.headers
                                 if name == b"SEC-WEBSOCKET-PROTOCOL" for p in value.split(b",") if p.strip()]
        # A WebSocket's app may answer its handshake with an HTTP response (denial.py); a file as a body
        # (pathsend) is an HTTP response's alone.
        extensions = scope["extensions"]
        extensions.pop("http.response.pathsend", None)
        extensions["websocket.http.response"] = {}
    else:
        scope["method"] = request.method.decode("ascii")
    return scope


def own_dicts(scope: dict[str, Any], base: dict[str, Any]) -> None:
    """Give a request's ``scope`` its own shallow copies of the connection's dicts that an app or a middleware
    may add to: ``state`` (the ASGI lifespan spec asks it), ``extensions`` and each extension's dict, and
    ``asgi``. Shared, what one request added would reach the next one on the connection (``asgi``: every
    request of the worker)."""
    scope["state"] = base["state"].copy()
    scope["extensions"] = extensions = base["extensions"].copy()
    extensions["sockact"] = extensions["sockact"].copy()  # each extension's dict is the request's own as well
    extensions["http.response.pathsend"] = {}
    scope["asgi"] = base["asgi"].copy()


class Scopes:
    """The HTTP scopes of one connection's requests. The engine gives the very same Request for a head
    repeated on its connection, and a scope is a function of the request and the connection's base, so
    a repeated request's scope starts as a copy of the last one's as it was made, before any app saw
    it; its mutable values (``state``, ``extensions``, ``asgi``, ``headers``) are copied anew, as for every
    request. The request's ``line`` (``line_of``: the scoreboard's) is kept with it."""

    __slots__ = ("_line_of", "_made", "_request", "base", "line", "trust")

    def __init__(self, base: dict[str, Any], trust: Trust | None, line_of: Callable[[Request], bytes]) -> None:
        self.base = base  # the connection's keys (conn_scope); a PROXY header may still set its client
        self.trust = trust  # given when the connection's peer is a trusted proxy
        self._line_of = line_of
        self._request: Request | None = None
        self._made: dict[str, Any] | None = None  # the kept scope of ``_request``, once it came a second time
        self.line = b""  # the last request's line

    def http(self, request: Request) -> dict[str, Any]:
        """The scope of ``request``, and its ``line`` set. A new request's scope goes to the app as made, and is
        made again, to be kept, only if the request comes a second time: most new requests do not repeat
        (a client's next head differs), and a copy kept for them is made for nothing."""
        if request is not self._request:
            self.line = self._line_of(request)
            self._request = request
            self._made = None
            return request_scope(self.base, request, trust=self.trust)
        made = self._made
        if made is None:
            made = self._made = request_scope(self.base, request, trust=self.trust)
        scope = made.copy()
        own_dicts(scope, self.base)
        scope["headers"] = scope["headers"].copy()
        return scope


def _apply_origin(scope: dict[str, Any], origin: Origin, websocket: bool) -> None:
    """Put what trusted proxies told into ``scope``."""
    if origin.client is not None:
        scope["client"] = (origin.client, int(origin.client_port or 0))
    if origin.scheme is not None:
        scope["scheme"] = _WS_SCHEMES[origin.scheme] if websocket else origin.scheme
    if origin.host is None and origin.port is None:
        return
    scheme = "https" if scope["scheme"] in ("https", "wss") else "http"
    if origin.host is not None:
        host = origin.host.encode("latin-1")
        scope["headers"] = [(name, host if name == b"host" else value) for name, value in scope["headers"]]
        if not any(name == b"host" for name, _ in scope["headers"]):
            scope["headers"].append((b"host", host))
        name, port = split_host(origin.host, scheme)
    else:
        server = scope["server"]
        name, port = (server[0] if server else ""), split_host("", scheme)[1]
    scope["server"] = (name, int(origin.port or port))
