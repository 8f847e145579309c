"""The worker's runner for ASGI apps: one asyncio loop (uvloop where installed) over many connections.

The asyncio counterpart of wsgirunner.EventLoop, on the same connection owner (sockact/worker/): the
owner keeps each connection's state and deadlines, chooses what goes back to the supervisor and
counts max_requests; this runner carries that out on the loop. What is its own: each request is
a task running the app (cycle.py), a WebSocket is one too (websocket.py) and is never parked,
and output is buffered (conn.py), so a connection leaves only once its output is out.

The scoreboard: the loop stamps its line on a beat (BEAT seconds) while any request is in
hand, with the oldest request's line. A loop blocked by the app (a sync call in an async view)
stops beating, so the supervisor sees the worker stall after ``handback_after`` and sends it
nothing new, and aborts it after ``timeout``, as it does a stuck WSGI call.

Who touches a connection's fd: the loop thread, from adoption until it is closed or handed
back; then nobody in this worker. The one exception is a stall: the monitor thread, holding
``lock`` while the app blocks the loop, sends duplicates of the waiting connections back and
marks them handed; the loop closes its copies, unread, when it runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from sockact.asgi.conn import AsgiConnection, Batch
from sockact.asgi.cycle import HttpCycle
from sockact.asgi.keepalive import Schedule
from sockact.asgi.lifespan import Lifespan
from sockact.asgi.scope import conn_scope, request_scope
from sockact.asgi.websocket import WebSocket, release_memory, serve_websocket
from sockact.asgi.wsprotocols import INSTALL_HINT, WsProtocol, check_handshake, find
from sockact.errors import ProtocolError
from sockact.http import Site
from sockact.http.dates import http_date
from sockact.http.events import NEED_DATA, Request
from sockact.http.logline import access_remote, connection_entry, entry_for, fill_entry
from sockact.http.proxyprotocol import ProxyProtocolError
from sockact.http.site import health_response, is_health, local_address
from sockact.ipc import handoff
from sockact.ipc.scoreboard import SlotWriter, SpareLines
from sockact.ipc.tally import TallyWriter
from sockact.logs import flood
from sockact.logs.access import AccessLog
from sockact.worker.channel import (
    Closed,
    call_line,
    conn_extra,
    hand_back,
    listener_extra,
    preface_header,
    read_channel,
    report,
)
from sockact.worker.connstates import CALL, CLOSING, HANDED, HEAD, IDLE, QUEUED
from sockact.worker.deadline import Deadline, Step
from sockact.worker.guard import start_guarded
from sockact.worker.owner import TIMER_INTERVAL, Carrier, Due, Owner

log = logging.getLogger("sockact.worker")

# Python 3.12 starts a task eagerly on request (eager_start): its first step runs at once, inside the task.
_EAGER = sys.version_info >= (3, 12)
# An HTTP call's task's name: one given spares formatting a "Task-N" for each (callgrind, Python 3.11:
# 700 instructions a request). With a session's, it is how the deadline finds the tasks to cancel, with no
# set of tasks kept on a request's path.
CALL_TASK = "sockact-http-call"
SESSION_TASK = "sockact-websocket"
APP_TASKS = frozenset((CALL_TASK, SESSION_TASK))
BEAT = TIMER_INTERVAL  # seconds between the loop's scoreboard stamps and looks at every connection's deadlines
# Said once per worker, at the first WebSocket request that finds no library: the fix, for either install.
NO_WEBSOCKET_LIBRARY = ("WebSocket requests get the app's plain HTTP answer: no WebSocket library is installed; "
                        "install one with: pip install wsproto (a virtualenv), or: apt install python3-wsproto")


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed, else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class AsgiRunner(Carrier[AsgiConnection]):
    """Serves connections from ``chan`` with ASGI apps until the supervisor closes it."""

    # Past 30 attributes an instance's dict stops sharing its class's keys on Python 3.11, and each attribute
    # read on a request's path is a hashed lookup; slots are read at a fixed offset. (Carrier has a __dict__:
    # an attribute not named here still works.)
    __slots__ = ("_cancelled", "_context", "_done", "_eager", "_extras", "_gave_up", "_handed_back", "_loop_line",
                 "_queued", "_stop_monitor", "_timed", "_ws_library", "_ws_looked", "access", "batch", "call_lines",
                 "calls", "chan", "closed", "deadline", "draining", "extra", "graceful_timeout", "handback_after",
                 "handing_back", "last_beat", "lifespans", "lock", "loop", "owner", "pid", "pings", "receiver",
                 "sites", "slots", "spare", "stopping", "tally", "websockets", "ws", "ws_max_size", "ws_ping")

    def __init__(self, chan: socket.socket, sites: Sequence[Site], slots: Sequence[SlotWriter], *,
                 park_after: Sequence[float], handback_after: float, max_requests: int, extra: dict[str, Any],
                 lifespans: Sequence[Lifespan | None], graceful_timeout: float, ws: str, ws_max_size: int,
                 ws_ping: tuple[float, float] = (0.0, 0.0), access: AccessLog | None = None,
                 tally: TallyWriter | None = None, call_lines: Sequence[SlotWriter] = (),
                 spare: SpareLines | None = None) -> None:
        self.chan = chan
        self.sites = list(sites)
        self.slots = list(slots)  # the loop's line(s): busy with the oldest call, for stalls and timeout
        # The request line the loop's lines show as busy, stamped by a call's start since the last beat; None
        # once a beat has stamped them (see begin_call).
        self._loop_line: bytes | None = None
        # Free scoreboard lines for single HTTP calls: a call holds one (its connection, whether its
        # response has begun), so the clients of a dead worker get a 502 or 504, as from a WSGI worker's
        # threads. More calls at once than lines: ``spare`` makes more, one a connection the worker may hold.
        self.call_lines = list(call_lines)
        self.spare = spare
        self.extra = extra
        self._extras = [listener_extra(extra, site) for site in self.sites]  # by listener, made once
        self.lifespans = list(lifespans)
        self.graceful_timeout = graceful_timeout
        self.ws = ws  # the ws setting: which WebSocket library
        self.ws_max_size = ws_max_size
        self.ws_ping = ws_ping  # ws_ping_interval and ws_ping_timeout: each session's keepalive
        self.pings: Schedule[WebSocket] = Schedule()  # the open sessions' keepalive deadlines, for the beat
        # The WebSocket library, looked for at the first WebSocket: an HTTP-only app never imports one.
        self._ws_library: Callable[[bytes, int], WsProtocol] | None = None
        self._ws_looked = False
        self.access = access
        self.tally = tally  # the request counts for the metrics; None: none are kept
        # Whether a call's duration is wanted (the metrics, or an access line that shows it): else its clock is
        # not read.
        self._timed = tally is not None or (access is not None and access.timed)
        self.stopping = False  # SIGTERM: answer with Connection: close, park nothing
        self.draining = False  # a stop is coming (drain_delay): responses close their connections
        self.loop = new_loop()
        # The loop's bookkeeping (the held connections, the channel) is done under ``lock``, which is
        # free while the app runs; when the loop has not beaten for handback_after with requests in
        # hand, the monitor thread takes it and hands the waiting connections back.
        self.lock = threading.Lock()
        # What is written in a turn of the loop goes out at its end, where a call's first step runs in
        # the turn that read its request (eager tasks): every read, then every send. Without eager
        # tasks a call's first step comes after every read of its turn, so it writes at once.
        self.batch = Batch(self.loop, self.lock) if _EAGER else None
        self.pid = os.getpid()
        self.receiver = handoff.Receiver(chan)
        # Every connection in the worker's books, their states and deadlines, retiring and max_requests.
        self.owner: Owner[AsgiConnection] = Owner(Closed(chan), park_after, max_requests)
        self.closed = self.owner.closed
        self.calls: dict[AsgiConnection, tuple[float, Request]] = {}  # connections in an app call: since, request
        # Calls whose task has not begun (QUEUED): the call's task and a stall's hand-back each claim one by
        # taking it out, the one step of either that the other thread can see, so begin_call takes no lock.
        self._queued: set[AsgiConnection] = set()
        # open WebSockets (websocket.WebSocket), closed with 1001 on drain
        self.websockets: dict[AsgiConnection, Any] = {}
        # Its last seconds once it stops or retires: the sessions closed, the tasks cancelled, then the exit.
        self.deadline = Deadline(graceful_timeout)
        self._cancelled = self._gave_up = False
        self._done: asyncio.Future[None] | None = None
        self.handback_after = handback_after
        self.last_beat = time.monotonic()
        self.handing_back = False
        self._eager = False  # an eager task's first step runs now, inside _call
        self._context = contextvars.copy_context()  # the loop's own, outside every call's task
        self._handed_back: list[AsgiConnection] = []  # handed back by the monitor; the loop closes its copies
        self._stop_monitor = threading.Event()

    # ------------------------------------------------------------------ life

    def startup(self) -> None:
        """The apps' lifespan startup, before READY; raises AppLoadError when one fails."""
        for lifespan in self._apps_lifespans():
            self.loop.run_until_complete(lifespan.startup())

    def _apps_lifespans(self) -> list[Lifespan]:
        """Each app's lifespan once, however many listeners serve the app; none for a listener that serves none."""
        return [lifespan for lifespan in dict.fromkeys(self.lifespans) if lifespan is not None]

    def run(self) -> None:
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self.chan.setblocking(False)
        self._done = self.loop.create_future()
        self.loop.add_reader(self.chan.fileno(), self._read_channel)
        beat = self.loop.create_task(self._beat())
        monitor = start_guarded("monitor", self._monitor, self._stop_monitor.is_set)
        try:
            await self._done
        finally:
            beat.cancel()
            self._stop_monitor.set()
            monitor.join(timeout=1.0)
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(self.chan.fileno())
            self.slots[0].requests = self.owner.requests
            for slot in self.slots:
                slot.idle()
            self.closed.report()
            if self.tally is not None:
                self.tally.flush()
        for lifespan in self._apps_lifespans():
            await lifespan.shutdown(self.deadline.lifespan_time(time.monotonic()))

    def _report_closed(self) -> None:
        with self.lock:
            self.closed.report()

    def _check_done(self) -> None:
        if self.owner.done:
            self._end()

    def _end(self) -> None:
        """The loop's work is over: the worker goes on to its exit (the lifespan shutdown first)."""
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    # ------------------------------------------------------------------ the channel

    def _read_channel(self) -> None:
        with self.lock:
            read_channel(self.receiver, self.chan, self._adopt, self._retire)

    def _adopt(self, msg: handoff.Message) -> None:
        sock = socket.socket(msg.family, socket.SOCK_STREAM, 0, fileno=msg.fd)
        if not self.owner.takes(self.handing_back):
            hand_back(self.chan, msg, sock, msg.data, msg.head_started)
            return
        site = self.sites[msg.listener]
        server = None  # a Unix socket has no (host, port) to give
        if msg.family != socket.AF_UNIX:
            local = local_address(site, sock)
            server = local if isinstance(local, tuple) else None
        lifespan = self.lifespans[msg.listener] if self.lifespans else None
        shared = lifespan.state if lifespan is not None else {}
        client = msg.proxy.client if msg.proxy is not None and msg.proxy.client is not None else msg.peer
        scope = conn_scope(client, server, site.root_path, shared, self._extras[msg.listener] | conn_extra(msg))
        state, since = Owner.arrival(msg, site, time.monotonic())
        conn = self.owner.add(AsgiConnection(self.loop, msg, sock, site, scope, self._advance, self.lock, state, since,
                                   self.batch))
        conn.marks = marks = self.slots[0]
        conn.marked(marks.mark_of(msg.conn_id))
        if self.access is not None and site.access_log:
            conn.log_entry = connection_entry("", self.pid, msg.conn_id, site.listener)
        if msg.data:
            self._advance(conn)
        else:
            conn.read_now()

    # ------------------------------------------------------------------ connections

    def _advance(self, conn: AsgiConnection) -> None:
        """Decide what comes next for a connection after it was read or served. Requests it has
        buffered (pipelined) are served in turn here, as long as each is over at once."""
        while conn.state.reading and not conn.closing_at:
            if conn.preface is not None:
                self._read_preface(conn)
                return
            try:
                event = conn.engine.next_event()
            except ProtocolError as exc:
                self._refuse(conn, exc)
                return
            if not isinstance(event, Request):
                self._wait_for_request(conn, event)
                return
            if conn.site.health_path and is_health(conn.site, event):
                served = self._answer_health(conn, event)
            elif event.upgrade and _is_websocket(event):
                self._start_websocket(conn, event)
                return
            else:
                served = self._start_http(conn, event)
            if not served:
                return

    def _refuse(self, conn: AsgiConnection, exc: ProtocolError) -> None:
        """A request refused before any app sees it: its 4xx, then the connection closes."""
        log.debug("conn %d: %s", conn.msg.conn_id, exc)
        started = time.perf_counter()
        conn.write(conn.engine.error_response(exc.status, http_date()))
        self._access(conn, conn.engine.request, exc.status, started)
        self._close(conn, linger=True)

    def _wait_for_request(self, conn: AsgiConnection, event: object) -> None:
        """No whole request is buffered: read on, or let the connection go."""
        if event is not NEED_DATA:
            self._close(conn)  # the client closed between requests
            return
        if conn.engine.idle:
            if conn.state is HEAD:
                conn.to("idle")  # only the empty lines allowed between requests came
            if self.owner.retiring or self.owner.recycling:
                self._release(conn)
                return
            self._rest(conn)
        else:
            if conn.state is not HEAD:
                conn.to("bytes")
            self._rest(conn, in_head=True)
            conn.watch_anew()  # a reset that came with the head's part would wait for header_timeout
            return
        conn.resume_reading()

    def _read_preface(self, conn: AsgiConnection) -> None:
        """Look at what came of a connection's PROXY header; once it is whole, HTTP may start."""
        preface = conn.preface
        assert preface is not None
        try:
            parsed = preface_header(bytes(preface), conn.site.proxy_protocol, conn.eof)
        except ProxyProtocolError as exc:
            self._refuse_preface(conn, str(exc))
            return
        if parsed is None:
            if conn.eof:
                self._close(conn)  # a balancer's TCP check: connected, said nothing, left
            else:
                conn.resume_reading()
            return
        header, size = parsed
        conn.msg.proxy = header  # it travels with the connection when it is parked or handed back
        if header.client is not None:
            conn.scope["client"] = header.client
        conn.preface = None
        if size < len(preface):
            conn.engine.receive_data(bytes(preface[size:]))
        if conn.eof:
            conn.engine.receive_data(b"")
        conn.to("preface")
        self._advance(conn)

    def _answer_health(self, conn: AsgiConnection, request: Request) -> bool:
        """On the loop, never by the app, and not counted as a request. True: the connection goes on."""
        started = time.perf_counter()
        status, answer = health_response(conn.engine, self.stopping or self.draining)
        conn.write(answer)
        self._access(conn, request, status, started)
        if not conn.engine.keep_alive:
            self._close(conn)
            return False
        if not conn.writable:
            # The loop answers a connection's pipelined checks one after another, and never waits for a client:
            # one that reads none of its answers was written to without bound. Past WRITE_HIGH it is let go, and
            # what it still sends is not read (a close without linger stops reading).
            flood.WORKER.log(flood.HEALTH_UNREAD, log, logging.INFO, "conn %d: the client has not read its answers, "
                             "and the health checks' fill its buffer: closed", conn.msg.conn_id)
            self._close(conn)
            return False
        conn.engine.start_next_cycle()
        conn.to("answer")
        return True

    def _start_http(self, conn: AsgiConnection, request: Request) -> bool:
        """Begin the app's call for ``request``, at once. True when the call is over already and the
        connection may go on to its next request; otherwise its task goes on, and ends in end_call."""
        if conn.batch is not None:
            conn.push()  # a pipelined request's: the response before it goes first, so at most one waits in memory
        scopes = conn.scopes
        scope = scopes.http(request)
        now = time.monotonic()
        cycle = conn.cycle
        if cycle is None:
            cycle = conn.cycle = HttpCycle(conn, self)  # serves each of the connection's calls in turn
        cycle.begin(request, scope, self.stopping or self.draining, now, time.perf_counter() if self._timed else 0.0)
        # QUEUED until its task begins (a stall may still hand it back).
        conn.state = conn.state.moves["head"][0]  # connstates.ROW_MOVES
        self.calls[conn] = (now, request)
        self._queued.add(conn)
        lines = self.call_lines
        if lines or self._more_lines():
            conn.call_line = conn.answering = call = lines.pop()
            call.begin(scopes.line, conn.msg.conn_id, conn.written, now)  # what its response comes after
            if conn.out or conn.queued:  # not flushed, without the property's call
                # The last response (pipelining) is still going out: a 502 now would land inside it.
                call.responded_uncounted()
                conn.answering = None
        if not _EAGER:
            asyncio.Task(cycle.run(conn.site.app), loop=self.loop, name=CALL_TASK)  # its first step: the next turn
            return False
        return self._call(cycle.run(conn.site.app))

    def _call(self, coro: Coroutine[Any, Any, bool]) -> bool:
        """Start an app's call as an eager task (Python 3.12 and later); True when it is over already and
        its connection may go on to its next request (the caller looks for one). Its first step runs on
        this thread and now, without the runner's lock, so a stall can still be handed back; most calls
        never wait, and end there with no turn of the loop. The first step runs inside its task either
        way (without eager tasks, at the next turn): asyncio.timeout and anyio (FastAPI's plain ``def``
        endpoints) need a current task."""
        self._eager = True
        self.lock.release()
        try:
            task: asyncio.Task[bool] = asyncio.Task(coro, loop=self.loop, eager_start=True,  # type: ignore[call-arg]
                                                    name=CALL_TASK)
        finally:
            self.lock.acquire()
            self._eager = False
        return task.done() and not task.cancelled() and task.exception() is None and task.result()

    def begin_call(self, conn: AsgiConnection) -> bool:
        """A call's task begins (cycle.Ends): False when its connection went back meanwhile."""
        # No lock: the monitor hands a queued call back only once it has taken it out of _queued itself.
        try:
            self._queued.remove(conn)  # one step under the GIL: this task or the monitor has it
        except KeyError:
            return False  # the monitor handed it back: its request went back with it
        state = conn.state
        if state is HANDED:
            return False
        conn.state = state.moves["call"][0]  # connstates.ROW_MOVES; the monitor leaves a CALL alone
        # Until its first await this call holds the loop. An app that blocks the loop here must be the
        # one the scoreboard names (and the timeout kill logs), and at once: the next beat may not come.
        # Unless the loop's lines show this request line already, stamped by a call that began since the
        # last beat (clients repeating a request): their start, then, is at most that call's earlier
        # and no earlier than the last beat, from which the monitor's hand-back and the frozen loop's
        # kill count anyway; the beat stamps them anew.
        line = conn.scopes.line
        if line != self._loop_line:  # equal, not the same: each connection keeps its own
            self._loop_line = line
            for slot in self.slots:
                slot.begin(line)
        return True

    def end_call(self, conn: AsgiConnection, cycle: HttpCycle, keep: bool) -> bool:
        """A call is over (``keep``: its connection persists), in its task (cycle.Ends): its end carried out
        in the same step, no callback, no turn of the loop. True when the connection goes on and the eager
        start that ran this step looks for its next request; a call that ends later looks for it itself."""
        lock = self.lock
        lock.acquire()
        try:
            self.calls.pop(conn, None)
            line = conn.call_line
            if line is not None:  # _free_call_line's lines, inline: its call cost as much (callgrind, Python 3.11)
                line.clear()
                self.call_lines.append(line)
                conn.call_line = conn.answering = None
            persists = keep and conn.fd >= 0 and conn.state is CALL  # conn.fd < 0: closed
            if self.owner.served(conn, persists):  # back to IDLE if it persists
                report(self.chan, handoff.Message(handoff.RECYCLE))
            if self.tally is not None:
                self.tally.record(conn.msg.listener, cycle.request.method, cycle.status,
                                  time.perf_counter() - cycle.started_at)
            entry = conn.log_entry
            if entry is not None and self.access is not None:
                # Inline, not a call of _access, and entry_for called only for a new request: each call cost
                # 300-400 instructions a request (callgrind, Python 3.11). The client is the connection's, found
                # once (_remote), unless trusted proxies told another for this request.
                client = cycle.scope["client"]
                entry.remote = (conn.remote if conn.remote and client is conn.scope["client"]
                                else self._remote(conn, client))
                request = cycle.request
                memo = entry.memo
                if memo is None or memo.key is not request:  # else entry_for would leave it as it is
                    entry_for(entry, request)
                self.access.log_response(entry, cycle.status, conn.engine.body_sent, cycle.started_at,
                                         cycle.headers or ())
            if not persists:
                # Lingering after a refused body (a 408): the client still sending reads its answer before a reset.
                self._close(conn, linger=cycle.answered and not cycle.body_done)
                return False
            idle = conn.engine.start_next_cycle()
            if self._eager:
                return True  # the eager start looks for the next request
            if idle and not (self.owner.retiring or self.owner.recycling):
                conn.rest(conn.written)  # _rest's, without its call: served() made it IDLE
                if not conn.watched:  # the usual: watched still, and no call
                    conn.resume_reading()  # nothing more came yet
            else:
                # A pipelined request may be buffered already; its task must not start in this
                # one's context (an app's context variables are its request's alone).
                self._context.run(self._advance, conn)
            return False
        finally:
            lock.release()

    def _rest(self, conn: AsgiConnection, in_head: bool = False) -> None:
        """``conn`` waits for its next request with nothing of it read (``in_head``: part of its head): marked so
        on the scoreboard, with the bytes written on it (some may still wait in its buffers: the kernel's count
        tells the supervisor). Not one that has sent no request yet (FRESH)."""
        if conn.state is IDLE or in_head:
            conn.rest(conn.written, in_head)

    def _more_lines(self) -> bool:
        """Every line is in a call: one more of the slot's, if it has one (made once, then free with the others)."""
        line = self.spare.take() if self.spare is not None else None
        if line is None:
            return False
        self.call_lines.append(line)
        return True

    def _free_call_line(self, conn: AsgiConnection) -> None:
        line = conn.call_line
        if line is not None:
            line.clear()
            self.call_lines.append(line)
            conn.call_line = conn.answering = None

    def _locked(self, call: Any, *args: Any) -> None:
        with self.lock:
            call(*args)

    def _ws_started(self, conn: AsgiConnection, request: Request) -> None:
        first = not self.calls
        self.calls[conn] = (time.monotonic(), request)
        if first:
            self._stamp()  # the app may block the loop before the next beat: be seen busy from now

    def _start_websocket(self, conn: AsgiConnection, request: Request) -> None:
        if not self._ws_looked:
            self._ws_looked = True
            self._ws_library = find(self.ws)
            if self._ws_library is None and self.ws == "auto":
                log.warning(NO_WEBSOCKET_LIBRARY)
            elif self._ws_library is None:
                log.warning("WebSocket requests get the app's plain HTTP answer: ws = %r, and %s is not installed; "
                            "install it with: %s", self.ws, self.ws, INSTALL_HINT[self.ws])
        if self._ws_library is None:
            self._start_http(conn, request)  # the app's own answer to a plain request, then closed
            return
        try:
            check_handshake(request)
        except ProtocolError as exc:
            self._refuse(conn, exc)
            return
        conn.to("head")
        conn.to("call")  # a WebSocket's task begins at once, and is never handed back
        self._ws_started(conn, request)
        scope = request_scope(conn.scope, request, websocket=True, trust=conn.trust)
        task = self.loop.create_task(serve_websocket(conn, scope, conn.site.app, self.websockets, self._ws_library,
                                                     self.ws_max_size, self.tally, *self.ws_ping, self.pings),
                                     name=SESSION_TASK)
        task.add_done_callback(lambda t: self._locked(self._after_websocket, conn, request, t))

    def _after_websocket(self, conn: AsgiConnection, request: Request, task: asyncio.Task[Any]) -> None:
        self.calls.pop(conn, None)
        if not task.cancelled() and task.exception() is None:
            ws = task.result()
            release_memory(ws)
            entry = conn.log_entry
            if entry is not None and self.access is not None:
                entry.remote = self._remote(conn, ws.scope["client"])
                fill_entry(entry, request, ws.status, ws.bytes_out, ws.started, ws.response_headers)
                self.access.log_websocket(entry, ws.close_code if ws.status == 101 else 0, ws.bytes_in)
        # Lingering: a client still sending (a message over ws_max_size) reads the close frame before a reset.
        self._close(conn, linger=True)

    def _access(self, conn: AsgiConnection, request: Request | None, status: int, started: float) -> None:
        """The line of a request answered by sockact, not the app (a bad request, the health path); an app's
        call's is end_call's."""
        entry, access = conn.log_entry, self.access
        if entry is not None and access is not None:
            entry.remote = self._remote(conn)
            access.log_response(entry_for(entry, request), status, conn.engine.body_sent, started, ())

    @staticmethod
    def _remote(conn: AsgiConnection, client: Any = None) -> str:
        if not conn.remote:
            conn.remote = access_remote(conn.sock, conn.scope["client"] or conn.msg.peer)
        return conn.remote if client is None or client is conn.scope["client"] else str(client[0])

    # ------------------------------------------------------------------ the beat

    async def _beat(self) -> None:
        while True:
            now = self.last_beat = time.monotonic()
            self.slots[0].beat()  # the supervisor kills a worker whose loop stops beating for timeout
            with self.lock:
                self._stamp()
                self._timers(now)
            if self.access is not None:
                self.access.flush_if_due(now)
            if self.tally is not None:
                self.tally.flush()  # a copy to shared memory, where the supervisor reads it
            await asyncio.sleep(BEAT)

    def _stamp(self) -> None:
        """The scoreboard: busy with the oldest request while any is in hand, stamped now."""
        self._loop_line = None  # the next call's start stamps its own line (begin_call)
        if self.calls:
            line = call_line(min(self.calls.values(), key=lambda call: call[0])[1])
            for slot in self.slots:
                slot.begin(line)
        else:
            self.slots[0].requests = self.owner.requests  # the count the line shows, written by idle()
            for slot in self.slots:
                slot.idle()

    def _timers(self, now: float) -> None:
        for conn in self._handed_back:
            conn.drop()
        self._handed_back.clear()
        if self.stopping or self.owner.retiring:
            self._near_the_end(now)
        if self.pings:
            for at, ws in self.pings.due(now):
                ws.keepalive(now, at)  # its ping, or the end of a client that answered none
        self._carry_out_deadlines(now)
        self._check_done()

    def _time_out(self, conn: AsgiConnection, what: Due) -> None:
        if what is Due.HEAD_TIMEOUT and conn.engine.buffered:
            conn.write(conn.engine.error_response(408, http_date()))
        self._close(conn)  # DROP: it sent nothing, and is told nothing

    def _closing(self, conn: AsgiConnection, now: float) -> None:
        if conn.expire_close(now):
            self._closed(conn)  # its output went out, or its time to go out is over

    def _near_the_end(self, now: float) -> None:
        """Stopping or retiring: what is due as the supervisor's kill nears (deadline.py)."""
        deadline = self.deadline
        deadline.begin(now)
        step = deadline.step(now)
        if step is Step.SERVE:
            return
        for ws in list(self.websockets.values()):
            ws.close_going_away()  # 1001; once a session (an app that hears it returns by itself)
        if step >= Step.CANCEL and not self._cancelled:
            self._cancelled = True
            self._cancel_tasks(now)
        if step is Step.GIVE_UP and not self._gave_up:
            self._gave_up = True
            self._give_up()

    def _cancel_tasks(self, now: float) -> None:
        """Cancel every call and session task still running, as uvicorn does at timeout_graceful_shutdown. An HTTP
        call whose response has not begun is answered 502 first, with Connection: close: what the supervisor's
        kill would have sent, and the app's own answer, should it catch the cancellation, is dropped; a response
        begun is cut, its connection closed."""
        tasks = [task for task in asyncio.all_tasks(self.loop) if task.get_name() in APP_TASKS and not task.done()]
        sessions = sum(1 for task in tasks if task.get_name() == SESSION_TASK)
        answered = 0
        for conn, (_, request) in self.calls.items():
            cycle = conn.cycle
            if cycle is None or cycle.request is not request or cycle.answered or conn.gone:
                continue  # a session, or a call that is answered already
            if cycle.started:
                cycle.answered = True  # cut: its sends are dropped, and its CancelledError is no app error
            else:
                cycle.answer(502)
                answered += 1
        for task in tasks:
            task.cancel()
        if tasks:
            log.warning("worker %d: %d tasks still running %.1fs before graceful_timeout (%gs) runs out: cancelled "
                        "(%d HTTP calls, %d of them answered 502; %d WebSocket sessions)", self.pid, len(tasks),
                        self.deadline.kill_at - now, self.graceful_timeout, len(tasks) - sessions, answered, sessions)

    def _give_up(self) -> None:
        """The worker's time is up: what it still holds (a task that ignored its cancellation, a close still
        flushing) is closed now, and it exits, to run the lifespan shutdown before the kill."""
        for conn in list(self.owner.held.values()):
            conn.abandon()
            self._close(conn)
        self._end()

    # ------------------------------------------------------------------ stalls

    def _monitor(self) -> None:
        """While the app blocks the loop, hand back whatever waits or arrives (as the WSGI runner's monitor)."""
        interval = max(0.005, self.handback_after / 2)
        while not self._stop_monitor.wait(interval):
            if self._stalled() and self.lock.acquire(blocking=False):
                try:
                    if self._stalled():
                        self._hand_back_waiting()
                finally:
                    self.lock.release()

    def _stalled(self) -> bool:
        return bool(self.calls) and time.monotonic() - self.last_beat > self.handback_after

    def _hand_back_waiting(self) -> None:
        """On the monitor thread, the loop blocked: every connection not in a call goes back with what it
        has read. The loop still watches their fds, so they go as copies; the loop closes its own.
        A call the loop has not begun yet (created in the same turn as the one that blocks) goes back
        too, its request head with it; its task ends without calling the app."""
        self.handing_back = True
        try:
            for conn in self.owner.held.values():
                if conn not in self.calls:
                    conn.push_stalled()  # the answers of this turn, queued before the call that blocks
            for conn, data, head_started in self.owner.stall_hand_backs():
                if conn.closing_at:
                    continue  # a WebSocket's task is closing it
                state = conn.state  # read once: a queued call's task, which takes no lock, may be moving it to CALL
                if state is CALL:
                    continue
                if state is QUEUED:
                    try:
                        self._queued.remove(conn)  # taken from its task, which will not begin (begin_call)
                    except KeyError:
                        continue  # its task has it, and is on its way into CALL
                self.calls.pop(conn, None)
                self._free_call_line(conn)
                self.owner.gone(conn, "hand_back")
                copy = socket.socket(conn.msg.family, socket.SOCK_STREAM, 0, fileno=os.dup(conn.fd))
                hand_back(self.chan, conn.msg, copy, data, head_started)
                self._handed_back.append(conn)
            # Arrivals go straight back; an EOF is left for the loop, which sees it again when it runs.
            read_channel(self.receiver, self.chan, self._adopt, lambda: None)
        finally:
            self.handing_back = False

    # ------------------------------------------------------------------ leaving

    def _release(self, conn: AsgiConnection) -> None:
        if self.stopping:
            self._close(conn)
            return
        conn.push()
        if not conn.flushed:
            return  # the last response is still going out; the next look parks it
        conn.detach()
        self.owner.gone(conn, "park")
        hand_back(self.chan, conn.msg, conn.sock, conn.unparsed(), conn.head_started)
        self._check_done()

    def _close(self, conn: AsgiConnection, linger: bool = False) -> None:
        """Close once its output is out (CLOSING meanwhile), lingering first after an error."""
        conn.close(linger=linger, timeout=conn.site.io_timeout)
        if conn.closed:
            self._closed(conn)
        elif conn.state is not CLOSING:
            conn.to("closing")

    def _closed(self, conn: AsgiConnection) -> None:
        if self.owner.held.get(conn.msg.conn_id) is conn:
            if not self.closed.ids:
                self.loop.call_soon(self._report_closed)  # once this turn of the loop is done
            self.owner.gone(conn, "close")
        self._check_done()

    def _retire(self) -> None:
        """EOF on the channel: hand back what waits, finish what is in calls, then exit."""
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.chan.fileno())
        self._park_on_retire()
        self._check_done()


def _is_websocket(request: Request) -> bool:
    return any(name == b"UPGRADE" and value.lower() == b"websocket" for name, value in request.headers) \
        and request.method == b"GET"
