"""ASGI apps the integration tests serve (tests/integration/test_asgi.py).

Each records what it saw so the tests can check the message order the ASGI spec requires;
a few print a marker line, which the server's output shows, for what happens after the
client can no longer see it (a disconnect, a shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import sys
from urllib.parse import parse_qs

from testapps import OwnBaseException, pause


def _json(obj: object) -> bytes:
    return json.dumps(obj).encode()


async def _lifespan(scope, receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            print(f"LIFESPAN STARTUP {os.getpid()}", flush=True)
            scope["state"]["started_by"] = os.getpid()
            await send({"type": "lifespan.startup.complete"})
        else:
            print(f"LIFESPAN SHUTDOWN {os.getpid()}", flush=True)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(send, body: bytes, status: int = 200, ctype: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def echo(scope, receive, send) -> None:
    """The scope, and every message received until the body ended, as JSON."""
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    messages = []
    body = b""
    while True:
        message = await receive()
        messages.append([message["type"], len(message.get("body", b"")), message.get("more_body", False)])
        body += message.get("body", b"")
        if message["type"] != "http.request" or not message["more_body"]:
            break
    seen = {key: scope[key] for key in ("type", "http_version", "method", "scheme", "path", "root_path",
                                        "query_string", "raw_path", "client", "server")}
    seen["query_string"] = seen["query_string"].decode()
    seen["raw_path"] = seen["raw_path"].decode()
    seen["headers"] = [[k.decode(), v.decode()] for k, v in scope["headers"]]
    seen["state"] = scope["state"]
    seen["asgi"] = scope["asgi"]
    seen["pid"] = os.getpid()
    seen["hops"] = scope["extensions"]["sockact"]["sockact.hops"]
    seen["conn"] = scope["extensions"]["sockact"]["sockact.conn_id"]
    seen["messages"] = messages
    seen["body"] = body.decode("latin-1")
    await _respond(send, _json(seen))


async def stream(scope, receive, send) -> None:
    """``?n=N`` pieces of body, each sent with more_body, then an empty last one."""
    n = int(parse_qs(scope["query_string"].decode()).get("n", ["3"])[0])
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for i in range(n):
        await send({"type": "http.response.body", "body": f"piece {i}\n".encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def boom_before(scope, receive, send) -> None:
    raise RuntimeError("failed before the response")


async def boom_after(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"the start of it", "more_body": True})
    raise RuntimeError("failed in the middle of the body")


async def stops_midway(scope, receive, send) -> None:
    """Returns, without an error, in the middle of its body (more_body, and no last message)."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"the start of it", "more_body": True})


async def no_response(scope, receive, send) -> None:
    return None


async def long_poll(scope, receive, send) -> None:
    """A long-poll view with nothing to say: waits for its client to leave, then returns without a response."""
    if scope["type"] == "http":
        while (await receive())["type"] != "http.disconnect":
            pass


