"""The one WSGI app every server in the benchmark serves, so they all run the same Python (and asgi_app,
the ASGI one, for the ASGI lineup of bench/asgi.py).

    /        hello world, 14 bytes with Content-Length (the same bytes as sockact.apps.hello)
    /json    a 4 KiB JSON document, built once at import
    /sleep   hello world after 50 ms asleep, the slow request of the mixed load
    /file    a 1 MiB file (path in $BENCH_STATIC_FILE) through environ['wsgi.file_wrapper']
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

HELLO = b"Hello, world!\n"
JSON_SIZE = 4096
SLEEP_SECONDS = 0.05
BLOCK = 65536
STATIC_FILE_ENV = "BENCH_STATIC_FILE"

StartResponse = Callable[..., Any]


def _json_body(size: int) -> bytes:
    """A JSON list of small records, padded with spaces (still valid JSON) to exactly ``size`` bytes."""
    records = []
    while len(json.dumps(records)) < size - 80:
        n = len(records)
        records.append({"id": n, "name": f"item-{n}", "ok": n % 2 == 0})
    body = json.dumps(records).encode()
    return body + b" " * (size - len(body))


JSON_BODY = _json_body(JSON_SIZE)


def _blocks(f: IO[bytes], size: int) -> Iterator[bytes]:
    """What a server without wsgi.file_wrapper gets (it is optional in PEP 3333): the file in blocks."""
    with f:
        while block := f.read(size):
            yield block


def _respond(start_response: StartResponse, body: bytes, ctype: str) -> list[bytes]:
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def _static(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = os.environ[STATIC_FILE_ENV]
    f = open(path, "rb")  # noqa: SIM115 - the server's file wrapper closes it after the response
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(os.fstat(f.fileno()).st_size))])
    wrapper = environ.get("wsgi.file_wrapper", _blocks)
    return wrapper(f, BLOCK)


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/json":
        return _respond(start_response, JSON_BODY, "application/json")
    if path == "/file":
        return _static(environ, start_response)
    if path == "/sleep":
        time.sleep(SLEEP_SECONDS)
    return _respond(start_response, HELLO, "text/plain")


_ASGI_HEAD = {"type": "http.response.start", "status": 200,
              "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(HELLO)).encode())]}
_ASGI_BODY = {"type": "http.response.body", "body": HELLO}


async def asgi_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """The ASGI lineup's app (bench/asgi.py): hello world over HTTP, and a WebSocket echo."""
    if scope["type"] == "http":
        await send(_ASGI_HEAD)
        await send(_ASGI_BODY)
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
