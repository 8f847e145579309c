"""The ASGI WebSocket Denial Response (the ``websocket.http.response`` extension), as a plain object.

An app that will not accept a WebSocket may answer its handshake request with an HTTP response of its
own instead of the 403 a ``websocket.close`` gets: ``websocket.http.response.start`` (status, headers),
then one or more ``websocket.http.response.body`` (body, more_body), before any accept or close. The
upgrade request was parsed by the connection's HTTP engine, so the engine writes this response as it
writes any other: the app's status and headers, checked as an HTTP response's are (cycle.check_start),
with the engine's Date, Server and ``Connection: close`` (an upgrade request never persists). Its
framing is the engine's too: the app's Content-Length, else the whole body's length when it comes in
one message, else chunked, as an HTTP/1.1 response of unknown length is (a client can then tell a
denial cut short, by an app that failed in its middle, from a whole one, which a body delimited by
the close cannot show). The head waits for the first body message, so a whole body gets its length.
No byte goes through the WebSocket library: the handshake is answered, not begun.

States, and the only moves (TRANSITIONS); any other message is the app's error (InvalidResponse):

    IDLE --start--> STARTED --body, more_body--> SENDING --body, more_body--> SENDING
                    STARTED --last body--------> ENDED      SENDING --last body--> ENDED

Whether the handshake may still be answered at all (no accept, no close before) is the session's
(websocket.py), which also writes the bytes, waits while the client is slow to read them, and ends the
session once the denial has ended.
"""

from __future__ import annotations

import enum
from typing import Any

from sockact.asgi.cycle import body_bytes, check_start
from sockact.errors import InvalidResponse
from sockact.http.dates import http_date
from sockact.http.engine import Connection

START = "websocket.http.response.start"
BODY = "websocket.http.response.body"
MESSAGES = frozenset({START, BODY})


class DenialState(enum.Enum):
    IDLE = "IDLE"  # nothing of a denial response yet
    STARTED = "STARTED"  # its start taken; the head waits for the body
    SENDING = "SENDING"  # head and part of the body given to send
    ENDED = "ENDED"  # whole


IDLE, STARTED, SENDING, ENDED = DenialState.IDLE, DenialState.STARTED, DenialState.SENDING, DenialState.ENDED
# (state, what the app sent: "start", "part" (a body with more_body), "last" (the body that ends it)) -> state.
TRANSITIONS: dict[tuple[DenialState, str], DenialState] = {
    (IDLE, "start"): STARTED,
    (STARTED, "part"): SENDING,
    (STARTED, "last"): ENDED,
    (SENDING, "part"): SENDING,
    (SENDING, "last"): ENDED,
}
# What a message the table refuses is told, by the state it came in.
_REFUSED = {
    IDLE: "before websocket.http.response.start",
    STARTED: "after websocket.http.response.start, where only websocket.http.response.body may follow",
    SENDING: "in the middle of the denial response, where only websocket.http.response.body may follow",
    ENDED: "after the denial response ended",
}


class Denial:
    """One WebSocket's denial response: the app's messages in, the bytes to send out."""

    __slots__ = ("_headers", "_line", "engine", "state", "status")

    def __init__(self, engine: Connection) -> None:
        self.engine = engine  # the connection's, its upgrade request read whole
        self.state: DenialState = IDLE
        self.status = 0
        self._line = ""  # the status line, "403 Forbidden"
        self._headers: list[tuple[str, str]] = []

    @property
    def begun(self) -> bool:
        """Bytes of it were given to send: a failure from here on cuts it short, rather than answers 500."""
        return self.state is SENDING or self.state is ENDED

    @property
    def ended(self) -> bool:
        return self.state is ENDED

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The app's headers, checked, from its start on (the access log's ``{name}o`` atoms); else none."""
        return self._headers

    def send(self, kind: str, message: dict[str, Any]) -> bytes:
        """The app's message ``kind``: the bytes to send for it (b"" for a start, whose head waits for the
        body). Raises InvalidResponse for a message out of turn, a bad status, headers or body; the state
        is then unchanged."""
        if kind == START:
            event = "start"
        elif kind == BODY:
            event = "part" if message.get("more_body", False) else "last"
        else:
            event = kind
        after = TRANSITIONS.get((self.state, event))
        if after is None:
            raise InvalidResponse(f"{kind} {_REFUSED[self.state]}")
        if event == "start":
            self.status, self._line, self._headers = check_start(message.get("status"), message.get("headers", ()))
            self.state = after
            return b""
        body = body_bytes(message.get("body", b""))
        engine = self.engine
        parts = []
        if self.state is STARTED:
            parts.append(engine.start_response(self._line, self._headers, date=http_date(), close=True,
                                               whole=len(body) if event == "last" else None))
        if body:
            parts.append(engine.send_data(body))
        if event == "last":
            parts.append(engine.end_response())
        self.state = after
        return b"".join(parts)
