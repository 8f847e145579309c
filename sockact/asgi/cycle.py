"""One HTTP request-response cycle of an ASGI app: the ``receive`` and ``send`` it is given.

The request body comes from the connection's engine as the app asks for it (http.request
with more_body, 100 Continue sent on the first ask); once the body is read and the
response is sent, or the client has gone, ``receive`` answers http.disconnect. Once the
client has gone, ``send`` raises ClientDisconnected (an OSError, as ASGI 2.4 asks), so an
app streaming an endless response stops. The response head waits for the first body
message, so a whole body given at once gets a Content-Length; the engine decides framing
and persistence, as for WSGI. Headers pass the same checks as a WSGI app's
(http.responses); hop-by-hop fields are the server's and are dropped, except
"Connection: close". Trailers are not offered (no "http.response.trailers" extension): an
app that asks for them gets a 500 that says so. "http.response.pathsend" is offered: the
body is a file, given by its path.

Each send waits while the connection's unsent bytes are over conn.WRITE_HIGH, and a pipelined
request starts only once the last response is out (conn.drain), so a client that never reads
holds one response in memory, until send_timeout lets it go.

Outcomes: an exception before the response starts is a 500, unless the client has left (the
app's send to a gone client raised): then nothing is written, and no 5xx is counted. After the
response starts, the connection is closed, so the client sees the response cut short, which is
the truth. A body the client cut short (a half-close mid-body) is a 400, as for WSGI. A client that
half-closes after its request has only said it sends no more: it is answered (and its pipelined
requests before the EOF too); an app that waits in receive() for the client to go is told
http.disconnect at the EOF, as a client's close() sends nothing else."""

from __future__ import annotations

import asyncio
import functools
import http
import logging
import os
import stat
import time
from collections.abc import Awaitable
from typing import Any, Protocol

from sockact.asgi.conn import AsgiConnection
from sockact.errors import APP_FAILURES, InvalidResponse, ProtocolError
from sockact.http.dates import http_date
from sockact.http.events import END_OF_MESSAGE, NEED_DATA, Data, Request
from sockact.http.limits import BODY_MIN_RATE, DRAIN_LIMIT
from sockact.http.logline import quoted_request_line
from sockact.http.responses import HOP_BY_HOP, length_missed, remembering, validate_response
from sockact.logs import flood

log = logging.getLogger("sockact.http")

# An app's call or session that ends in one of these failed: sockact cancels none, so a cancellation
# is the app's own doing too.
ASGI_APP_FAILURES: tuple[type[BaseException], ...] = (*APP_FAILURES, asyncio.CancelledError)

DISCONNECT = {"type": "http.disconnect"}


class ClientDisconnected(OSError):
    """send() after the client went away: ASGI spec 2.4 asks for an OSError, so a streaming app stops."""

PATHSEND_PIECE = 256 * 1024  # bytes of a file read at a time for http.response.pathsend


class Ends(Protocol):
    """What a runner does around each call, in the call's own task (HttpCycle.run): no second coroutine."""

    def begin_call(self, conn: AsgiConnection) -> bool:
        """The call's task begins; False: it ends at once, its app not called (its connection went back)."""
        ...

    def end_call(self, conn: AsgiConnection, cycle: HttpCycle, keep: bool) -> bool:
        """The call is over (``keep``: its connection persists); the answer is the call's task's."""
        ...


class _Alone:
    """The ends of a cycle no runner carries (the unit tests'): the task's answer is whether it persists."""

    @staticmethod
    def begin_call(conn: AsgiConnection) -> bool:
        return True

    @staticmethod
    def end_call(conn: AsgiConnection, cycle: HttpCycle, keep: bool) -> bool:
        return keep


_ALONE = _Alone()