async def trailers(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
    await send({"type": "http.response.body", "body": b"x"})


async def watch_disconnect(scope, receive, send) -> None:
    """Reads the body; prints how much arrived when http.disconnect comes instead."""
    got = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            print(f"DISCONNECT after {got} bytes", flush=True)
            return
        got += len(message["body"])
        if not message["more_body"]:
            break
    await _respond(send, _json({"got": got}))
    message = await receive()  # the response is complete: the next message is the client's leaving
    print(f"AFTER RESPONSE {message['type']}", flush=True)


_REQUEST_PATH: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_path", default=None)


async def context(scope, receive, send) -> None:
    """Sets a context variable, as request-id middleware does, and says what it found there first:
    a request must never see one an earlier request set. ``?wait``: it awaits a turn of the loop first."""
    if scope["type"] != "http":
        return
    wait = scope["query_string"] == b"wait"
    if wait:
        await asyncio.sleep(0)
    before = _REQUEST_PATH.get()
    _REQUEST_PATH.set(scope["path"])
    if wait:
        await asyncio.sleep(0)
    await _respond(send, _json({"path": scope["path"], "before": before, "now": _REQUEST_PATH.get()}))


async def in_a_task(scope, receive, send) -> None:
    """What asyncio and anyio ask of an app's first step, before it has awaited anything: a current
    task (asyncio.timeout needs one), and an async library sniffio can name (anyio.to_thread, which
    FastAPI runs every plain ``def`` endpoint with)."""
    if scope["type"] != "http":
        return
    import anyio.to_thread
    import sniffio

    task = asyncio.current_task() is not None
    library = sniffio.current_async_library()
    async with asyncio.timeout(5):
        thread = await anyio.to_thread.run_sync(lambda: "ran")
    await _respond(send, _json({"task": task, "library": library, "thread": thread}))


async def blocking(scope, receive, send) -> None:
    """``?s=SECONDS`` of time.sleep() inside the async app: the loop is blocked meanwhile. With
    ``started=PATH``, that file is created first, for a test to wait on; with ``until=PATH``, the
    call returns as soon as that file exists (testapps.pause)."""
    query = parse_qs(scope["query_string"].decode())
    if "started" in query:
        open(query["started"][0], "w").close()
    pause(query, float(query.get("s", ["0"])[0]))  # the point: a sync call in an async view
    await _respond(send, _json({"pid": os.getpid()}))


async def answers_then_waits(scope, receive, send) -> None:
    """Its whole response (the worker's pid) first; then, with ``?until=PATH``, the call goes on until that
    file exists (a minute at most), the loop serving others meanwhile."""
    await _respond(send, _json({"pid": os.getpid()}))
    query = parse_qs(scope["query_string"].decode())
    if "until" in query:
        release = query["until"][0]
        for _ in range(6000):
            if os.path.exists(release):
                break
            await asyncio.sleep(0.01)


async def sleepy(scope, receive, send) -> None:
    """``?s=SECONDS`` of asyncio.sleep: the loop serves others meanwhile."""
    seconds = float(parse_qs(scope["query_string"].decode()).get("s", ["0"])[0])
    await asyncio.sleep(seconds)
    await _respond(send, _json({"pid": os.getpid()}))


async def startup_fails(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "the database is not there"})
        return
    await _respond(send, b"{}")


