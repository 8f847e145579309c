"""One client connection on the worker's asyncio loop: its fd, read and write buffers, and engine.

The loop reads the socket when it is readable (``add_reader``) and feeds the HTTP engine,
or a WebSocket's protocol once one is open; what is written in one turn of the loop goes out at
the turn's end, every connection's together (``Batch``), and what the kernel does not take then
is buffered, and ``drain`` makes a writer wait while more than
WRITE_HIGH is buffered; a client that takes no byte for the site's ``send_timeout`` meanwhile is
let go, with one line in the log. Reading pauses while more than READ_HIGH of a request body waits
for the app (backpressure). The socket stays in blocking mode and every call passes
MSG_DONTWAIT, so it can be handed back to the supervisor as it came.

Nothing here decides what a connection does next; the runner does (runner.py), and a AsgiConnection's state
(worker/owner.py's Owned) moves only there.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import socket
import threading
import time
from asyncio.selector_events import BaseSelectorEventLoop
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sockact.asgi.scope import Scopes
from sockact.http import Site
from sockact.http.engine import Connection
from sockact.http.limits import LINGER_BYTES, LINGER_SECONDS, RECV_SIZE
from sockact.ipc import handoff
from sockact.ipc.scoreboard import SlotWriter
from sockact.logs import flood
from sockact.logs.access import Entry
from sockact.worker.channel import call_line
from sockact.worker.connstates import CALL, HANDED, HEAD, IDLE, PREFACE, QUEUED, ConnState
from sockact.worker.owner import Owned

if TYPE_CHECKING:
    from sockact.asgi.cycle import HttpCycle

log = logging.getLogger("sockact.http")

WRITE_HIGH = 64 * 1024  # bytes buffered for the client before a writer waits (uvicorn's high-water mark)
READ_HIGH = 256 * 1024  # bytes of body buffered for the app before the loop stops reading



class Batch:
    """The connections written to in this turn of the loop: their output goes out at the turn's end.

    Reading every connection that is readable (and running each one's call, which most often ends
    at once) before sending any answer is the order an asyncio protocol's tasks give, the Python
    floor's; on loopback it costs the kernel less than a send right after each read (measured: 10 to
    15% of a keep-alive request's CPU). Nothing waits past the turn, except behind an app that blocks
    the loop: then the monitor sends it (runner.py). Only with eager tasks (Python 3.12+), whose
    first step runs in the reader's callback: without them a task's first step comes after every
    read of its turn, and writing at once gives the same order for less."""

    __slots__ = ("_conns", "_lock", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, lock: threading.Lock) -> None:
        self._loop = loop
        self._lock = lock  # the runner's: the monitor may be sending for a stalled loop that just woke
        self._conns: list[AsgiConnection] = []

    def add(self, conn: AsgiConnection) -> None:
        if not self._conns:
            self._loop.call_soon(self.send)
        self._conns.append(conn)

    def send(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
            for conn in conns:
                conn.push()


class AsgiConnection(Owned):
    def __init__(self, loop: asyncio.AbstractEventLoop, msg: handoff.Message, sock: socket.socket, site: Site,
                 scope: dict[str, Any], on_input: Callable[[AsgiConnection], None], lock: threading.Lock,
                 state: ConnState, now: float, batch: Batch | None = None) -> None:
        super().__init__(msg, site, state, now)
        self.batch = batch  # None: each write goes out at once (the unit tests' connections)
        preface = state is PREFACE
        self.loop = loop
        self.lock = lock  # the runner's: held while the loop reads, so a stall hand-back can take the connection
        self.sock = sock
        self.fd = sock.fileno()
        self.scope = scope  # the connection's scope keys
        # The socket's peer wrote any forwarded fields, so it is the one trusted, or not.
        self.trust = site.trust if site.trust.trusts_peer(msg.peer) else None
        self.scopes = Scopes(scope, self.trust, call_line)  # its requests' scopes, a repeated one's copied
        self.engine = Connection(site.limits)
        # ``preface``: a PROXY header comes first; its bytes gather here until the runner has it whole.
        self.preface = bytearray(msg.data) if preface else None
        if msg.data and not preface:
            self.engine.receive_data(msg.data)
        self.on_input = on_input  # called with new input while no app call owns the connection
        self.feed: Callable[[bytes], None] | None = None  # a WebSocket takes the bytes instead of the engine
        # The scoreboard line of its HTTP call, until a byte of the response is written: then it is told
        # that the response has begun, so a dead worker's client gets no 502 after part of an answer.
        self.call_line: SlotWriter | None = None
        self.answering: SlotWriter | None = None
        # The worker's scoreboard writer whose idle marks name this connection while it rests between two
        # requests (Owned.rest): the runner's (None: the unit tests' connections).
        self.marks: SlotWriter | None = None
        self.remote = ""  # the client as the access log names it, found on its first line
        # Its requests' access-log entry, filled again for each (the runner's, if it logs): what its lines
        # reuse while a request repeats goes with it.
        self.log_entry: Entry | None = None
        self.cycle: HttpCycle | None = None  # its HTTP calls' cycle (the runner's), begun anew for each
        self.eof = False  # the client closed its side
        self.gone = False  # a write failed: the client is gone
        self.closing_at = 0.0  # closing once the output is flushed; the deadline to give up
        self.lingering = False
        self.lingered = 0  # bytes dropped while lingering
        self.watched = False  # the loop watches its fd for input (add_reader)
        # Its output, read as plain attributes on the per-request path (flushed and backlogged are properties,
        # a call each): what the kernel did not take, sent as the socket becomes writable; and what was
        # written in this turn of the loop, sent by the batch at its end.
        self.out = bytearray()
        # The bytes written on it in all, sent or not: a call's scoreboard line takes the count before its
        # response and at its end (``SlotWriter.begin``, ``whole``), so that if the worker dies, the kernel's
        # count tells the supervisor whether the client has the whole response.
        self.written = 0
        self.queued: list[bytes] = []
        self._queued_size = 0
        self._writing = False
        self._sent_at = 0.0  # when the client last took a byte of the buffered output
        # Tasks waiting for input, or for room to write: an app may await receive() in two tasks at
        # once (Starlette listens for the disconnect while it streams), so each waits on its own future.
        self.waiting: list[asyncio.Future[None]] = []  # for input (public: a cycle looks before it wakes)
        self._drained: list[asyncio.Future[None]] = []
        self._context = contextvars.copy_context()  # the loop's own: no request's task has begun yet

    # -- reading

    def read_now(self) -> None:
        """Read what is there (a new connection's first request usually is), then watch the socket while
        it waits for a request. A call that took the request read at once watches it when it waits for
        input (``wait_input``), and the runner when the call is over: a `Connection: close` client's
        socket is never watched at all (with uvloop, a watch begun and ended is six epoll_ctl calls)."""
        self._on_readable()
        if not self.eof and self.state.reading:
            self.resume_reading()

    def resume_reading(self) -> None:
        if not self.watched and not self.eof and self.fd >= 0:
            # In the context the connection came in, whichever task asks: a callback runs in the context
            # it was registered from, and a request's task would pass its context on to the next one's.
            self._context.run(self.loop.add_reader, self.fd, self._readable)
            self.watched = True

    def watch_anew(self) -> None:
        """Watched again from scratch after bytes that leave it waiting for more: uvloop (libuv) reports no reset
        that reached the socket with the bytes just read (a client that sends a few and resets at once), and the
        connection would wait for its deadline, or for good; a new watch sees it, for two epoll_ctl calls.
        asyncio's own loop needs none: its epoll is level-triggered and takes a reset for input, so its reader
        runs again and reads the reset. Not after a whole request: its reset shows at its answer's write."""
        if isinstance(self.loop, BaseSelectorEventLoop):
            return
        self.pause_reading()
        self.resume_reading()

    def pause_reading(self) -> None:
        if self.watched:
            self.loop.remove_reader(self.fd)
            self.watched = False

    def _readable(self) -> None:
        lock = self.lock
        # acquire() and release(), not ``with``: its __enter__ and __exit__ cost 1,100 instructions more
        # (callgrind, Python 3.11), and this runs for every read.
        lock.acquire()
        try:
            if self.state is HANDED:
                self.drop()  # handed back while the loop was blocked: the loop only closes its copy
            else:
                self._on_readable()
        finally:
            lock.release()

    def _on_readable(self) -> None:
        state = self.state
        if (state is IDLE or state is HEAD) and self.marks is not None:
            self.mark[self.mark_at] = 0  # its mark says what it held before this read, no longer true
        try:
            data = self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
            self._lost()  # a reset: the client is gone, not only done sending
        if not data:
            self.eof = True
            self.pause_reading()
        if self.lingering:
            # What the client still sends is dropped up to LINGER_BYTES, as WSGI's linger drops it; then the close's
            # deadline ends it. A client that read nothing of the answer waiting for it and sent on was read at its
            # own pace (a gigabyte a second on loopback) until that deadline, io_timeout.
            self.lingered += len(data)
            if not data:
                self._finish_close()
            elif self.lingered >= LINGER_BYTES:
                self.pause_reading()
            return
        # An app call (HTTP cycle or WebSocket) owns it, or will: the call reads what came.
        called = state is CALL or state is QUEUED  # read above: nothing since moves it (the runner does)
        if self.feed is not None:
            self.feed(data)
        elif self.preface is not None:
            self.preface += data
        else:
            self.engine.receive_data(data)
            if called and self.engine.buffered > READ_HIGH:
                self.pause_reading()  # the app reads slower than the client sends
            elif called and data and self.engine.body_done():
                # Bytes behind a request whose body is whole (pipelined, or a client's last before it resets): an app
                # waiting for http.disconnect (a long poll) would wait for good.
                self.watch_anew()
        if called:
            cycle = self.cycle
            if cycle is not None and cycle.complete and data:
                self.read_behind()
            self.wake()
        else:
            self.on_input(self)

    def read_behind(self) -> None:
        """Its call's response is whole, its request read whole, and bytes wait in the engine: the next
        request's, read and not begun until the call ends. Marked so on the scoreboard (a head whole, or in
        part), so that if the worker dies, its client gets a 502 or a 408 rather than a close."""
        engine = self.engine
        if self.marks is None or not engine.keep_alive or not engine.body_done():
            return  # what waits is the rest of its body, or the connection closes after the response
        buffered = engine.unparsed().lstrip(b"\r\n")
        if buffered:
            whole = b"\r\n\r\n" in buffered or b"\n\n" in buffered
            self.rest(self.written, in_head=not whole, read=whole)

    async def wait_input(self, timeout: float | None = None, lose: bool = True) -> None:
        """Until more input (or EOF) arrives; a client silent for ``timeout`` seconds is taken for gone
        (unless not ``lose``: the caller, whose deadline it was, then answers it)."""
        if self.eof:
            return
        self.resume_reading()
        await self._bounded(self._wait(self.waiting), timeout, lose)

    async def wait_woken(self) -> None:
        """Until ``wake`` (or the connection's loss or close): what a task waits on once no more input can
        come, when a half-closed client may still read its answer."""
        if self.eof:
            await self._wait(self.waiting)
        else:
            await self.wait_input()

    async def _bounded(self, future: asyncio.Future[None], timeout: float | None, lose: bool = True) -> None:
        if timeout is None:
            await future
            return
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            if lose:
                self._lost()  # as a blocking read or write gives up after io_timeout for WSGI

    def wake(self) -> None:
        """Wake the tasks waiting for input, to look again at what they wait for."""
        if self.waiting:  # most often none: a response given whole, with no receive() waiting
            _wake(self.waiting)

    def _wait(self, waiters: list[asyncio.Future[None]]) -> asyncio.Future[None]:
        future = self.loop.create_future()
        waiters.append(future)
        return future

    # -- writing

    def write(self, *parts: bytes, interim: bool = False) -> bool:
        """Send ``parts`` at the end of this turn of the loop (at once: without a batch, an interim response,
        or once over WRITE_HIGH waits), and buffer what the kernel does not take then; dropped once the
        client is gone. ``interim``: a 1xx response, after which the real one has not begun if it goes
        out whole. True when more than WRITE_HIGH waits for the client: a writer waits (``drain``)."""
        if self.gone or self.fd < 0:
            return False
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if not data:
            return False
        self.written += len(data)
        answering = self.answering
        if answering is not None and not interim:
            # Before the first byte goes: a worker killed meanwhile closes, sends no 502.
            answering.responded_uncounted()
            self.answering = None
        batch = self.batch
        if batch is not None and not interim and not self.out:
            if not self.queued:
                batch.add(self)
            self.queued.append(data)
            self._queued_size += len(data)
            if self._queued_size > WRITE_HIGH:
                self.push()  # a large response goes out as it comes, under the writers' backpressure
                return len(self.out) > WRITE_HIGH
            return False
        if self.queued:
            self.push()  # in order: what this turn queued goes first
        self._send(data)
        return len(self.out) > WRITE_HIGH

    def push(self) -> None:
        """Send what this turn queued: the batch calls it at the turn's end, and whatever needs the
        output out, or in order, sooner."""
        if self.queued:
            data = self.queued[0] if len(self.queued) == 1 else b"".join(self.queued)
            self.queued.clear()
            self._queued_size = 0
            if not self.gone and self.fd >= 0:
                self._send(data)

    def _send(self, data: bytes) -> None:
        if not self.out:
            try:
                sent = self.sock.send(data, socket.MSG_DONTWAIT)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._lost()
                return
            if sent == len(data):
                return  # a whole 100 Continue left the response unbegun: a 502 may still follow it
            data = data[sent:]
        if self.answering is not None:
            # An interim response the kernel did not take whole: a 502 after its first part would be garbled.
            self.answering.responded_uncounted()
            self.answering = None
        self.out += data
        if not self._writing:
            self.loop.add_writer(self.fd, self._on_writable)
            self._writing = True

    def unparsed(self) -> bytes:
        """What a new owner must be given with the socket: the PROXY header so far, or the HTTP bytes."""
        return bytes(self.preface) if self.preface is not None else self.engine.unparsed()

    @property
    def flushed(self) -> bool:
        """Nothing of its output waits: neither queued for the turn's end nor refused by the kernel."""
        return not self.out and not self.queued

    @property
    def backlogged(self) -> bool:
        """Output the kernel refused waits for the client to take it."""
        return bool(self.out)

    def push_stalled(self) -> None:
        """On the monitor thread, the loop blocked by an app: send what this turn queued, as far as the
        kernel takes it now. Touches no loop state (a rest stays queued for the batch); only the list,
        which the loop thread leaves alone while it runs the app that blocks it."""
        if not self.queued or self.gone or self.fd < 0 or self.out:
            return
        data = b"".join(self.queued)
        try:
            sent = self.sock.send(data, socket.MSG_DONTWAIT)
        except OSError:
            return  # the loop finds out when it sends the rest
        self.queued[:] = [data[sent:]] if sent < len(data) else []
        self._queued_size = len(data) - sent

    @property
    def writable(self) -> bool:
        """At most WRITE_HIGH waits for the client: a writer may go on."""
        return len(self.out) <= WRITE_HIGH

    async def drain(self, high: int = WRITE_HIGH) -> None:
        """Wait while more than ``high`` is buffered for the client (write backpressure; 0: until all of it
        is out). A client that takes no byte for the site's send_timeout is let go."""
        self.push()
        timeout = self.site.send_timeout or self.site.io_timeout
        while len(self.out) > high and not (self.gone or self.closed):
            waited = time.monotonic()
            try:
                await asyncio.wait_for(self._wait(self._drained), timeout)
            except TimeoutError:
                if self._sent_at > waited:
                    continue  # slow, but taking bytes
                flood.WORKER.log(flood.SLOW_READER, log, logging.INFO, "conn %d: the client took nothing for "
                                 "send_timeout (%gs) with %d bytes waiting for it; closed", self.msg.conn_id, timeout,
                                 len(self.out))
                self._lost()

    def _on_writable(self) -> None:
        try:
            sent = self.sock.send(self.out, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            self._lost()
            return
        del self.out[:sent]
        self._sent_at = time.monotonic()
        if len(self.out) <= WRITE_HIGH:
            _wake(self._drained)
        if not self.out:
            self.loop.remove_writer(self.fd)
            self._writing = False
            if self.closing_at:
                self._after_flush()

    def abandon(self) -> None:
        """The client is taken for gone (a WebSocket's, which answered no ping): what this turn queued goes to
        the kernel if it takes it now, the rest is dropped, and every task waiting on the connection wakes."""
        self.push()
        self._lost()

    def _lost(self) -> None:
        self.gone = True
        self.out.clear()
        self.queued.clear()
        self._queued_size = 0
        if self._writing:
            self.loop.remove_writer(self.fd)
            self._writing = False
        _wake(self._drained)
        _wake(self.waiting)
        if self.closing_at:
            self._finish_close()

    # -- leaving: closed, or handed to the supervisor

    def close(self, linger: bool = False, timeout: float = 5.0) -> None:
        """Close once the output is flushed (within ``timeout``); ``linger``: first read and drop what
        the client still sends, so its kernel does not reset the connection before it reads the answer."""
        if self.closing_at:
            return
        self.closing_at = time.monotonic() + timeout
        self.lingering = linger
        if not linger:
            # Nothing more is read: what the client sent while its answer waited to go out piled up in the engine,
            # unparsed and without bound, until the flush or its deadline (io_timeout).
            self.pause_reading()
        self.wake()
        self.push()
        if not self.out:
            self._after_flush()

    def _after_flush(self) -> None:
        if self.lingering and not self.eof and not self.gone:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
            self.closing_at = min(self.closing_at, time.monotonic() + LINGER_SECONDS)
            self.resume_reading()
            return
        self._end()

    def _end(self) -> None:
        # The supervisor holds a copy of every connection a worker holds, so close() alone would not
        # end it: shutdown() sends the client its FIN now.
        try:  # noqa: SIM105 - once a connection: contextlib.suppress costs about half a microsecond more
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the client is gone already
        self._finish_close()

    def drop(self) -> None:
        """Close this worker's copy of a connection handed back to the supervisor."""
        if not self.closed:
            self._finish_close()

    def _finish_close(self) -> None:
        self.detach()
        self.sock.close()

    def detach(self) -> None:
        """Stop watching the fd (before it is closed or sent away)."""
        if self.fd < 0:
            return
        self.pause_reading()
        if self._writing:
            self.loop.remove_writer(self.fd)
            self._writing = False
        self.fd = -1
        self.wake()
        _wake(self._drained)

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def expire_close(self, now: float) -> bool:
        """A close whose flush or linger outlasted its deadline: drop it now. True if closed."""
        if self.closing_at and not self.closed and now > self.closing_at:
            self._end()
        return self.closed


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    """Resolve every waiting future (a cancelled waiter's is done already) and forget them."""
    for future in waiters:
        if not future.done():
            future.set_result(None)
    waiters.clear()
