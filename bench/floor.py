"""The Python floor: the least a Python server does per request, to measure sockact's cost against.

    python -m bench.floor PORT [wsgi|asgi] [PROCESSES]    (serves bench.apps:app or bench.apps:asgi_app)

PROCESSES (1 by default) processes, each on its own SO_REUSEPORT socket of the port, so the kernel shares
the connections among them as sockact's supervisor shares them among its workers: a process's CPU per
request depends on how many connections it serves (how many requests one wake-up finds), so the floor
is measured with as many processes as sockact has workers.

WSGI: a `selectors` loop over httptools that builds a minimal PEP 3333 environ, calls the app and writes
its response. ASGI: an asyncio protocol (on uvloop where it is installed, as
sockact's ASGI runner) that calls the app as a task. Both answer keep-alive and close, with Date and
Server, and parse nothing httptools does not; no limits, logs, timeouts or error handling. It is a
yardstick, not a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import selectors
import socket
import sys
import time
from email.utils import formatdate
from typing import Any

import httptools

from bench.apps import app, asgi_app

BASE = {"wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": False,
        "wsgi.multiprocess": False, "wsgi.run_once": False, "SCRIPT_NAME": "", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "0", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1"}
_date = [0, b""]


def date() -> bytes:
    now = int(time.time())
    if now != _date[0]:
        _date[:] = now, formatdate(now, usegmt=True).encode()
    return _date[1]  # type: ignore[return-value]


def head(status: bytes, headers: list[tuple[bytes, bytes]], keep: bool) -> bytes:
    lines = [b"HTTP/1.1 " + status] + [k + b": " + v for k, v in headers]
    lines += [b"Date: " + date(), b"Server: floor", *(() if keep else (b"Connection: close",)), b"", b""]
    return b"\r\n".join(lines)


class WSGIConn:
    """One connection: httptools' callbacks collect the request, the last one runs the app."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.parser, self.env, self.done = sock, httptools.HttpRequestParser(self), dict(BASE), False

    def on_url(self, url: bytes) -> None:
        path, _, query = url.partition(b"?")
        self.env = env = dict(BASE)
        env["PATH_INFO"], env["QUERY_STRING"] = path.decode("latin-1"), query.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.env["HTTP_" + name.decode("latin-1").upper().replace("-", "_")] = value.decode("latin-1")

    def on_message_complete(self) -> None:
        env, keep, status = self.env, self.parser.should_keep_alive(), []
        env["REQUEST_METHOD"], env["wsgi.input"] = self.parser.get_method().decode(), io.BytesIO()
        result = app(env, lambda s, h, exc=None: status.append((s, h)))
        body = b"".join(result)
        s, h = status[0]
        self.sock.sendall(head(s.encode(), [(k.encode(), v.encode()) for k, v in h], keep) + body)
        self.done = not keep


def serve_wsgi(port: int) -> None:
    sel = selectors.DefaultSelector()
    listener = socket.create_server(("127.0.0.1", port), backlog=1024, reuse_port=True)
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                while True:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        break
                    sel.register(sock, selectors.EVENT_READ, WSGIConn(sock))
                continue
            conn = key.data
            try:
                data = conn.sock.recv(65536)
                if data:
                    conn.parser.feed_data(data)
            except Exception:  # a reset, a bad request: the connection ends, the floor goes on
                data = b""
            if not data or conn.done:
                sel.unregister(key.fileobj)
                conn.sock.close()


class ASGIConn(asyncio.Protocol):
    """One connection: httptools' callbacks collect the request, the last one starts the app's task."""

    def connection_made(self, transport: Any) -> None:
        self.transport, self.parser = transport, httptools.HttpRequestParser(self)

    def on_url(self, url: bytes) -> None:
        path, _, query = url.partition(b"?")
        self.scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http",
                      "path": path.decode("latin-1"), "raw_path": path, "query_string": query, "headers": []}

    def on_header(self, name: bytes, value: bytes) -> None:
        self.scope["headers"].append((name.lower(), value))

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.scope["method"] = self.parser.get_method().decode()
        asyncio.get_running_loop().create_task(self.call(self.scope, self.parser.should_keep_alive()))

    async def call(self, scope: dict[str, Any], keep: bool) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.head = head(b"%d OK" % message["status"], message["headers"], keep)
            elif not message.get("more_body"):
                self.transport.write(self.head + message.get("body", b""))
                if not keep:
                    self.transport.close()

        await asgi_app(scope, receive, send)


async def serve_asgi(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(ASGIConn, "127.0.0.1", port, backlog=1024,
                                                            reuse_port=True)
    await server.serve_forever()


def main(argv: list[str]) -> None:
    port, interface = int(argv[0]), argv[1] if len(argv) > 1 else "wsgi"
    for _ in range(int(argv[2]) - 1 if len(argv) > 2 else 0):
        if os.fork() == 0:
            break  # a child serves beside its parent; the harness stops the whole group
    if interface == "wsgi":
        serve_wsgi(port)
        return
    try:
        import uvloop  # as sockact's ASGI runner: uvloop's loop where it is installed
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve_asgi(port))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):  # the harness stops it with SIGINT
        main(sys.argv[1:])