async def startup_raises(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        raise ConnectionError("the database is not there")
    await _respond(send, b"{}")


async def meddle(scope, receive, send) -> None:
    """What of its scope's mutable values a request finds (keys an app may add), then adds to each of them (and
    to each extension's dict), as middleware does: a request's scope is its own, so the next request on the
    connection sees none of it."""
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    extensions = scope["extensions"]
    seen = {"extensions": sorted(extensions), "asgi": sorted(scope["asgi"]), "state": sorted(scope["state"]),
            "headers": [name.decode() for name, _ in scope["headers"]],
            "inner": {name: sorted(value) for name, value in extensions.items()}}
    for value in extensions.values():  # each extension's own dict, too
        value["meddled"] = 1
    extensions["meddled"] = {}
    scope["asgi"]["meddled"] = "1"
    scope["state"]["meddled"] = 1
    scope["headers"].append((b"meddled", b"1"))
    await _respond(send, _json(seen))


async def no_lifespan(scope, receive, send) -> None:
    """An app that does not do lifespan, as many small ones: it raises on any other scope type."""
    assert scope["type"] == "http", "only http"
    await _respond(send, _json({"state": scope["state"]}))


async def ws_echo(scope, receive, send) -> None:
    """A WebSocket echo; /reject closes before accepting, /deny answers the handshake with a 401 of its own,
    /own-field accepts with a header field of its own (x-app: echo); the text "raise" makes the app fail,
    "close N" closes with code N; the code of each disconnect is printed."""
    if scope["type"] != "websocket":
        await _respond(send, b"plain http", ctype=b"text/plain")
        return
    assert (await receive())["type"] == "websocket.connect"
    if scope["path"] == "/reject":
        await send({"type": "websocket.close"})
        return
    if scope["path"] == "/deny":
        for message in WS_DENIALS["/whole"]:
            await send(message)
        return
    own = [(b"x-app", b"echo")] if scope["path"] == "/own-field" else []
    await send({"type": "websocket.accept", "subprotocol": (scope["subprotocols"] or [None])[0], "headers": own})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            print(f"WS DISCONNECT {message['code']}", flush=True)
            return
        if message.get("text") == "raise":
            raise RuntimeError("the app failed on an open websocket")
        if (message.get("text") or "").startswith("close "):
            await send({"type": "websocket.close", "code": int(message["text"].split()[1])})
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def ws_ticks(scope, receive, send) -> None:
    """A WebSocket that only sends: "tick" every tenth of a second, never a receive(), so nothing its client
    sends is parsed; prints when a send finds the session over."""
    if scope["type"] != "websocket":
        await _respond(send, b"plain http", ctype=b"text/plain")
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    try:
        while True:
            await send({"type": "websocket.send", "text": "tick"})
            await asyncio.sleep(0.1)
    except OSError:
        print("WS TICKS STOPPED", flush=True)


_SILENT: set[object] = set()  # ws_silent's sessions whose app still runs


async def ws_silent(scope, receive, send) -> None:
    """A WebSocket app that accepts, then neither receives nor sends (it waits for something else, forever); plain
    HTTP: how many of its sessions still run, as JSON."""
    if scope["type"] != "websocket":
        await _respond(send, _json({"running": len(_SILENT)}))
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    token = object()
    _SILENT.add(token)
    print("WS SILENT ACCEPTED", flush=True)
    try:
        await asyncio.Event().wait()
    except BaseException as exc:
        print(f"WS SILENT STOPPED {type(exc).__name__}", flush=True)
        raise
    finally:
        _SILENT.discard(token)


async def stuck(scope, receive, send) -> None:
    """An app whose tasks never return by themselves: a WebSocket session that neither receives nor sends after its
    accept, an HTTP call to /hang that awaits forever, one to /cut that does so after its response began, one to
    /stubborn that also ignores its cancellation; any other
    path answers at once. Its lifespan shutdown appends the worker's pid to the file $STUCK_SHUTDOWN_FILE names, then,
    with $STUCK_SHUTDOWN_HANGS, never ends."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        with open(os.environ["STUCK_SHUTDOWN_FILE"], "a") as fh:
            fh.write(f"{os.getpid()}\n")
        if os.environ.get("STUCK_SHUTDOWN_HANGS"):
            await asyncio.Event().wait()  # a pool that never closes
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        print("STUCK WS ACCEPTED", flush=True)
        await asyncio.Event().wait()
    if scope["path"] == "/hang":
        print("STUCK CALL /hang", flush=True)
        await asyncio.Event().wait()
    if scope["path"] == "/cut":  # a response begun, whose end never comes
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        print("STUCK CALL /cut", flush=True)
        await asyncio.Event().wait()
    if scope["path"] == "/stubborn":
        print("STUCK CALL /stubborn", flush=True)
        while True:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
    await _respond(send, b"ok", ctype=b"text/plain")


# What a WebSocket app sends wrong, by path: a close frame no frame may carry, or a message of neither kind.
WS_MISTAKES = {
    "/code-5000": {"type": "websocket.close", "code": 5000},
    "/code-1005": {"type": "websocket.close", "code": 1005},
    "/code-str": {"type": "websocket.close", "code": "1000"},
    "/long-reason": {"type": "websocket.close", "code": 1000, "reason": "r" * 124},
    "/text-of-bytes": {"type": "websocket.send", "text": b"bytes"},
    "/neither": {"type": "websocket.send"},
}


async def ws_misbehaves(scope, receive, send) -> None:
    """Accepts a WebSocket, then sends what WS_MISTAKES names for its path; plain HTTP: "plain http"."""
    if scope["type"] != "websocket":
        await _respond(send, b"plain http", ctype=b"text/plain")
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    await send(WS_MISTAKES[scope["path"]])


# A WebSocket app's denial responses, by path: the messages it sends instead of websocket.accept.
_DENY_START = {"type": "websocket.http.response.start", "status": 401,
               "headers": [(b"content-type", b"text/plain"), (b"x-denied-by", b"the test app")]}
WS_DENIALS = {
    "/whole": [_DENY_START, {"type": "websocket.http.response.body", "body": b"no token, no socket"}],
    "/parts": [_DENY_START, *({"type": "websocket.http.response.body", "body": part, "more_body": True}
                              for part in (b"one, ", b"", b"two, ")),
               {"type": "websocket.http.response.body", "body": b"three"}],
    "/length": [{**_DENY_START, "headers": [(b"content-length", b"11")]},
                {"type": "websocket.http.response.body", "body": b"hello ", "more_body": True},
                {"type": "websocket.http.response.body", "body": b"world"}],
    # The app returns after this, its denial not ended.
    "/cut": [_DENY_START, {"type": "websocket.http.response.body", "body": b"half", "more_body": True}],
    # The app returns after this start, with no body: a 500 (its status is not sockact's own refusal's).
    "/start-403-only": [{**_DENY_START, "status": 403}],
    # The app waits in receive() after this, its denial not ended, until the client leaves.
    "/half-then-wait": [_DENY_START, {"type": "websocket.http.response.body", "body": b"half", "more_body": True}],
}
# What a WebSocket app sends wrong around a denial response, by path.
_DENY_BODY = {"type": "websocket.http.response.body", "body": b"denied"}
WS_DENIAL_MISTAKES = {
    "/start-after-accept": [{"type": "websocket.accept"}, _DENY_START],
    "/start-after-close": [{"type": "websocket.close"}, _DENY_START],
    "/body-before-start": [_DENY_BODY],
    "/start-twice": [_DENY_START, _DENY_START],
    "/status-101": [{**_DENY_START, "status": 101}],
    "/status-str": [{**_DENY_START, "status": "401"}],
    "/header-crlf": [{**_DENY_START, "headers": [(b"x-split", b"a\r\nx-injected: 1")]}],
    "/header-str": [{**_DENY_START, "headers": [("x-str", "not bytes")]}],
    "/body-str": [_DENY_START, {"type": "websocket.http.response.body", "body": "not bytes"}],
    "/accept-mid-denial": [_DENY_START, {**_DENY_BODY, "more_body": True}, {"type": "websocket.accept"}],
    "/body-after-end": [_DENY_START, _DENY_BODY, _DENY_BODY],
    "/close-after-end": [_DENY_START, _DENY_BODY, {"type": "websocket.close"}],
}


_RELEASE: list[asyncio.Event] = []  # what ws_deny's /whole waits for once denied: a plain request to /release
STREAM_CAP = 192 * 1024 * 1024  # bytes: /stream's body ends here, so that a worker without backpressure stops


# ws_deny's paths whose response, an HTTP one or a denial, waits in receive() between two messages: the
# first part of the body and the rest, or the start and the body.
_AROUND_A_RECEIVE = {"/half-close": (b"first, ", b"second"), "/start-then-wait": (None, b"late")}


async def _around_a_receive(path: str, receive, send, prefix: str) -> None:
    """The response _AROUND_A_RECEIVE names for ``path``, as ``prefix`` messages (http.response or
    websocket.http.response); what receive() said, and a send that raised, are printed."""
    first, rest = _AROUND_A_RECEIVE[path]
    await send({**_DENY_START, "type": f"{prefix}.start"})
    print(f"AROUND {prefix} {path} started", flush=True)
    if first is not None:
        await send({"type": f"{prefix}.body", "body": first, "more_body": True})
    message = await receive()
    while message["type"] == "http.request":  # an HTTP request's (empty) body first
        message = await receive()
    print(f"AROUND {prefix} {path} {message['type']}", flush=True)
    try:
        await send({"type": f"{prefix}.body", "body": rest})
    except OSError as exc:
        print(f"AROUND {prefix} {path} {type(exc).__name__}", flush=True)


async def ws_deny(scope, receive, send) -> None:
    """Denies a WebSocket with the response WS_DENIALS names for its path, then prints the disconnect its
    next receive() gets (/whole then waits for a plain request to /release, and says so); WS_DENIAL_MISTAKES'
    paths send those messages; /stream streams its denial's body (up to STREAM_CAP) until its send raises
    (the client left), and prints the exception; _AROUND_A_RECEIVE's paths wait in receive() in the middle
    of their response (plain HTTP too); /close-after-disconnect and /return-after-disconnect wait in
    receive() before they answer the handshake, then close, or return; plain HTTP: "plain http"."""
    if not _RELEASE:
        _RELEASE.append(asyncio.Event())
    if scope["type"] != "websocket":
        if scope.get("path") == "/release":
            _RELEASE[0].set()
        if scope.get("path") in _AROUND_A_RECEIVE:
            await _around_a_receive(scope["path"], receive, send, "http.response")
            return
        await _respond(send, b"plain http", ctype=b"text/plain")
        return
    assert scope["extensions"]["websocket.http.response"] == {} and "http.response.pathsend" not in scope["extensions"]
    assert (await receive())["type"] == "websocket.connect"
    if scope["path"] in _AROUND_A_RECEIVE:
        await _around_a_receive(scope["path"], receive, send, "websocket.http.response")
        return
    if scope["path"] in ("/close-after-disconnect", "/return-after-disconnect"):
        message = await receive()  # the client's half-close ends it: websocket.disconnect
        print(f"UNANSWERED {scope['path']} {message['type']}", flush=True)
        if scope["path"] == "/close-after-disconnect":
            await send({"type": "websocket.close"})
        return
    if scope["path"] == "/stream":
        await send(_DENY_START)
        piece = b"tick\n" * 1000
        try:
            for _ in range(STREAM_CAP // len(piece)):
                await send({"type": "websocket.http.response.body", "body": piece, "more_body": True})
        except OSError as exc:
            print(f"DENIAL STOPPED: {type(exc).__name__}", flush=True)
            raise
        await send({"type": "websocket.http.response.body"})
        return
    for message in WS_DENIALS.get(scope["path"]) or WS_DENIAL_MISTAKES[scope["path"]]:
        await send(message)
    if scope["path"] in ("/cut", "/start-403-only"):
        return
    message = await receive()
    print(f"DENIED {scope['path']} {message['type']} {message.get('code')}", flush=True)
    if scope["path"] == "/whole":
        await _RELEASE[0].wait()
        print("RELEASED /whole", flush=True)


async def pathsend(scope, receive, send) -> None:
    """The file named by ``?path=``, sent by the server (the http.response.pathsend extension)."""
    assert "http.response.pathsend" in scope["extensions"]
    path = parse_qs(scope["query_string"].decode())["path"][0]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.pathsend", "path": path})


async def big(scope, receive, send) -> None:
    """``?mb=N`` MiB of body in 64 KiB pieces: more than the kernel's buffers, so writes must wait."""
    mib = int(parse_qs(scope["query_string"].decode()).get("mb", ["8"])[0])
    piece = b"z" * 65536
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(mib * 1024 * 1024).encode())]})
    for _ in range(mib * 16):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def endless(scope, receive, send) -> None:
    """Streams until send() raises because the client left (ASGI 2.4), then says so."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    try:
        while True:
            await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
            await asyncio.sleep(0.01)
    except OSError as exc:
        print(f"ENDLESS STOPPED: {type(exc).__name__}", flush=True)
        raise


async def empty_pieces(scope, receive, send) -> None:
    """Empty body messages with more_body, before, between and after the real pieces."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for body in (b"", b"a", b"", b"b", b""):
        await send({"type": "http.response.body", "body": body, "more_body": True})
    await send({"type": "http.response.body"})


