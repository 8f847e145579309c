"""The ASGI websocket scope: the handshake and the frames are a library's (wsprotocols.py), not ours.

The HTTP engine has parsed the upgrade request (same limits and refusals as any request);
its head, and whatever the client sent after it, go to the library as they came. The app then
gets websocket.connect, and answers websocket.accept (101), websocket.close (403 before
accept), or an HTTP response of its own (the ``websocket.http.response`` extension, denial.py),
after which the connection closes and the app's next ``receive`` says websocket.disconnect. Pings
are answered. A WebSocket is never parked and counts against its worker's capacity for as long as
it is open; when the worker drains, ``close_going_away`` ends it with 1001.

Memory is bounded, whatever the client does:
- a message is at most ``ws_max_size`` bytes; a larger one is refused with 1009;
- reading pauses once READ_HIGH bytes came in that the app has not taken, or while more than
  the output bound waits for the client (pongs a client does not read);
- the app's sends (a denial response's body too) wait, as an HTTP response's do, while more
  than WRITE_HIGH waits for the client, and a client that takes nothing for ``send_timeout`` is
  let go (conn.py).

So is the loop's time: what the client sends waits here, and the app's ``receive`` gives it to the
library a piece at a time. Once a session has parsed for TURN_SECONDS, it lets the loop run the
worker's other connections before it parses on, so a client streaming tiny frames (wsproto parses
one in ~20 us, websockets in ~5 us) cannot hold up the rest. The pieces grow while they parse
quickly (a large message, cheap per byte, goes through in few turns) and shrink when one overran
its turn (websockets parses a piece whole: 64 KiB of one-byte frames took it ~60 ms). Pings are
answered as the library parses them, so while the app is in ``receive``.

An open session pings its client every ``ws_ping_interval``, and one that has not answered within
``ws_ping_timeout`` ends as a client that vanished does: the app hears 1006 (keepalive.py).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from sockact.asgi.conn import READ_HIGH, AsgiConnection
from sockact.asgi.cycle import ASGI_APP_FAILURES, ClientDisconnected
from sockact.asgi.denial import IDLE, Denial
from sockact.asgi.denial import MESSAGES as DENIAL_MESSAGES
from sockact.asgi.keepalive import GONE, PING, Pinger, Schedule
from sockact.asgi.wsprotocols import MESSAGE_TOO_BIG, Closed, Event, WsProtocol, head_fields
from sockact.errors import InvalidResponse
from sockact.http.limits import RECV_SIZE
from sockact.http.logline import quoted_request_line
from sockact.http.responses import length_missed
from sockact.ipc.tally import TallyWriter, ws_end
from sockact.logs import flood

log = logging.getLogger("sockact.http")

GOING_AWAY = 1001
ABNORMAL = 1006  # the client went away without a close frame (RFC 6455 7.4.1)
INVALID_DATA = 1007  # a text message that is not UTF-8
UNEXPECTED = 1011  # the app failed
TRIM_AFTER = 1024 * 1024  # bytes: a session that held a message this large gives memory back when it ends
# Bytes given to the library at a time: between these, as they parse (small pieces cost a large
# message half its rate; large pieces of one-byte frames hold the loop for tens of ms).
FEED_MIN, FEED_MAX = 4 * 1024, RECV_SIZE
TURN_SECONDS = 0.002  # a session's parsing before it lets the loop run the worker's other connections
# The codes a close frame may carry (RFC 6455 7.4.1, 7.4.2, and IANA's registry): 1005, 1006 and 1015
# only ever report a close, and no frame carries them.
SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
MAX_REASON = 123  # bytes of UTF-8: a control frame's payload is at most 125, the code's 2 with it


def _close_frame(message: dict[str, Any]) -> tuple[int, str]:
    """The code and reason of the app's websocket.close, if a close frame may carry them; else InvalidResponse."""
    code, reason = message.get("code", 1000), message.get("reason") or ""
    if type(code) is not int or not (code in SENDABLE_CODES or 3000 <= code < 5000):
        raise InvalidResponse(f"websocket.close: code {code!r} is none a close frame may carry (1000-1003, "
                              "1007-1014, 3000-4999)")
    try:
        size = len(reason.encode()) if type(reason) is str else -1
    except UnicodeEncodeError:  # a lone surrogate
        size = -1
    if not 0 <= size <= MAX_REASON:
        raise InvalidResponse(f"websocket.close: the reason must be a str of at most {MAX_REASON} bytes in "
                              f"UTF-8, not {reason!r:.60}")
    return code, reason


