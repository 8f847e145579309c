"""Hello world, as WSGI (app) and ASGI (asgi_app): the apps the benchmarks and the comparisons use."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

BODY = b"Hello, world!\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", list(HEADERS))
    return [BODY]


ASGI_START = {"type": "http.response.start", "status": 200,
              "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]}
ASGI_BODY = {"type": "http.response.body", "body": BODY}


async def asgi_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """The same hello world as an ASGI 3 app (no lifespan: it answers every scope the same)."""
    if scope["type"] != "http":
        return
    await send(ASGI_START)
    await send(ASGI_BODY)
