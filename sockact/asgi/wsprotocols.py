"""The WebSocket protocol libraries sockact can use, behind one small sans-I/O interface.

Like uvicorn, sockact speaks WebSocket through a library, and takes whichever is installed:
``websockets`` (its sans-I/O ``ServerProtocol``, websockets >= 11) first, else ``wsproto``; the
``ws`` setting may name one. Neither library is imported until the first WebSocket comes, so an
HTTP-only app never pays for them.

Each adapter is fed the upgrade request's head and then the client's bytes, and gives back:
- events, one of ``Part`` (a piece of a message; text arrives UTF-8 encoded) or ``Closed``;
- ``take_output()``: the bytes to send, including what the library answers by itself (a pong,
  the reply to a close, the close that ends a protocol error, a refused handshake).
The keepalive's pings are sockact's (keepalive.py), framed by the library (``send_ping``); the
pongs that come back go to ``on_pong`` as the library parses them, outside the events: they are
nothing the app hears of.
The message size limit (``ws_max_size``) is the caller's (websocket.py), for both libraries alike,
since wsproto has none; websockets is given it too, so that it refuses a frame too large from its
header instead of buffering it whole first (it hands on only whole frames).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from sockact.errors import ProtocolError
from sockact.http.events import Request

# What installs the library the ws setting names, for the one warning a WebSocket request without it
# gets ('auto': runner.NO_WEBSOCKET_LIBRARY). Debian 12's python3-websockets (10.4) predates ServerProtocol.
INSTALL_HINT = {
    "websockets": "pip install 'websockets>=11' (a virtualenv), or on Debian 13: apt install python3-websockets",
    "wsproto": "pip install wsproto (a virtualenv), or: apt install python3-wsproto",
}

MESSAGE_TOO_BIG = 1009  # RFC 6455 7.4.1


@dataclass(frozen=True, slots=True)
class Part:
    """A piece of a data message; ``last``: the message ends with it."""

    data: bytes
    text: bool
    last: bool


@dataclass(frozen=True, slots=True)
class Closed:
    """The session ended: the client's close frame, or a protocol error (whose close is in the output)."""

    code: int
    reason: str = ""


Event = Part | Closed


def _no_pongs(payload: bytes) -> None:
    """A pong heard before the session listens for them (none is awaited): nothing to do."""


class WsProtocol(Protocol):
    library: str  # its name, for the log
    refused: bool  # the handshake was refused (its 400 is in the output)
    on_pong: Callable[[bytes], None]  # called with each pong's payload as it is parsed

    def receive_data(self, data: bytes) -> None: ...  # b"": the client closed its side
    def events(self) -> Iterator[Event]: ...
    def take_output(self) -> bytes: ...
    def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None: ...
    def reject(self, status: int) -> None: ...
    def send_message(self, data: bytes | str) -> None: ...
    def close(self, code: int, reason: str = "") -> None: ...
    def send_ping(self, payload: bytes) -> None: ...


def check_handshake(request: Request) -> None:
    """ProtocolError(400) for an upgrade request RFC 6455 forbids (4.1, 4.2.1: the handshake is an HTTP/1.1
    GET, and a GET has no body), checked before either library sees it. websockets refuses a body (400) and
    HTTP/1.0 (505), wsproto neither, and uvicorn leaves it to them: with sockact both answer alike. The
    engine refuses a chunked upgrade request already; another method than GET is no WebSocket request."""
    if request.version != "1.1":
        raise ProtocolError(400, f"a WebSocket handshake over HTTP/{request.version}")
    if request.content_length:
        raise ProtocolError(400, "a WebSocket handshake with a body")


def head_fields(out: bytes) -> list[tuple[str, str]]:
    """The header fields of the HTTP response ``out`` begins with (a library's answer to the handshake, which
    neither library gives as fields: wsproto builds its 101 within), for the access log."""
    fields = []
    for line in out.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]:  # after the status line
        name, colon, value = line.partition(":")
        if colon:
            fields.append((name.strip(), value.strip()))
    return fields