class WebSocket:
    """One WebSocket: the ``receive`` and ``send`` its app is given, and what the access log says of it."""

    def __init__(self, conn: AsgiConnection, scope: dict[str, Any], library: Callable[[bytes, int], WsProtocol],
                 max_size: int, tally: TallyWriter | None = None, ping_interval: float = 0.0,
                 ping_timeout: float = 0.0, schedule: Schedule[WebSocket] | None = None) -> None:
        self.conn = conn
        self.scope = scope
        self.tally = tally  # the worker's counts for the metrics: the session's open and end; None: none kept
        self.started = time.perf_counter()  # for the access log
        self.max_size = max_size
        head = conn.engine.unparsed()  # the upgrade request's head, and any frames after it
        conn.engine.next_event()  # END_OF_MESSAGE: an upgrade request has no body
        self.proto = library(head, max_size)
        self.denial = Denial(conn.engine)  # the app's own HTTP answer to the handshake, if it gives one
        self.connected = False  # websocket.connect delivered
        self.accepted = False
        self.closed = self.proto.refused  # a close was sent or received: no more messages either way
        self.status = 400 if self.proto.refused else 0  # the handshake's answer, for the access log
        self.close_code = ABNORMAL
        self.bytes_in = self.bytes_out = 0  # message payload, for the access log
        self.largest = 0  # the largest message (or part of one) it held, in bytes
        self._message = bytearray()  # the pieces of a message so far
        self._events: Iterator[Event] | None = None  # the library's events, taken one at a time
        self._pending = bytearray()  # what the client sent that the library has not been given yet
        self._eof_given = False  # the library was told that the client closed its side
        self._turn_began = time.perf_counter()  # when this session last let the loop run
        self._piece = FEED_MAX  # the next piece's size
        # Its keepalive: pings from the accept on, each deadline in the worker's schedule, which its beat looks at
        # (keepalive()); None: no pings.
        self.pinger = Pinger(ping_interval, ping_timeout)
        self.schedule = schedule
        self.proto.on_pong = self._pong
        # The header fields of the library's answer to the handshake (a 101, or a refusal), for the access log.
        self._answer_fields: list[tuple[str, str]] = []
        self._answer()  # a refused handshake's 400
        conn.feed = self._feed

    def _feed(self, data: bytes) -> None:
        """The client's bytes, on the loop's reader: kept for receive(), which parses them in pieces."""
        if self.closed:
            return  # the session is over: what the client still sends is dropped
        self.pinger.heard = True  # the client is there, whether or not the app parses what it sent
        self._pending += data
        if len(self._pending) > READ_HIGH or not self.conn.writable:
            self.conn.pause_reading()  # until the app takes what came, or the client what went

    def _give_piece(self) -> None:
        """The library's next piece of input, or the client's EOF."""
        if self._pending:
            piece = bytes(self._pending[:self._piece])
            del self._pending[:self._piece]
        else:
            piece, self._eof_given = b"", True
        self.proto.receive_data(piece)
        self._flush()  # what the library answers by itself (websockets answers a ping as it parses it)

    @property
    def _turn_spent(self) -> bool:
        return time.perf_counter() - self._turn_began >= TURN_SECONDS

    async def _next_turn(self) -> None:
        """Let the loop run the worker's other connections before this one parses more."""
        if time.perf_counter() - self._turn_began > 2 * TURN_SECONDS:
            self._piece = max(FEED_MIN, self._piece // 2)  # it overran its turn: tiny frames
        await asyncio.sleep(0)
        self._turn_began = time.perf_counter()

    def _flush(self) -> bytes:
        """What the library has to send goes out; returns it."""
        out = self.proto.take_output()
        if out:
            self.conn.write(out)
        return out

    def _answer(self) -> None:
        """_flush, for the library's answer to the handshake: its header fields are kept for the access log."""
        if out := self._flush():
            self._answer_fields = head_fields(out)

    @property
    def response_headers(self) -> list[tuple[str, str]]:
        """The header fields of the handshake's answer (the access log's ``{name}o`` atoms): the library's (a 101,
        a refusal), else the app's denial response's from its start on."""
        return self._answer_fields or self.denial.headers

    # -- receive

    async def receive(self) -> dict[str, Any]:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        while True:
            message = None if self.closed else self._next_message()
            if message is not None:
                self._flush()  # the pongs the library wrote while parsing up to this message
                return message
            parsing = self._events is not None  # this turn's time ran out before its events did
            # Frames are parsed once the app has accepted: an app that waits for a message before it
            # answers the handshake waits, and what the client sends meanwhile stays in _pending, whose
            # reading pauses at READ_HIGH.
            more = self.accepted and (bool(self._pending) or (self.conn.eof and not self._eof_given))
            if (parsing or more) and not (self.closed or self.conn.gone):
                if self._turn_spent:
                    await self._next_turn()
                elif not parsing:
                    self._piece = min(FEED_MAX, self._piece * 2)  # the last one parsed within the turn
                if more and self._events is None:
                    self._give_piece()
                continue
            if self.closed or self.conn.eof or self.conn.gone or self.conn.closed:
                self.closed = True
                return {"type": "websocket.disconnect", "code": self.close_code}
            if not self.conn.writable:
                await self.conn.drain()  # the pongs (and close replies) a client leaves unread stop here
            if not self.conn.gone:
                await self.conn.wait_input()
            self._turn_began = time.perf_counter()

    def _next_message(self) -> dict[str, Any] | None:
        """The app's next message from what the library parsed; None when it needs more input, or when
        this turn's events are spent (``_events`` is kept: the next call goes on from there)."""
        if self._events is None:
            self._events = self.proto.events()
        for event in self._events:
            if isinstance(event, Closed):
                self.closed = True
                self.close_code = event.code
                # The message in pieces so far goes now, not with the session: websockets closes with 1009 itself
                # once one passes ws_max_size, and the session, in a cycle with its connection, waited for the
                # cyclic collector with it (16 MiB more in the worker for each such client until then).
                self._message = bytearray()
                return {"type": "websocket.disconnect", "code": event.code, "reason": event.reason}
            size = len(self._message) + len(event.data)
            self.largest = max(self.largest, size)
            if size > self.max_size:
                return self._fail(MESSAGE_TOO_BIG, f"message larger than ws_max_size ({self.max_size} bytes)")
            if event.last and not self._message:
                data = event.data  # a message in one piece, as most are: no copy
            else:
                self._message += event.data
                if not event.last:
                    if self._turn_spent:
                        return None  # this session's turn is over: the rest of the events wait for the next
                    continue
                data, self._message = bytes(self._message), bytearray()
            self.bytes_in += len(data)
            if not event.text:
                return {"type": "websocket.receive", "bytes": data}
            try:
                return {"type": "websocket.receive", "text": data.decode()}
            except UnicodeDecodeError:
                return self._fail(INVALID_DATA, "a text message that is not UTF-8")
        self._events = None
        self._flush()
        return None

    def _fail(self, code: int, reason: str) -> dict[str, Any]:
        """The client broke a rule: close with ``code``, and the app hears of it as a disconnect."""
        flood.WORKER.log(flood.WS_PROTOCOL, log, logging.INFO, "conn %d: websocket closed with %d: %s",
                         self.conn.msg.conn_id, code, reason)
        self._end(code, reason, code)
        self._message = bytearray()
        self._events = None
        return {"type": "websocket.disconnect", "code": code, "reason": reason}

    def _end(self, code: int, reason: str, ends_as: int) -> None:
        """Send the client a close frame with ``code``: the session is over, ``ends_as`` for the app and the books."""
        self.proto.close(code, reason)
        self._flush()
        self.closed = True
        self.close_code = ends_as

    # -- keepalive

    def keepalive(self, now: float, at: float) -> None:
        """A deadline of its keepalive, ``at``, has come, on the worker's beat: a ping goes, or the client that
        answered none within ws_ping_timeout is taken for gone."""
        pinger = self.pinger
        if at != pinger.due_at or self.closed or self.conn.gone:
            return  # its deadline moved (a pong came), whose new one is in the schedule; or it ended meanwhile
        what = pinger.at(now)
        self._plan()
        if what is PING:
            self.proto.send_ping(pinger.payload)
            self._flush()
            if len(self._pending) <= READ_HIGH:
                # Read for its answer, even for an app that never receives (only its receive() reads otherwise),
                # and behind output the client is slow to take: its bytes say it is there, parsed or not. _feed
                # pauses again after one read while that output waits, so the bounds hold.
                self.conn.resume_reading()
        elif what is GONE:
            log.info("conn %d: websocket: no answer to a ping within ws_ping_timeout (%gs): the client is taken "
                     "for gone", self.conn.msg.conn_id, pinger.timeout)
            # As websockets and uvicorn do: a close frame with 1011, which the kernel sends if it can, and the
            # session ends as one whose client vanished (1006); nothing more waits for that client.
            self._end(UNEXPECTED, "keepalive ping timeout", ABNORMAL)
            self._pending.clear()
            self.conn.abandon()
            # Closed now, whether or not the app returns (one that neither receives nor sends runs on, as under
            # uvicorn, until its worker stops): the fd is the client's last trace here, and a live one gets its FIN.
            self.conn.close()

    def _pong(self, payload: bytes) -> None:
        was = self.pinger.due_at
        if self.pinger.pong(payload) and self.pinger.due_at != was:
            self._plan()  # the next ping comes before the answer's deadline: else that entry stands for it

    def _plan(self) -> None:
        """Its keepalive's next deadline, if it has one, into the worker's schedule."""
        if self.pinger.due_at and self.schedule is not None:
            self.schedule.add(self.pinger.due_at, self)

    # -- send

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind in DENIAL_MESSAGES or self.denial.state is not IDLE:
            await self._deny(kind, message)
            return
        if kind == "websocket.accept":
            if self.accepted or self.closed:
                raise InvalidResponse("websocket.accept twice, or after close")
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", ())]
            self.proto.accept(message.get("subprotocol"), headers)
            self._answer()
            self.accepted = True
            self.status = 101
            self.pinger.start(time.monotonic())
            self._plan()
            if self.tally is not None:
                self.tally.ws_opened(self.conn.msg.listener)
            return
        if kind == "websocket.close":
            if not self.accepted:
                if not self._unanswerable():
                    self._refuse(403)  # RFC 6455 4.2.2: the handshake is refused
            elif not self.closed:
                # Checked before the session counts as closed: a bad one is the app's error (logged, and
                # closed with 1011), where the library's refusal came after and the client got no frame.
                code, reason = _close_frame(message)
                self._end(code, reason, code)
            return
        if kind != "websocket.send":
            raise InvalidResponse(f"unexpected ASGI message {kind!r} on a websocket")
        if not self.accepted:
            raise InvalidResponse("websocket.send before websocket.accept")
        if self.closed or self.conn.gone:
            raise ClientDisconnected(f"conn {self.conn.msg.conn_id}: the websocket is closed")
        data = message.get("bytes")
        if data is not None:  # with text too, bytes win, as uvicorn has it
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise InvalidResponse(f"websocket.send: 'bytes' must be bytes, not {type(data).__name__}")
            data = bytes(data)
            self.bytes_out += len(data)
        else:
            data = message.get("text")
            if type(data) is not str:  # str() of it sent b'...' or 'None' as text
                raise InvalidResponse(f"websocket.send: needs 'bytes' (bytes) or 'text' (str), not 'text' of "
                                      f"{type(data).__name__}")
            self.bytes_out += len(data.encode())
        self.proto.send_message(data)
        self._flush()
        if not self.conn.writable:
            await self.conn.drain()

    async def _deny(self, kind: str, message: dict[str, Any]) -> None:
        """A message of the denial response, or any message once one has begun (the app's error)."""
        denial = self.denial
        if denial.state is IDLE and (self.accepted or self.status):
            raise InvalidResponse(f"{kind} after the handshake was answered ({self.status}): a denial response "
                                  "comes instead of websocket.accept or websocket.close")
        # Refused once the client is gone, or sockact closes the connection (a drain): not when the client
        # only half-closed (a receive() said websocket.disconnect), as an HTTP response goes on to a client
        # that still reads.
        if not denial.ended and (self.conn.gone or self.conn.closing_at):
            raise ClientDisconnected(f"conn {self.conn.msg.conn_id}: the client has gone")
        data = denial.send(kind, message)
        # The app's status from its start on, as an HTTP response's: the line says it even when the head
        # never went out (the client left before the body came).
        self.status = denial.status
        if not data:
            return  # its start: the head waits for the body
        self.conn.write(data)
        # Its body bytes, for the access log, as they go: the session may be over (the client left, seen by a
        # receive(); the worker drains) before the app's end.
        self.bytes_out = self.conn.engine.body_sent
        if denial.ended:
            self._said_short()
            # The session is over: what the client sends from here on is dropped, the app's next receive()
            # says websocket.disconnect, and the connection closes once the response is out.
            self.closed = True
            self._pending.clear()
            self.conn.close(linger=True, timeout=self.conn.site.io_timeout)
        elif not self.conn.writable:
            await self.conn.drain()

    def _said_short(self) -> None:
        if missed := length_missed(self.conn.engine):
            log.error(missed[0], self.conn.msg.conn_id, *missed[1:], self._line())

    def _line(self) -> str:
        return quoted_request_line(self.conn.engine.request)

    def _refuse(self, status: int) -> None:
        self.closed = True
        self.status = status
        self.proto.reject(status)
        self._answer()

    def end(self, failed: bool) -> None:
        """The app returned (or raised): end the session the way the app left it. As an HTTP call's end: a
        client that only half-closed (its receive() said websocket.disconnect) is still answered, one that
        has gone is not."""
        denial = self.denial
        if denial.begun and not denial.ended:  # the client sees it cut short (its framing says so)
            self.closed = True
            if not (failed or self.conn.gone):
                log.error("conn %d: the application returned in the middle of its denial response to %s",
                          self.conn.msg.conn_id, self._line())
        elif self.accepted:
            if not self.closed:
                code = UNEXPECTED if failed else 1000  # RFC 6455 7.4.1
                self._end(code, "", code)
        elif not (denial.ended or self._unanswerable()):
            self._refuse(500)  # the handshake got no answer (or a denial's start, and no body)
        else:
            self.closed = True

    @property
    def _refused(self) -> bool:
        """The handshake was refused: a 400 (the library's) or a 403 (the app's close), not a denial's status."""
        return self.status in (400, 403) and self.denial.state is IDLE

    def _unanswerable(self) -> bool:
        """The handshake, not accepted, is refused already or cannot be answered: the client is gone, or
        sockact closes the connection (a drain)."""
        return self._refused or self.conn.gone or bool(self.conn.closing_at)

    def count_end(self) -> None:
        """Count how the session ended, once the app is done with it (the metrics)."""
        if self.tally is not None:
            end = ws_end(self.accepted, self.close_code, self.denial.begun, self._refused,
                         self.conn.gone or self.conn.eof)
            self.tally.ws_ended(self.conn.msg.listener, end,
                                time.perf_counter() - self.started if self.accepted else None)

    def close_going_away(self) -> None:
        """The worker drains: close with 1001, and the app's next receive() says so."""
        if self.closed:
            return
        if self.accepted:
            self.proto.close(GOING_AWAY)
            self._flush()
        self.closed = True
        self.close_code = GOING_AWAY
        self.conn.close()


def release_memory(ws: WebSocket) -> None:
    """After a session that held a large message: give the allocator's free memory back to the system.
    glibc keeps freed heap memory, and raises its mmap threshold after a large buffer is freed, so the
    next large ones stay in the heap too; without this, a worker stays at its peak after the session.
    Sessions end rarely next to requests, and only those with a message over TRIM_AFTER pay for it."""
    if ws.largest < TRIM_AFTER:
        return
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to ask


async def serve_websocket(conn: AsgiConnection, scope: dict[str, Any], app: Any,
                          sessions: dict[AsgiConnection, WebSocket], library: Callable[[bytes, int], WsProtocol],
                          max_size: int, tally: TallyWriter | None, ping_interval: float = 0.0,
                          ping_timeout: float = 0.0, schedule: Schedule[WebSocket] | None = None) -> WebSocket:
    """Run the app for one WebSocket until it returns; the caller closes the connection. ``tally``: where the
    session is counted, if the metrics are kept; a handshake the library refused never reached the app, and
    is not. ``ping_interval`` and ``ping_timeout``: its keepalive (0: no pings; no wait for their answer), whose
    deadlines go into ``schedule``, the worker's."""
    ws = WebSocket(conn, scope, library, max_size, tally, ping_interval, ping_timeout, schedule)
    if ws.closed:
        return ws  # the handshake was refused; the app never hears of it
    sessions[conn] = ws
    failed = False
    try:
        await app(scope, ws.receive, ws.send)
    except ASGI_APP_FAILURES as exc:
        failed = True
        if (ws.closed or conn.gone) and not isinstance(exc, InvalidResponse):
            log.debug("conn %d: the app stopped after its websocket closed: %r", conn.msg.conn_id, exc)
        else:
            log.error("conn %d: application error on websocket %r", conn.msg.conn_id, scope["path"], exc_info=exc)
    finally:
        sessions.pop(conn, None)
    ws.end(failed)
    ws.count_end()
    return ws
