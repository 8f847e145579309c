"""Real ASGI frameworks for the integration tests: FastAPI and Starlette (asgidjango.py: Django).

Imported only by the tests that serve them (the frameworks are in the test extra).
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


@asynccontextmanager
async def _lifespan(app: FastAPI):
    yield {"started_in": os.getpid()}


fastapi_app = FastAPI(lifespan=_lifespan)


class Item(BaseModel):
    name: str
    price: float


@fastapi_app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None) -> dict:
    return {"item_id": item_id, "q": q}


@fastapi_app.post("/items")
async def create_item(item: Item) -> dict:
    return {"name": item.name, "price_with_tax": round(item.price * 1.2, 2)}


@fastapi_app.post("/upload")
async def upload(file: UploadFile) -> dict:
    data = await file.read()
    return {"filename": file.filename, "size": len(data), "head": data[:8].decode("latin-1")}


@fastapi_app.get("/stream")
async def stream() -> StreamingResponse:
    async def pieces():
        for i in range(5):
            yield f"line {i}\n"
    return StreamingResponse(pieces(), media_type="text/plain")


@fastapi_app.get("/state")
async def state(request: Request) -> dict:  # type: ignore[type-arg]
    return {"started_in": request.state.started_in, "pid": os.getpid()}


@fastapi_app.websocket("/ws")
async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text("echo: " + await websocket.receive_text())
    except WebSocketDisconnect:
        pass


@fastapi_app.websocket("/ws-members")
async def ws_members(websocket: WebSocket) -> None:
    """Refused with an HTTP response of the app's own (ASGI's WebSocket Denial Response), as Starlette sends it."""
    await websocket.send_denial_response(PlainTextResponse("members only", status_code=401,
                                                           headers={"www-authenticate": 'Bearer realm="chat"'}))


async def _homepage(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"hello from starlette at {request.url.path}")


async def _echo_json(request: Request) -> JSONResponse:
    return JSONResponse({"got": await request.json(), "root_path": request.scope["root_path"]})


starlette_app = Starlette(routes=[Route("/", _homepage), Route("/echo", _echo_json, methods=["POST"])])