class WsprotoProtocol:
    """wsproto's WSConnection: messages come in pieces as they arrive."""

    library = "wsproto"

    def __init__(self, head: bytes, max_size: int) -> None:
        from wsproto import ConnectionType, WSConnection

        self.ws = WSConnection(ConnectionType.SERVER)
        self.refused = False
        self.on_pong: Callable[[bytes], None] = _no_pongs
        self._out = bytearray()
        self.receive_data(head)

    def receive_data(self, data: bytes) -> None:
        from wsproto.utilities import LocalProtocolError, RemoteProtocolError

        try:
            self.ws.receive_data(data or None)
        except RemoteProtocolError as exc:  # a handshake wsproto refuses; its hint is the 400
            self.refused = True
            self._send(exc.event_hint)
        except LocalProtocolError:
            pass  # bytes after the close: nothing to read any more

    def events(self) -> Iterator[Event]:
        from wsproto.connection import ConnectionState
        from wsproto.events import CloseConnection, Message, Ping, Pong, TextMessage

        for event in self.ws.events():
            if isinstance(event, Message):
                data = event.data.encode() if isinstance(event, TextMessage) else event.data
                yield Part(data, isinstance(event, TextMessage), event.message_finished)
            elif isinstance(event, Ping):
                self._send(event.response())
            elif isinstance(event, CloseConnection):
                # The client's close (REMOTE_CLOSING) is answered; so is a bad frame, which wsproto
                # reports as the close it wants sent, the connection still OPEN.
                if self.ws.state in (ConnectionState.REMOTE_CLOSING, ConnectionState.OPEN):
                    self._send(event.response())
                yield Closed(event.code, event.reason or "")
                return
            elif isinstance(event, Pong):
                self.on_pong(bytes(event.payload))

    def take_output(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        from wsproto.events import AcceptConnection

        self._send(AcceptConnection(subprotocol=subprotocol, extra_headers=headers))

    def reject(self, status: int) -> None:
        from wsproto.events import RejectConnection

        self._send(RejectConnection(status_code=status))

    def send_message(self, data: bytes | str) -> None:
        from wsproto.events import BytesMessage, TextMessage

        self._send(TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data))

    def close(self, code: int, reason: str = "") -> None:
        from wsproto.events import CloseConnection

        self._send(CloseConnection(code=code, reason=reason or None))

    def send_ping(self, payload: bytes) -> None:
        from wsproto.events import Ping

        self._send(Ping(payload=payload))

    def _send(self, event: Any) -> None:
        from wsproto.utilities import LocalProtocolError

        if event is None:
            return
        with contextlib.suppress(LocalProtocolError):  # e.g. a close after a close: nothing more to say
            self._out += self.ws.send(event)