class HttpCycle:
    """The HTTP calls of one connection, one at a time: made for its first request, and begun anew
    (``begin``) for each of the next ones. Each call is a generation (``gen``): the receive() and send()
    it gives its app are that generation's, so one that an app's task kept past its call hears
    http.disconnect, or is refused, and never reaches a later request."""

    __slots__ = ("answered", "body_deadline", "body_done", "complete", "conn", "ends", "engine", "gen", "headers",
                 "request", "scope", "started", "started_at", "status", "status_line", "stopping")

    def __init__(self, conn: AsgiConnection, ends: Ends = _ALONE) -> None:
        self.conn = conn
        self.engine = conn.engine
        self.ends = ends
        self.gen = 0  # the call's generation: one more at the end of each call

    def begin(self, request: Request, scope: dict[str, Any], stopping: bool, now: float,
              started_at: float = 0.0) -> None:
        """A call for ``request``, whose head was read at ``now`` (time.monotonic()); ``started_at``: then, by
        time.perf_counter(), for its duration (0.0: its duration is not wanted)."""
        self.request = request
        self.scope = scope
        self.stopping = stopping  # answer with Connection: close
        self.status = 0
        self.status_line = ""  # "200 OK": the status as the engine writes it
        self.headers: list[tuple[str, str]] | None = None  # from http.response.start, checked
        # started: the head is on its way; complete: the whole response is; answered: sockact answered
        # in the app's stead (an error), and the app's sends are dropped.
        self.started = self.complete = self.answered = self.body_done = False
        self.started_at = started_at  # for the access log and the metrics
        # The body must come within io_timeout of its head, as a WSGI body_buffer body must, plus a second
        # per BODY_MIN_RATE bytes: a client that trickles it holds its connection (an fd) no longer.
        self.body_deadline = now + self.conn.site.io_timeout

    async def run(self, app: Any) -> bool:
        """The call's task, whole, as one coroutine: the runner's start (``Ends.begin_call``), the app's call and
        the response's end, then the runner's end (``Ends.end_call``), whose answer this is. Without a runner's,
        True when the connection persists."""
        conn = self.conn
        ends = self.ends
        if not ends.begin_call(conn):
            return False
        # This call's receive() and send(), which ask for its generation: kept past the call (by a task
        # of the app's), they reach no later one on the connection, whose calls this object serves too.
        gen = self.gen
        keep = False
        # send(), made here with its body, not as a lambda that calls a method: a frame less for each
        # message, two a request (callgrind, Python 3.11). ASGI asks for an awaitable callable, not a coroutine
        # function: a message that needs no wait (most, and every one of a response given whole) is carried
        # out here, and the answer is SENT, done at once; one that must wait for the client gets the coroutine
        # that waits. An app's error raises here, at the call, so still at its ``await send(...)``.
        def send(message: dict[str, Any]) -> Awaitable[None]:
            kind = message["type"]
            if gen != self.gen or self.answered or self.conn.gone:
                self._refuse(gen, kind)
                return SENT
            if kind == "http.response.start":
                if self.headers is not None:
                    raise InvalidResponse("http.response.start sent twice")
                if message.get("trailers"):
                    raise InvalidResponse("http.response.start asks for trailers, which sockact does not send "
                                          "(no 'http.response.trailers' extension in the scope)")
                self.status, self.status_line, self.headers = check_start(message.get("status"),
                                                                          message.get("headers", ()))
                return SENT
            conn = self.conn
            if (kind == "http.response.body" and not self.started and self.headers is not None
                    and not message.get("more_body", False)):
                # The whole body at once, the common answer: the engine keeps its head but the Date.
                body = message.get("body", b"")
                if type(body) is not bytes:
                    body = body_bytes(body)
                self.started = self.complete = True
                head, data = self.engine.whole_response(self.status_line, self.headers, body, close=self.stopping)
                if not self.engine.keep_alive:  # a body short of its Content-Length or past it ends it; rare (a
                    self._said_short()          # plain attribute: length_left, a property, is a call each)
                if conn.waiting:  # most often none, and wake() not called
                    conn.wake()  # a receive() waiting for the client to leave now answers http.disconnect
                backlog = conn.write(head + data)
                self._whole()
                return conn.drain() if backlog else SENT
            if kind == "http.response.pathsend":
                return self._send_path(message)
            if kind != "http.response.body":
                raise InvalidResponse(f"unexpected ASGI message {kind!r}")
            if self.headers is None:
                raise InvalidResponse("http.response.body before http.response.start")
            if self.complete:
                raise InvalidResponse("http.response.body after the response ended")
            body = body_bytes(message.get("body", b""))
            more = message.get("more_body", False)
            engine = self.engine
            parts = []
            if not self.started:
                self.started = True
                parts.append(engine.start_response(self.status_line, self.headers, close=self.stopping,
                                                   date=http_date(), whole=None if more else len(body)))
            if body:
                parts.append(engine.send_data(body))
            if not more:
                parts.append(engine.end_response())
                self._said_short()
                self.complete = True
                conn.wake()  # a receive() waiting for the client to leave now answers http.disconnect
            backlog = conn.write(*parts)
            if not more:
                self._whole()
            return conn.drain() if backlog else SENT
        try:
            try:
                # A lambda, not a partial: a partial costs more to make than a lambda's frame to run.
                await app(self.scope, lambda: self._receive(gen), send)
            except ASGI_APP_FAILURES as exc:
                if self.answered or self.client_left:
                    log.debug("conn %d: the app stopped after the client left: %r", conn.msg.conn_id, exc)
                else:
                    log.error("conn %d: application error on %s", conn.msg.conn_id, self.line(), exc_info=exc)
                self._fail()
            else:
                if self.answered or not self.complete:
                    if not (self.answered or self.started):
                        # Once the client has closed, a long-poll app's return without an answer is its
                        # due, no error (nor for uvicorn): said at info.
                        # A client that connects and leaves, again and again, makes one each: limited.
                        said = (functools.partial(flood.WORKER.log, flood.NO_RESPONSE, log, logging.INFO)
                                if conn.eof or self.client_left else log.error)
                        said("conn %d: the application returned without a response to %s", conn.msg.conn_id,
                             self.line())
                        self._fail()
                    elif not (self.answered or self.client_left):  # else answered in the app's stead
                        # The client gets a cut connection (its framing tells it so); the operator, this line.
                        log.error("conn %d: the application returned in the middle of its response to %s",
                                  conn.msg.conn_id, self.line())
                # Most often the request had no body, or it is all read: nothing is left to drain.
                elif (self.engine.keep_alive and not conn.gone
                      and (self.body_done or self.engine.body_done() or await self._drain())):
                    self.body_done = True  # all of it is read
                    # A pipelined request waits until this response is out: a client that sends and never
                    # reads holds one response in memory, not one per request (a close flushes within its
                    # own deadline).
                    if conn.out:  # backlogged, without the property's call
                        await conn.drain(0)
                    keep = not conn.gone
        finally:
            self.gen = gen + 1
            goes_on = ends.end_call(conn, self, keep)
        return goes_on

    @property
    def client_left(self) -> bool:
        """A send failed, or the client reset: a client that only half-closed still reads, and is answered."""
        return self.conn.gone

    def line(self) -> str:
        return quoted_request_line(self.request)

    def _fail(self) -> None:
        # A client that has left gets no 500 (nor counts one): the app's failure was to send to it.
        if not self.started and not self.answered and not self.client_left:
            self.answer(500)

    def answer(self, status: int) -> None:
        """sockact's own plain-text error response; the connection then closes."""
        self.answered = True
        self.status = status
        self.conn.wake()  # a receive() waiting in another task now answers http.disconnect
        if not self.conn.gone:
            self.conn.write(self.engine.error_response(status, http_date()))

    # -- receive

    async def _receive(self, gen: int) -> dict[str, Any]:
        """receive() of the call ``gen``: http.disconnect once that call is over."""
        while not (self.body_done or self.answered or self.conn.gone) and gen == self.gen:
            try:
                event = self.engine.next_event()
            except ProtocolError as exc:
                # A bad body, or one the client stopped in the middle of (a half-close): a 400-class
                # answer, as WSGI gives, which a client that only half-closed can still read.
                log.debug("conn %d: bad request body: %s", self.conn.msg.conn_id, exc)
                if not self.started:
                    self.answer(exc.status)
                break
            if isinstance(event, Data):
                self.body_deadline += len(event.data) / BODY_MIN_RATE
                more = self.engine.unread_body != 0
                if not more:
                    self.engine.next_event()  # END_OF_MESSAGE: say so with this piece
                    self.body_done = True
                self.conn.resume_reading()
                return {"type": "http.request", "body": event.data, "more_body": more}
            if event is END_OF_MESSAGE:
                self.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if event is not NEED_DATA:
                self.body_done = True  # PAUSED: the body was read already
                break
            interim = self.engine.send_continue()
            if interim:
                self.conn.write(interim, interim=True)
            left = self.body_deadline - time.monotonic()
            if left <= 0:
                flood.WORKER.log(flood.SLOW_BODY, log, logging.INFO, "conn %d: the request body of %s came slower "
                                 "than %d bytes/s after the first %gs (timeout): 408", self.conn.msg.conn_id,
                                 self.line(), BODY_MIN_RATE, self.conn.site.io_timeout)
                if not self.started:
                    self.answer(408)
                break
            await self.conn.wait_input(left, lose=False)
        # The body is read (or never will be): the next message is the client leaving, or the response
        # ending. A half-close ends the wait too, since a FIN is all a client's close() sends: a
        # long-poll app learns that its client closed, while its sends still reach a client that
        # only half-closed and still reads.
        while (not (self.complete or self.answered or self.conn.gone or self.conn.eof or self.conn.closed)
               and gen == self.gen):
            await self.conn.wait_woken()
        return DISCONNECT

    # -- send

    def _said_short(self) -> None:
        if missed := length_missed(self.engine):
            log.error(missed[0], self.conn.msg.conn_id, *missed[1:], self.line())

    def _refuse(self, gen: int, kind: str) -> None:
        """A send that goes nowhere: refused (raises) once its call is over, or once the client has gone; dropped
        (returns) when sockact answered in the app's stead."""
        if gen != self.gen:
            raise InvalidResponse(f"send() of a call that is over: {kind!r} dropped")
        if not self.answered:
            raise ClientDisconnected(f"conn {self.conn.msg.conn_id}: the client has gone")

    async def _send_path(self, message: dict[str, Any]) -> None:
        """http.response.pathsend: the whole body is the file at ``path``, read in pieces as the client takes them."""
        if self.headers is None or self.started:
            raise InvalidResponse("http.response.pathsend must follow http.response.start, and be the whole body")
        path = message.get("path")
        if not isinstance(path, str) or not os.path.isabs(path):
            raise InvalidResponse(f"http.response.pathsend: path must be an absolute path, not {path!r}")
        # A missing file raises here: a 500, since nothing is sent yet. Not blocking: a FIFO's open() waits
        # for a writer, on the loop every connection of the worker shares.
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):  # /dev/zero, a FIFO: no size, no end
                raise InvalidResponse(f"http.response.pathsend: {path!r} is not a regular file")
            self.started = True
            self.conn.write(self.engine.start_response(self.status_line, self.headers,
                                                       close=self.stopping, date=http_date(), whole=st.st_size))
            left = st.st_size  # a file that grows meanwhile is sent as it was; one that shrinks, short, and said
            while left > 0 and not self.conn.gone:
                piece = fh.read(min(left, PATHSEND_PIECE))
                if not piece:
                    break
                left -= len(piece)
                self.conn.write(self.engine.send_data(piece))
                await self.conn.drain()
        self.conn.write(self.engine.end_response())
        self._said_short()
        self.complete = True
        self._whole()
        self.conn.wake()

    def _whole(self) -> None:
        """The response's last byte is written (perhaps still in the connection's buffers): on a connection
        that persists, its request read whole (else what is left of it would reach another worker as a
        request of its own), the call's line takes its length. A worker that dies from here on leaves a
        client with the whole response, once the kernel counts it written: another worker serves its next."""
        line = self.conn.call_line
        if self.engine.keep_alive and (self.body_done or self.engine.body_done()):
            # Kept: run() looks again once the app returns, and the engine's answer stays (a receive() now
            # would get PAUSED, the body read, and say http.disconnect all the same).
            self.body_done = True
            if line is not None:
                line.whole(self.conn.written)
            if self.engine.unparsed():  # not ``buffered``: a property's call costs twice a method's (Python 3.11)
                self.conn.read_behind()  # a pipelined request waits behind it, in memory

    async def _drain(self) -> bool:
        """Read and drop what is left of the request body, if small; True if that worked."""
        dropped = 0
        while not self.body_done and dropped <= DRAIN_LIMIT:
            if self.conn.eof or self.conn.gone:
                return False
            message = await self._receive(self.gen)
            if message["type"] != "http.request":
                return False
            dropped += len(message["body"])
        return self.body_done


