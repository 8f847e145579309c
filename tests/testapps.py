"""WSGI apps the integration tests serve. Each is wrapped in wsgiref's PEP 3333 validator."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import os
import sys
import threading
import time
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qs
from wsgiref.validate import validator

VERSION_FILE = os.environ.get("TESTAPP_VERSION_FILE", "")
# Read once at import: a reload must re-import the module to see a new version.
VERSION = Path(VERSION_FILE).read_text().strip() if VERSION_FILE else "0"
# The process that imported this module: the supervisor under --preload, else each worker.
LOADED_BY = os.getpid()


def _respond(start_response, body: bytes, status: str = "200 OK", ctype: str = "application/json"):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def _echo(environ, start_response):
    """The request as the app saw it: the fields the differential tests compare."""
    # The validator allows read(n) only; wsgi.input_terminated lets us read to the end.
    body = b"".join(iter(lambda: environ["wsgi.input"].read(65536), b""))
    headers = {k: v for k, v in environ.items() if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")}
    seen = {
        "method": environ["REQUEST_METHOD"],
        "script_name": environ["SCRIPT_NAME"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "protocol": environ["SERVER_PROTOCOL"],
        "scheme": environ["wsgi.url_scheme"],
        "headers": headers,
        "body": body.decode("latin-1"),
    }
    return _respond(start_response, json.dumps(seen, sort_keys=True).encode())


def _digest(environ, start_response):
    """The request body as the app read it: by lines (?lines: iteration), else by read(1000) (the validator
    allows read(n) alone); its length, SHA-256 and number of pieces, and CONTENT_LENGTH."""
    stream = environ["wsgi.input"]
    pieces = list(stream) if "lines" in environ["QUERY_STRING"] else list(iter(lambda: stream.read(1000), b""))
    body = b"".join(pieces)
    info = {"length": len(body), "sha256": hashlib.sha256(body).hexdigest(), "pieces": len(pieces),
            "content_length": environ.get("CONTENT_LENGTH", "")}
    return _respond(start_response, json.dumps(info).encode())


def _pid(environ, start_response):
    info = {"pid": os.getpid(), "loaded_by": LOADED_BY, "version": VERSION, "hops": environ.get("sockact.hops"),
            "conn": environ.get("sockact.conn_id"), "listener": environ.get("sockact.listener"),
            "multithread": environ["wsgi.multithread"],
            "inherited": sorted(k for k in os.environ if k.startswith(("LISTEN_", "NOTIFY_", "WATCHDOG_")))}
    return _respond(start_response, json.dumps(info).encode())


def pause(query: dict[str, list[str]], seconds: float) -> None:
    """Sleep ``seconds``; with ``until=PATH`` in ``query``, return as soon as that file exists (a
    test's release), after ``seconds`` at most."""
    if "until" in query:
        release, deadline = Path(query["until"][0]), time.monotonic() + seconds
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    else:
        time.sleep(seconds)


def _slow(environ, start_response):
    query = parse_qs(environ["QUERY_STRING"])
    seconds = float(query.get("s", ["1"])[0])
    if "started" in query:  # a file to create once the request is in the app, for tests to wait on
        Path(query["started"][0]).touch()
    pause(query, seconds)
    return _respond(start_response, json.dumps({"pid": os.getpid(), "slept": seconds,
                                                "thread": threading.current_thread().name,
                                                "policy": os.sched_getscheduler(0)}).encode())


def _slow_switching(environ, start_response):
    """_slow, in a worker whose threads take turns as often as the interpreter lets them (a switch interval of a
    microsecond, not 5 ms): a race between its threads that the usual interval makes rare shows up in seconds."""
    sys.setswitchinterval(1e-6)
    return _slow(environ, start_response)


def _hang(environ, start_response):
    if environ["PATH_INFO"].startswith("/hang"):
        while True:  # a bug: an endless loop, for --timeout
            pass
    if environ["PATH_INFO"].startswith("/slow"):
        return _slow(environ, start_response)
    return _pid(environ, start_response)


def _whoami(environ, start_response):
    """Who the app believes the client is: what proxies and PROXY headers are meant to set."""
    keys = ("REMOTE_ADDR", "REMOTE_PORT", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "HTTP_X_FORWARDED_FOR")
    info = {key: environ.get(key) for key in keys}
    info.update(scheme=environ["wsgi.url_scheme"], pid=os.getpid(), hops=environ.get("sockact.hops"))
    return _respond(start_response, json.dumps(info).encode())


def _stream(environ, start_response):
    """The first part of the body at once (after ?pad= bytes), the rest after ?s= seconds (a worker killed
    meanwhile)."""
    query = parse_qs(environ["QUERY_STRING"])
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"p" * int(query.get("pad", ["0"])[0]) + b"first part\n"
    if "started" in query:  # the first part has been written: for tests to wait on
        Path(query["started"][0]).touch()
    time.sleep(float(query.get("s", ["1"])[0]))
    yield b"second part\n"


def _big(environ, start_response):
    """?mb= MiB of body (default 1), or ?bytes= bytes, in 64 KiB pieces (more than socket buffers hold), or with
    ?one=1 in one piece, as a framework's response body usually is."""
    query = parse_qs(environ["QUERY_STRING"])
    size = int(query["bytes"][0]) if "bytes" in query else int(query.get("mb", ["1"])[0]) << 20
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    if "one" in query:
        return [b"x" * size]
    piece = b"x" * 65536
    if "pause" not in query:
        return (piece[:size - at] for at in range(0, size, 65536))
    return _paused(piece, size, int(query["at"][0]), float(query["pause"][0]))


def _paused(piece: bytes, size: int, pause_at: int, seconds: float):
    """_big's pieces, with a pause of ``seconds`` once ``pause_at`` bytes are written: a body written in parts."""
    for at in range(0, size, len(piece)):
        if at >= pause_at > at - len(piece):
            time.sleep(seconds)
        yield piece[:size - at]


def _boom(environ, start_response):
    raise RuntimeError("a bug in the app")


class OwnBaseException(BaseException):
    """As a library may define one (gevent's GreenletExit): not an Exception."""


def _exits(environ, start_response):
    """``/exit``: sys.exit(3), as an app's own code may call it; ``/interrupt``: KeyboardInterrupt;
    ``/cancelled`` and ``/own``: BaseExceptions of a library's; ``/die``: os._exit(1), ``/segfault``: a
    read of address 0 (the worker crashes); ``/slow``: _slow; any other path: _pid."""
    if environ["PATH_INFO"] == "/exit":
        sys.exit(3)
    if environ["PATH_INFO"] == "/interrupt":
        raise KeyboardInterrupt
    if environ["PATH_INFO"] == "/cancelled":  # as asyncio.run() in a view raises it, a BaseException
        raise asyncio.CancelledError
    if environ["PATH_INFO"] == "/own":
        raise OwnBaseException("a library's own BaseException")
    if environ["PATH_INFO"] == "/die":  # a crash that runs no Python cleanup: the worker is gone at once
        os._exit(1)
    if environ["PATH_INFO"] == "/segfault":  # a crash in C code: killed by SIGSEGV
        import ctypes

        ctypes.string_at(0)
    if environ["PATH_INFO"] == "/slow":
        return _slow(environ, start_response)
    return _pid(environ, start_response)


def _errlog(environ, start_response):
    """Like Flask: the app catches its own exception and logs it, traceback included, to wsgi.errors."""
    logger = logging.getLogger("testapps.errlog")
    logger.propagate = False
    logger.handlers[:] = [logging.StreamHandler(environ["wsgi.errors"])]
    try:
        raise ValueError("a handled bug")
    except ValueError:
        logger.exception("Exception on %s [%s]", environ["PATH_INFO"], environ["REQUEST_METHOD"])
    return _respond(start_response, b"oops", "500 Internal Server Error", "text/plain")


_LEAKED: list[bytearray] = []
# Written at import: with --preload, pages every worker shares with the supervisor (RSS, not USS).
_SHARED = bytearray(b"\1") * (int(os.environ.get("TESTAPP_SHARED_MB", "0")) << 20)


def _leak(environ, start_response):
    """``/leak?mb=N`` keeps N MiB more for good (a leak, for max_worker_memory), in any worker or, with
    ``pid=``, in that one only; ``/gc``: its full garbage collections so far; any other path: _pid."""
    query = parse_qs(environ["QUERY_STRING"])
    if environ["PATH_INFO"] == "/leak" and int(query.get("pid", [os.getpid()])[0]) == os.getpid():
        _LEAKED.append(bytearray(b"\1") * (int(query["mb"][0]) << 20))
    if environ["PATH_INFO"] == "/gc":  # the collections of the oldest generation so far (memory pressure)
        body = {"pid": os.getpid(), "collections": gc.get_stats()[2]["collections"]}
        return _respond(start_response, json.dumps(body).encode())
    return _pid(environ, start_response)


echo = validator(_echo)
digest = validator(_digest)
echo_bare = _echo  # for a server whose environ the validator would refuse (see test_differential.py)
pid = validator(_pid)
slow = validator(_slow)
slow_switching = validator(_slow_switching)
hang = validator(_hang)
whoami = validator(_whoami)
stream = validator(_stream)
big = validator(_big)
boom = validator(_boom)
exits = validator(_exits)
errlog = validator(_errlog)
leak = validator(_leak)


def short_body(environ, start_response):
    """Promises 100 body bytes and sends 9: as one item (``/whole``), or as two (anything else); ``/past`` and
    ``/past-pieces`` promise 4 and give 9, as one item or two."""
    if environ["PATH_INFO"].startswith("/past"):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return [b"only this"] if environ["PATH_INFO"] == "/past" else iter([b"only", b" this"])
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
    if environ["PATH_INFO"] == "/whole":
        return [b"only this"]
    return iter([b"only", b" this"])


class _CloseRaises:
    """A body of two pieces (so sent chunked) whose close() raises once it is iterated."""

    def __iter__(self):
        yield b"whole "
        yield b"body"

    def close(self):
        raise RuntimeError("close() failed")


_kept_write: list = []  # the write() of /keep-write's response, which the app keeps past it


def misbehaves(environ, start_response):
    """What an app does wrong on the response side, by path. ``/close-raises``: a body whose close() raises
    after it was sent whole. ``/keep-write``: keeps its response's write() past the response;
    ``/kept-write``: calls that one in its own response, and answers what it raised. Else: ``ok``."""
    path = environ["PATH_INFO"]
    if path == "/close-raises":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _CloseRaises()
    if path == "/keep-write":
        _kept_write[:] = [start_response("200 OK", [("Content-Type", "text/plain")])]
        return [b"first"]
    if path == "/kept-write":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            _kept_write[0](b"INJECTED")
        except Exception as exc:
            return [f"{type(exc).__name__}: {exc}".encode()]
        return [b"written"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def own_date_and_server(environ, start_response):
    """Gives its own Date and Server (``/date``: only Date; ``/server``: only Server)."""
    mine = {"/date": [("Date", "Mon, 01 Jan 2024 00:00:00 GMT")], "/server": [("Server", "myapp/1")]}
    fields = mine.get(environ["PATH_INFO"], mine["/date"] + mine["/server"])
    start_response("200 OK", [("Content-Type", "text/plain"), *fields])
    return [b"ok"]


def status_from_path(environ, start_response):
    """Answers with the status its path names (``/101``: "101 Switching Protocols"); "/" with 200. With the
    query "bare", the status is its code alone ("200"); with "length", the answer names its Content-Length."""
    code = environ["PATH_INFO"].strip("/") or "200"
    phrase = HTTPStatus(int(code)).phrase if int(code) in HTTPStatus._value2member_map_ else "Unknown"
    query = environ.get("QUERY_STRING", "")
    headers = [("Content-Type", "text/plain")] + ([("Content-Length", "2")] if query == "length" else [])
    start_response(code if query == "bare" else f"{code} {phrase}", headers)
    return [b"ok"]
