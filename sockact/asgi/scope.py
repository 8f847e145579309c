"""ASGI scopes built from the HTTP engine's request heads. No I/O here.

``path`` is the whole request path, percent-decoded as UTF-8 (the prefix included, as
uvicorn and Starlette expect since ASGI spec 2.4 / Starlette 0.33); ``root_path`` is the
mount prefix when the path lies under it, as SCRIPT_NAME is for WSGI.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from ..http.events import Request

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}


def conn_scope(peer: tuple[Any, ...] | str | None, server: tuple[str, int] | None, root_path: str,
               state: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The keys that are the same for every request on one connection."""
    client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
    return {"asgi": ASGI_VERSION, "client": client, "server": server, "root_path": root_path,
            "state": state, "extensions": {"sockact": extra, "http.response.pathsend": {}}}


def request_scope(base: dict[str, Any], request: Request, websocket: bool = False) -> dict[str, Any]:
    """The scope of one request (``websocket``: of the WebSocket it opens)."""
    scope = dict(base)
    raw = request.path or b"/"
    path = unquote(raw.decode("latin-1"))
    root = base["root_path"]
    if root and not (path.startswith(root) and path[len(root):len(root) + 1] in ("", "/")):
        scope["root_path"] = ""  # outside the mount: the app sees it unprefixed, as SCRIPT_NAME does
    scope["state"] = dict(base["state"])  # each request gets its own shallow copy (ASGI lifespan spec)
    scope["type"] = "websocket" if websocket else "http"
    scope["http_version"] = request.version
    scope["scheme"] = "ws" if websocket else "http"
    scope["path"] = path
    scope["raw_path"] = raw
    scope["query_string"] = request.query
    scope["headers"] = [(name.lower(), value) for name, value in request.headers]
    if websocket:
        scope["subprotocols"] = [p.strip().decode("latin-1") for name, value in request.headers
                                 if name == b"SEC-WEBSOCKET-PROTOCOL" for p in value.split(b",") if p.strip()]
    else:
        scope["method"] = request.method.decode("ascii")
    return scope