async def whole_or_hang(scope, receive, send) -> None:
    """``/whole?bytes=N``: N bytes of body in one message (so the call ends before they are all out);
    any other path: ``hang``."""
    if scope["path"] != "/whole":
        await hang(scope, receive, send)
        return
    size = int(parse_qs(scope["query_string"].decode())["bytes"][0])
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(size).encode())]})
    await send({"type": "http.response.body", "body": b"w" * size})


async def hang(scope, receive, send) -> None:
    """Touches the file ``?started=PATH``, then waits a minute; with ``&head=1``, after sending its
    response head and a first piece (a worker killed meanwhile has begun this response)."""
    query = parse_qs(scope["query_string"].decode())
    if query.get("head"):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first part\n", "more_body": True})
    with open(query["started"][0], "a"):
        pass
    await asyncio.sleep(60)


async def send_after_disconnect(scope, receive, send) -> None:
    """/late: reads the body, waits for http.disconnect, then answers anyway (ASGI: the send raises
    OSError); any other path (the readiness checks'): answered at once."""
    if scope["type"] != "http":
        return
    if scope["path"] != "/late":
        await _respond(send, b"now")
        return
    while (await receive())["type"] == "http.request":
        pass
    print("GOT DISCONNECT", flush=True)
    await _respond(send, b"too late")


