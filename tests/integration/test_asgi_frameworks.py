"""Real frameworks over real sockets: FastAPI, Starlette and a Django async view; and uvicorn serving
the same apps, response for response (the differences that remain are in docs/http.md)."""

from __future__ import annotations

import os
import signal
import sys

import httpx
from conftest import Server, base_env, free_port, need_module

need_module("fastapi")


def test_fastapi_json_api_upload_streaming_and_websocket(start_sockact):
    from websockets.sync.client import connect

    server = start_sockact("asgiframeworks:fastapi_app", "--workers", "2")
    base = f"http://127.0.0.1:{server.port}"
    with httpx.Client(base_url=base) as client:  # keep-alive: parked and redispatched between requests
        assert client.get("/items/7", params={"q": "x"}).json() == {"item_id": 7, "q": "x"}
        assert client.get("/items/seven").status_code == 422
        assert client.post("/items", json={"name": "a", "price": 10}).json() == {"name": "a", "price_with_tax": 12.0}
        payload = os.urandom(300_000)
        answer = client.post("/upload", files={"file": ("blob.bin", payload)}).json()
        assert answer["filename"] == "blob.bin" and answer["size"] == len(payload)
        with client.stream("GET", "/stream") as response:
            assert response.headers["transfer-encoding"] == "chunked"
            assert list(response.iter_lines()) == [f"line {i}" for i in range(5)]
        state = client.get("/state").json()
        assert state["started_in"] == state["pid"]  # the lifespan ran in the worker that serves
    with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        for word in ("one", "two"):
            ws.send(word)
            assert ws.recv() == f"echo: {word}"


def test_starlette_over_real_sockets(start_sockact):
    server = start_sockact("asgiframeworks:starlette_app", "--workers", "1", "--root-path", "/mnt")
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
        assert client.get("/mnt/").text == "hello from starlette at /mnt/"
        answer = client.post("/mnt/echo", json={"a": [1, 2]})
        assert answer.json() == {"got": {"a": [1, 2]}, "root_path": "/mnt"}
        assert client.get("/mnt/nowhere").status_code == 404


def test_a_django_async_view(start_sockact):
    server = start_sockact("asgidjango", "--workers", "1")
    answer = httpx.get(f"http://127.0.0.1:{server.port}/hello/?q=1")
    assert answer.json() == {"framework": "django", "method": "GET", "path": "/hello/", "query": "1"}
    assert "serves asgidjango:application as ASGI (detected)" in server.output()


# ---------------------------------------------------------------------- differential, against uvicorn

SHAPES = [
    ("GET", "/items/1?q=a", {}, None),
    ("GET", "/items/nope", {}, None),
    ("POST", "/items", {"content-type": "application/json"}, b'{"name": "x", "price": 2.5}'),
    ("POST", "/items", {"content-type": "application/json"}, b"{not json"),
    ("GET", "/stream", {}, None),
    ("HEAD", "/items/1", {}, None),
    ("GET", "/missing", {}, None),
    ("DELETE", "/items/1", {}, None),
]
# Fields each server sets for itself; everything else must match.
OWN_FIELDS = {"date", "server", "connection", "keep-alive"}


def _uvicorn(app: str) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--workers", "1", "--log-level", "warning",
            "--http", "httptools"]
    server = Server(argv, port, base_env())
    server.wait_ready()
    return server


def _responses(port: int) -> list[tuple[int, dict[str, str], bytes]]:
    out = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for method, path, headers, body in SHAPES:
            answer = client.request(method, path, headers=headers, content=body)
            fields = {k.lower(): v for k, v in answer.headers.items() if k.lower() not in OWN_FIELDS}
            out.append((answer.status_code, fields, answer.content))
    return out


def test_sockact_and_uvicorn_answer_fastapi_alike(start_sockact):
    need_module("uvicorn")
    ours = start_sockact("asgiframeworks:fastapi_app", "--workers", "1")
    theirs = _uvicorn("asgiframeworks:fastapi_app")
    try:
        for shape, mine, other in zip(SHAPES, _responses(ours.port), _responses(theirs.port), strict=True):
            assert mine == other, shape
    finally:
        theirs.stop(signal.SIGTERM)
        theirs.log.close()



def _denial(port: int) -> tuple[int, dict[str, str], bytes]:
    """What a WebSocket client gets from FastAPI's /ws-members: (status, fields, body)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    try:
        connect(f"ws://127.0.0.1:{port}/ws-members", open_timeout=10)
    except InvalidStatus as exc:
        fields = {k.lower(): v for k, v in exc.response.headers.raw_items() if k.lower() not in OWN_FIELDS}
        return exc.response.status_code, fields, exc.response.body
    raise AssertionError("the handshake was accepted")


def test_sockact_and_uvicorn_send_starlettes_websocket_denial_response_alike(start_sockact, ws_library):
    need_module("uvicorn")
    ours = start_sockact("asgiframeworks:fastapi_app", "--workers", "1", "--ws", ws_library)
    theirs = _uvicorn("asgiframeworks:fastapi_app")
    try:
        mine = _denial(ours.port)
        assert mine == _denial(theirs.port)
        assert mine[0] == 401 and mine[1]["www-authenticate"] == 'Bearer realm="chat"' and mine[2] == b"members only"
    finally:
        theirs.stop(signal.SIGTERM)
        theirs.log.close()


def _websocket_shapes(port: int) -> list[object]:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    out: list[object] = []
    with connect(f"ws://127.0.0.1:{port}/", subprotocols=["chat"]) as ws:
        out.append(ws.subprotocol)
        for message in ("text", b"\x00bytes", "x" * 70000):
            ws.send(message)
            out.append(ws.recv())
    try:
        connect(f"ws://127.0.0.1:{port}/reject")
    except InvalidStatus as exc:
        out.append(exc.response.status_code)
    return out


def test_sockact_and_uvicorn_answer_websockets_alike(start_sockact, ws_library):
    ours = start_sockact("asgiapps:ws_echo", "--workers", "1", "--ws", ws_library)
    theirs = _uvicorn("asgiapps:ws_echo")
    try:
        assert _websocket_shapes(ours.port) == _websocket_shapes(theirs.port) == [
            "chat", "text", b"\x00bytes", "x" * 70000, 403]
    finally:
        theirs.stop(signal.SIGTERM)
        theirs.log.close()