class _Sent:
    """An awaitable that is done at once, and no coroutine: ``await`` gets its ``__await__``'s iterator,
    empty, so None, and no frame runs (the empty tuple's bound ``__iter__`` is no descriptor: it is called
    without the instance)."""

    __slots__ = ()
    __await__ = ().__iter__


SENT: Awaitable[None] = _Sent()  # type: ignore[assignment]  # __await__ is the tuple's: typed as an iterator of objects


def body_bytes(body: Any) -> bytes:
    """A response body message's body as bytes (an HTTP response's, or a WebSocket's denial response's);
    anything else is the app's error."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise InvalidResponse(f"a response body must be bytes, not {type(body).__name__}")
    return bytes(body)


def _check(status: Any, headers: Any) -> tuple[int, str, list[tuple[str, str]]]:
    if type(status) is not int or not 100 <= status <= 999:
        raise InvalidResponse(f"invalid response status {status!r}")
    fields = []
    for item in headers:
        try:
            name, value = item
            name, value = bytes(name).decode("latin-1"), bytes(value).decode("latin-1")
        except (TypeError, ValueError):
            raise InvalidResponse(f"response header {item!r} is not a pair of bytes") from None
        lower = name.lower()
        if lower in HOP_BY_HOP and not (lower == "connection" and value.strip().lower() == "close"):
            continue  # framing and persistence are the engine's
        fields.append((name, value))
    line, checked = validate_response(_status_line(status), fields)
    return status, line, checked


def _copy(headers: Any) -> list[Any] | None:
    """Checked headers as bytes, which no app can change in place, each pair of the app's own kind (a
    list of lists is equal only to one); None (never equal to a list): not kept."""
    if type(headers) is not list:
        return None
    return [tuple(map(bytes, item)) if type(item) is tuple else list(map(bytes, item)) for item in headers]


# A response start's (status, headers), checked: an HTTP response's, or a WebSocket's denial response's. An app
# sends the same start again and again: the last one checked is remembered (responses.remembering).
check_start = remembering(_check, _copy)


@functools.lru_cache(maxsize=64)
def _status_line(status: int) -> str:
    """"200 OK" for 200; a status without a registered phrase gets "Unknown"."""
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"