_stray: dict[str, asyncio.Event] = {}


async def stray_receive(scope, receive, send) -> None:
    """/leave answers at once and leaves a task holding its receive() (/leave-send: its send()), which calls it
    once the next request (/body, on the same connection) has begun and before that one reads its body; /body
    answers its body and what the stray receive() got (its type), or what the stray send() of a whole
    response raised ("" if nothing)."""
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    if scope["path"] in ("/leave", "/leave-send"):
        _stray["next"], _stray["done"] = asyncio.Event(), asyncio.Event()

        async def stray() -> None:
            await _stray["next"].wait()
            if scope["path"] == "/leave":
                _stray["got"] = (await receive())["type"]  # type: ignore[assignment]
            else:
                try:
                    await _respond(send, b"stray", 418)
                    _stray["got"] = ""  # type: ignore[assignment]
                except Exception as exc:
                    _stray["got"] = type(exc).__name__  # type: ignore[assignment]
            _stray["done"].set()

        _stray["task"] = asyncio.get_running_loop().create_task(stray())  # type: ignore[assignment]
        await _respond(send, b"left")
        return
    if scope["path"] != "/body":
        await _respond(send, b"ok")  # the readiness check
        return
    _stray["next"].set()
    await _stray["done"].wait()
    message = await receive()
    await _respond(send, _json({"body": message.get("body", b"").decode(), "stray": _stray["got"]}))


