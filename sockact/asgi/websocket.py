"""The ASGI websocket scope over wsproto: the handshake and the frames are wsproto's, not ours.

The HTTP engine has parsed the upgrade request (same limits and refusals as any request);
its head, and whatever the client sent after it, go to wsproto as they came. The app then
gets websocket.connect, and answers websocket.accept (101) or websocket.close (403 before
accept). Messages are reassembled whole; pings are answered. A WebSocket is never parked and
counts against its worker's capacity for as long as it is open; when the worker drains,
``close_going_away`` ends it with 1001.
"""

from __future__ import annotations

import logging
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..errors import InvalidResponse
from .conn import Conn
from .cycle import ClientDisconnected

log = logging.getLogger("sockact.http")

GOING_AWAY = 1001
ABNORMAL = 1006  # the client went away without a close frame (RFC 6455 7.4.1)


class WebSocket:
    """One WebSocket: the ``receive`` and ``send`` its app is given."""

    def __init__(self, conn: Conn, scope: dict[str, Any]) -> None:
        self.conn = conn
        self.scope = scope
        head = conn.engine.unparsed()  # the upgrade request's head, and any frames after it
        conn.engine.next_event()  # END_OF_MESSAGE: an upgrade request has no body
        self.ws = WSConnection(ConnectionType.SERVER)
        self.connected = False  # websocket.connect delivered
        self.accepted = False
        self.closed = False  # a close was sent or received: no more messages either way
        self.close_code = ABNORMAL
        self._parts: list[Any] = []
        self._feed(head)  # a handshake wsproto refuses is answered (400) and closed here
        conn.feed = self._feed

    def _feed(self, data: bytes) -> None:
        try:
            self.ws.receive_data(data or None)
        except RemoteProtocolError as exc:
            log.debug("conn %d: websocket: %s", self.conn.msg.conn_id, exc)
            self._out(exc.event_hint)
            self.closed = True

    def _out(self, event: Any) -> None:
        if event is None:
            return
        try:
            self.conn.write(self.ws.send(event))
        except LocalProtocolError as exc:
            log.debug("conn %d: websocket: %s", self.conn.msg.conn_id, exc)

    # -- receive

    async def receive(self) -> dict[str, Any]:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        while True:
            for event in self.ws.events():
                message = self._on_event(event)
                if message is not None:
                    return message
            if self.closed or self.conn.eof or self.conn.gone or self.conn.closed:
                self.closed = True
                return {"type": "websocket.disconnect", "code": self.close_code}
            await self.conn.wait_input()

    def _on_event(self, event: Any) -> dict[str, Any] | None:
        if isinstance(event, Request):
            return None  # the handshake itself, answered by the app's accept or close
        if isinstance(event, Message):
            self._parts.append(event.data)
            if not event.message_finished:
                return None
            parts, self._parts = self._parts, []
            if isinstance(event, TextMessage):
                return {"type": "websocket.receive", "text": "".join(parts)}
            return {"type": "websocket.receive", "bytes": b"".join(parts)}
        if isinstance(event, Ping):
            self._out(event.response())
            return None
        if isinstance(event, CloseConnection):
            self.close_code = event.code
            if self.ws.state is ConnectionState.REMOTE_CLOSING:
                self._out(event.response())
            self.closed = True
            return {"type": "websocket.disconnect", "code": event.code, "reason": event.reason or ""}
        return None  # Pong

    # -- send

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            if self.accepted or self.closed:
                raise InvalidResponse("websocket.accept twice, or after close")
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
            self._out(AcceptConnection(subprotocol=message.get("subprotocol"), extra_headers=headers))
            self.accepted = True
            return
        if kind == "websocket.close":
            if self.closed:
                return
            self.closed = True
            if not self.accepted:
                self._out(RejectConnection(status_code=403))  # RFC 6455 4.2.2: the handshake is refused
            else:
                self._out(CloseConnection(code=message.get("code", 1000), reason=message.get("reason") or None))
            return
        if kind != "websocket.send":
            raise InvalidResponse(f"unexpected ASGI message {kind!r} on a websocket")
        if not self.accepted:
            raise InvalidResponse("websocket.send before websocket.accept")
        if self.closed or self.conn.gone:
            raise ClientDisconnected(f"conn {self.conn.msg.conn_id}: the websocket is closed")
        if message.get("bytes") is not None:
            self._out(BytesMessage(data=bytes(message["bytes"])))
        else:
            self._out(TextMessage(data=str(message.get("text", ""))))
        await self.conn.drain()

    def close_going_away(self) -> None:
        """The worker drains: close with 1001, and the app's next receive() says so."""
        if self.closed:
            return
        if self.accepted:
            self._out(CloseConnection(code=GOING_AWAY))
        self.closed = True
        self.close_code = GOING_AWAY
        self.conn.close()


async def serve_websocket(conn: Conn, scope: dict[str, Any], app: Any, sessions: dict[Conn, WebSocket]) -> None:
    """Run the app for one WebSocket until it returns; the caller closes the connection."""
    ws = WebSocket(conn, scope)
    if ws.closed:
        return  # the handshake was refused; the app never hears of it
    sessions[conn] = ws
    try:
        await app(scope, ws.receive, ws.send)
    except Exception as exc:
        if ws.closed or conn.gone:
            log.debug("conn %d: the app stopped after its websocket closed: %r", conn.msg.conn_id, exc)
        else:
            log.error("conn %d: application error on websocket %r", conn.msg.conn_id, scope["path"], exc_info=exc)
        if not ws.accepted and not ws.closed:
            ws.closed = True
            ws._out(RejectConnection(status_code=500))
        elif not ws.closed:
            ws._out(CloseConnection(code=1011))  # RFC 6455 7.4.1: an unexpected condition
    else:
        if not ws.accepted and not ws.closed:
            ws._out(RejectConnection(status_code=500))
        elif not ws.closed:
            ws._out(CloseConnection(code=1000))
    finally:
        sessions.pop(conn, None)