class WebsocketsProtocol:
    """websockets' sans-I/O ServerProtocol: a frame comes whole, once all of it has arrived."""

    library = "websockets"

    def __init__(self, head: bytes, max_size: int) -> None:
        from websockets.http11 import Request
        from websockets.server import ServerProtocol

        # No extensions are offered (no permessage-deflate), as with wsproto.
        self.ws = ServerProtocol(max_size=max_size)
        self.refused = False
        self.on_pong: Callable[[bytes], None] = _no_pongs
        self._response: Any = None
        self._eof = False
        self._text = False  # the kind of the message that CONT frames continue
        # What came after the handshake request, kept until the app accepts: the library would parse it
        # as frames at once, and bytes that are no frame would fail the connection before the app's
        # answer, leaving a refusal (a 500 for an app that raised) unsent. The session gives the rest of
        # the client's bytes only once the app has accepted (websocket.py).
        end = head.find(b"\r\n\r\n") + 4
        if end < 4:
            end = len(head)  # no whole head: the library refuses it below
        self._early: bytes | None = head[end:]
        self._refusal = b""
        self.ws.receive_data(head[:end])
        for event in self.ws.events_received():  # the handshake request
            if not isinstance(event, Request):
                continue
            response = self.ws.accept(event)
            if response.status_code == 101:
                self._response = response
            else:
                self._refuse(response)
        if self._response is None and not self.refused:  # the head did not parse
            self._refuse(self.ws.reject(400, "Failed to open a WebSocket connection: invalid request.\n"))

    def _refuse(self, response: Any) -> None:
        self.refused = True
        if self.ws.eof_sent:
            # The library refused the head itself (a body, say) and has closed its side, so it sends nothing
            # more: the refusal goes out ahead of that half-close, serialized here.
            self._refusal = response.serialize()
        else:
            self.ws.send_response(response)

    def receive_data(self, data: bytes) -> None:
        if self._eof:
            return
        if data:
            self.ws.receive_data(data)
        else:
            self._eof = True
            self.ws.receive_eof()

    def events(self) -> Iterator[Event]:
        from websockets.frames import Frame, Opcode

        data_opcodes = {Opcode.TEXT: True, Opcode.BINARY: False}
        for frame in self.ws.events_received():
            if not isinstance(frame, Frame):
                continue
            opcode = frame.opcode
            if opcode in data_opcodes:
                self._text = data_opcodes[opcode]
                yield Part(bytes(frame.data), self._text, frame.fin)
            elif opcode is Opcode.CONT:
                yield Part(bytes(frame.data), self._text, frame.fin)
            elif opcode is Opcode.CLOSE:  # the library has queued its reply
                received = self.ws.close_rcvd
                yield Closed(received.code if received is not None else 1005, received.reason if received else "")
                return
            elif opcode is Opcode.PONG:
                self.on_pong(bytes(frame.data))
            # PING: answered by the library
        if self.ws.parser_exc is not None and self.ws.close_sent is not None:
            yield Closed(self.ws.close_sent.code, self.ws.close_sent.reason)

    def take_output(self) -> bytes:
        # An empty piece means "half-close now"; the caller closes the connection in its own time.
        out, self._refusal = self._refusal + b"".join(self.ws.data_to_send()), b""
        return out

    def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        response = self._response
        for name, value in headers:
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        if subprotocol:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
        self.ws.send_response(response)
        early, self._early = self._early, None
        if early:
            self.receive_data(early)

    def reject(self, status: int) -> None:
        self._early = None  # what came after the request is never read: the connection closes
        self.ws.send_response(self.ws.reject(status, ""))

    def send_message(self, data: bytes | str) -> None:
        from websockets.exceptions import InvalidState

        with contextlib.suppress(InvalidState):  # closing already: the message goes nowhere
            if isinstance(data, str):
                self.ws.send_text(data.encode())
            else:
                self.ws.send_binary(data)

    def close(self, code: int, reason: str = "") -> None:
        from websockets.exceptions import InvalidState

        with contextlib.suppress(InvalidState):  # closing already
            self.ws.send_close(code, reason)

    def send_ping(self, payload: bytes) -> None:
        from websockets.exceptions import InvalidState

        with contextlib.suppress(InvalidState):  # closing already
            self.ws.send_ping(payload)


LIBRARIES: dict[str, tuple[str, Callable[[bytes, int], WsProtocol]]] = {
    # setting value: (the module that must import, the adapter)
    "websockets": ("websockets.server", WebsocketsProtocol),
    "wsproto": ("wsproto", WsprotoProtocol),
}


def find(choice: str) -> Callable[[bytes, int], WsProtocol] | None:
    """The adapter the ``ws`` setting asks for: 'auto' takes websockets, else wsproto, as uvicorn does.
    None when the library is not installed (or, for websockets, older than its sans-I/O API)."""
    import importlib

    for name in (("websockets", "wsproto") if choice == "auto" else (choice,)):
        module, adapter = LIBRARIES[name]
        try:
            imported = importlib.import_module(module)
        except ImportError:
            continue
        if name == "websockets" and not hasattr(imported, "ServerProtocol"):
            continue  # websockets 10 (Debian 12) has no ServerProtocol
        return adapter
    return None