async def short_body(scope, receive, send) -> None:
    """Promises 100 body bytes and sends 9: in one message (``/whole``), or in two (anything else); ``/past``
    and ``/past-pieces`` promise 4 and give 9, in one message or two."""
    length = b"4" if scope["path"].startswith("/past") else b"100"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", length)]})
    if scope["path"] in ("/whole", "/past"):
        await send({"type": "http.response.body", "body": b"only this"})
        return
    await send({"type": "http.response.body", "body": b"only", "more_body": True})
    await send({"type": "http.response.body", "body": b" this"})


async def own_date_and_server(scope, receive, send) -> None:
    """Gives its own Date and Server (``/date``: only Date; ``/server``: only Server)."""
    mine = {"/date": [(b"date", b"Mon, 01 Jan 2024 00:00:00 GMT")], "/server": [(b"server", b"myapp/1")]}
    fields = mine.get(scope["path"], mine["/date"] + mine["/server"])
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain"), *fields]})
    await send({"type": "http.response.body", "body": b"ok"})


async def status_from_path(scope, receive, send) -> None:
    """Answers with the status its path names (``/101``); "/" with 200. With the query "length", the answer
    names its Content-Length."""
    if scope["type"] != "http":
        return
    code = int(scope["path"].strip("/") or "200")
    length = [(b"content-length", b"2")] if scope["query_string"] == b"length" else []
    await send({"type": "http.response.start", "status": code, "headers": [(b"content-type", b"text/plain"), *length]})
    await send({"type": "http.response.body", "body": b"ok"})


async def cancels_itself(scope, receive, send) -> None:
    """/cancel: its call raises CancelledError, as an app's own cancel or a stray timeout does; "/": 200. A
    WebSocket raises it before its accept, or at /accepted after it."""
    if scope["type"] == "websocket":
        await receive()
        if scope["path"] == "/accepted":
            await send({"type": "websocket.accept"})
        raise asyncio.CancelledError
    if scope["type"] != "http":
        return
    if scope["path"] == "/cancel":
        raise asyncio.CancelledError
    await _respond(send, b"ok")


async def exits(scope, receive, send) -> None:
    """/exit: sys.exit(3), as an app's own code may call it; /interrupt: KeyboardInterrupt; /own: a BaseException
    of a library's; "/": the pid. A WebSocket echoes, and its text "exit" calls sys.exit(3)."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            if message.get("text") == "exit":
                sys.exit(3)
            await send({"type": "websocket.send", "text": message.get("text")})
        return
    if scope["type"] != "http":
        return
    if scope["path"] == "/exit":
        sys.exit(3)
    if scope["path"] == "/interrupt":
        raise KeyboardInterrupt
    if scope["path"] == "/own":
        raise OwnBaseException("a library's own BaseException")
    await _respond(send, _json({"pid": os.getpid()}))
