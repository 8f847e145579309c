"""The worker's runner: one event loop over many connections, the app in one or more app threads.

The loop (the worker's main thread) watches the channel and every connection the worker
holds that is waiting for a request. It reads whatever arrives, feeds each connection's
HTTP engine, and gives each complete request head to an app thread, which runs the app,
reads the body, writes the response and gives the connection back to the loop. Each
connection is a Held, whose state, deadlines and hand-backs the connection owner decides
(sockact/worker/owner.py, shared with the ASGI runner); this runner carries them out. Around it:

- A connection idle at a request boundary for ``park_after`` goes back to the supervisor
  (PARK). A partial head stays until ``header_timeout``, then gets its 408 and is closed; a
  connection that has sent nothing is closed then too.
- On a listener with ``proxy_protocol``, a new connection's first bytes are its PROXY
  header (sockact/http/proxyprotocol.py), read within ``header_timeout`` before any HTTP; the
  header travels with the connection when it is handed back, so it is read only once.
- A request for the listener's health path is answered on the loop thread, never by the
  app: the answer must come even while every app thread is busy.
- When every app thread has been in one call for longer than ``handback_after``, the
  worker is stalled: every connection it holds that is not in a call goes back to the
  supervisor at once, with the bytes it has read and not yet served (one that has read more
  than a hand-off message carries waits for a free thread), and so does any
  connection that arrives meanwhile. The supervisor sees the stall on the scoreboard and
  gives the worker nothing new until it moves again.

Who may touch a connection's fd, by its state (docs/architecture.md has the whole table):
    PREFACE, FRESH, HEAD, BODY, IDLE, CLOSING   the loop thread, under ``lock`` (the fd is in the poller)
    UNREAD   the loop thread, under ``lock`` (the fd is in the poller for room to write: EPOLLOUT)
    QUEUED, CALL   its app thread alone (the fd is out of the poller); a pool thread whose call leaves it
                   IDLE puts it back in the poller, its last act (_finished), and the loop reads it only
                   once it has taken the call's end (_take_done)
    HANDED, CLOSED   nobody: the loop sent or closed it and dropped it from its books

App threads come from appthreads.AppThreads: ``threads`` of them always, more up to
``max_threads`` while every one is in a call. The loop thread is app thread 0 and runs calls
itself, releasing ``lock`` for each (the pool's threads are the other ``threads - 1`` and those
that grow); a monitor thread takes the lock once such a call has lasted a while (GROW_AFTER with
room to grow, else handback_after) and is the loop until it ends: it gives waiting requests to
pool threads, or hands them back when the worker stalls.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence

from sockact import cpupolicy
from sockact.errors import ProtocolError
from sockact.http import Site
from sockact.http.events import Request
from sockact.http.limits import BODY_MIN_RATE, LINGER_BYTES, LINGER_SECONDS, RECV_SIZE, SpoolFull
from sockact.http.logline import quoted_request_line
from sockact.http.proxyprotocol import ProxyProtocolError
from sockact.ipc import handoff
from sockact.ipc.scoreboard import SlotWriter, Waiting
from sockact.ipc.tally import TallyWriter
from sockact.logs import flood
from sockact.logs.access import AccessLog
from sockact.worker.appthreads import AppThreads
from sockact.worker.callmix import CallMix
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
from sockact.worker.connstates import BODY, CALL, CLOSING, HEAD, IDLE, PREFACE, QUEUED, SENDING, UNREAD, ConnState
from sockact.worker.guard import start_guarded
from sockact.worker.owner import TIMER_INTERVAL, Carrier, Due, Owned, Owner, due
from sockact.wsgi.environ import site_environ
from sockact.wsgi.server import HTTPConnection, Step
from sockact.wsgi.wire import ClientGone

log = logging.getLogger("sockact.worker")

TICK = 0.05  # seconds: the longest the loop sleeps without looking at its timers
# With a pool that may grow, while long calls (RELAXED_LOOK or more) are common: how long the loop thread's
# own call may last before the monitor takes the loop's role (and starts threads for what is waiting), how
# often it looks meanwhile, and how often one more thread may start. A call this short is over before a
# thread could start; a waiting fast request pays about twice this (plus GROW_AFTER for each slow request
# ahead of it that needs a new thread).
GROW_AFTER = 0.001
# While the loop hands calls off, a path whose calls are rarely PATH_SLOW or longer is still called on
# the loop thread: an app's slow calls are mostly the same few routes (a report, an upstream API), and
# its other requests then skip two thread switches and the pool's wake-up, which is most of a fast
# request's latency beside slow ones. Each path's share of slow calls is a moving average (each call
# weighs PATH_WEIGHT; a new path counts as slow), and the path is fast below FAST_SHARE: one slow call
# now and then moves it to the pool for about a dozen calls. PATH_SLOW is well above GROW_AFTER: a short
# call that the scheduler interrupts on a busy machine lasts a millisecond or more far more often than
# five, and a call of a few milliseconds on the loop thread costs a take-over by the monitor, not a wait.
# A path whose calls vary goes to the pool as before. At most ROUTES_KEPT paths are kept (an app of many
# distinct paths starts over). A short call's path is written down only while calls are handed off (a slow
# one's always): a worker of short calls, which never hands off, spends nothing on these books per request,
# and once it does hand off, a path not seen since is new (slow) for its first few dozen calls.
PATH_SLOW = 0.005
PATH_WEIGHT = 1 / 16
FAST_SHARE = 1 / 32
ROUTES_KEPT = 256
# A call this long is "long". While long calls are rare (below callmix.LOOK_SHARE), the monitor looks this
# often, takes over from a call only once it has lasted this long, and starts one more thread at most this often:
# each look takes the GIL from the serving loop thread (two thread switches), which at one a millisecond
# costs a worker of short calls 7-10% of its CPU; and on a busy machine the scheduler makes a short call
# last a millisecond now and then, 5 ms in bursts (measured: hello world under wrk -c50 on 2 shared
# cores, about one take-over a second per worker at 5 ms, none in 9 s at 10), where a take-over
# would find a queue of short requests and start a thread for each. Worst case for a fast request
# behind the first long call after such a quiet spell: about twice this (then GROW_AFTER's).
RELAXED_LOOK = 0.010
QUIET_LOOKS = 100  # looks at a worker that serves nothing before the monitor sleeps until a call starts
# The loop thread's calls of waiting requests in one turn, in seconds: past it, while requests still wait, the next
# turn reads the other connections first (without waiting in the poller), and their requests queue behind those.
# A client's pipelined requests queue one at a time behind its call, so without a bound one client's 64 KiB of
# pipelined requests held the worker until all were served (seconds of 1 ms calls) while other clients waited.
# The WebSocket sessions' TURN_SECONDS (asgi/websocket.py) is the same bound for the ASGI loop.
DISPATCH_TURN = 0.002
# Bytes written on a connection after which its next call waits until its client shows it takes its answers (its
# socket writable): a client that pipelines and reads nothing, or asks again without reading, would otherwise have
# an app thread's write wait for it, for send_timeout, while the worker's other clients wait for that thread. Every
# this many bytes, not every request: a poll() a request would cost a keep-alive request a tenth more. The kernel's
# buffer has room for far more than this when its socket is writable, so the writes in between do not wait.
OUTPUT_LOOK = 16 * 1024


# Step's members as module names: on Python 3.11 ``Step.IDLE`` costs 0.3 µs (the Enum class's attribute
# machinery), and a served request passes four of these.
_CLOSE, _LINGER, _PARTIAL, _IDLE = Step.CLOSE, Step.LINGER, Step.PARTIAL, Step.IDLE


class Held(Owned):
    """A connection the WSGI runner holds: the owner's books (owner.Owned), its socket and its engine."""

    __slots__ = ("call_line", "call_of", "close_after", "http", "linger_until", "lingered", "look_at", "preface",
                 "request", "sock", "taken", "watched")

    def __init__(self, msg: handoff.Message, sock: socket.socket, site: Site, state: ConnState, now: float,
                 http: HTTPConnection) -> None:
        super().__init__(msg, site, state, now)
        self.sock = sock
        self.http = http
        self.request: Request | None = None  # parsed: its body coming (BODY) or waiting for a thread (QUEUED)
        self.watched = False  # in the poller
        # The PROXY header's bytes so far, until it is whole (PREFACE).
        self.preface: bytearray | None = bytearray(msg.data) if state is PREFACE else None
        self.linger_until = 0.0  # CLOSING: what the client still sends is dropped until then
        self.lingered = 0  # bytes dropped meanwhile
        # The scoreboard's line for the last request called, made once while it repeats (the engine gives the
        # same Request for the same head).
        self.call_of: Request | None = None
        self.call_line = b""
        self.look_at = OUTPUT_LOOK  # once its wire has sent more, its next call waits for room (EventLoop._unread)
        self.close_after = False  # SENDING: its response does not persist, closed once its outbox is out
        self.taken = 0  # SENDING: what its client had taken (Wire.taken) when its deadline last moved

    def unparsed(self) -> bytes:
        return bytes(self.preface) if self.preface is not None else self.http.unparsed()

    @property
    def movable(self) -> bool:
        return self.http.spool is None  # a body read into a file here cannot go with it

    def line_of(self, request: Request) -> bytes:
        """``request``'s scoreboard line, made once while it repeats."""
        if request is not self.call_of:
            self.call_of, self.call_line = request, call_line(request)
        return self.call_line


class EventLoop(Carrier[Held]):
    """Serves connections from ``chan`` until the supervisor closes it, then exits."""

    def __init__(self, chan: socket.socket, sites: Sequence[Site], slots: Sequence[SlotWriter], *,
                 park_after: Sequence[float], handback_after: float, max_requests: int,
                 extra: dict[str, object], access: AccessLog | None = None,
                 tallies: Sequence[TallyWriter] | None = None, floor: int = 1,
                 thread_idle_timeout: float = 30.0, waiting: Waiting | None = None) -> None:
        self.chan = chan
        self.sites = list(sites)
        self.slots = list(slots)  # one scoreboard line per app thread up to the ceiling
        self.ceiling = len(slots)  # the most app calls at once
        # The loop thread is app thread 0 and runs a call itself (no hand-off: the cheapest path); the
        # pool's threads, lines 1 and up, take calls while it is in one, or when calls are slow lately.
        # With a floor of N, N - 1 of them always run: N app threads in all, gunicorn's --threads N.
        self.pool: AppThreads[Held, bool] | None = None
        if self.ceiling > 1:
            self.pool = AppThreads(range(1, self.ceiling), floor - 1, thread_idle_timeout, self._serve,
                                   self._finished, alive=self._thread_alive, assign=self._begin,
                                   start_every=RELAXED_LOOK)
        self.tallies = list(tallies) if tallies else None  # one per app thread, for the metrics
        self._tally_lines = list(dict.fromkeys(self.tallies or ()))  # each shared writer flushed once
        self.handback_after = handback_after
        self.extra = extra  # environ keys every request gets (worker pid)
        # By listener, what every connection's environ starts from: made once, each connection copies it.
        self._environs = [{**site_environ(site.url_scheme, site.root_path, site.threaded),
                           **listener_extra(extra, site)} for site in self.sites]
        self.access = access  # written when the loop goes idle, and at least every FLUSH interval
        self.stopping = False  # SIGTERM: answer with Connection: close, park nothing
        self.draining = False  # a stop is coming (drain_delay): health says 503, answers close their connections
        self.lock = threading.Lock()
        # epoll itself, not selectors: a turn of the loop per request makes its Python layer a cost worth
        # saving. The connections it watches, by fd.
        self.poller = select.epoll()
        self.watching: dict[int, Held] = {}
        self.receiver = handoff.Receiver(chan)
        # Every connection in the worker's books, their states and deadlines, retiring and max_requests.
        self.owner: Owner[Held] = Owner(Closed(chan), park_after, max_requests)
        self.closed = self.owner.closed
        self.ready: deque[Held] = deque()  # parsed requests waiting for an app thread
        self.waiting = waiting or Waiting([])  # the same, on the scoreboard: a 502 if the worker dies
        self.in_call = 0  # app calls running
        self.call_started: list[float] = [0.0] * self.ceiling  # by line: when its call started, 0.0 if none
        self._next_timers = 0.0
        # Calls ended on pool threads, for the loop: (connection, whether it persists, whether its thread put it
        # back in the poller already). Appended under _arm_lock: a connection back in the poller is in here first.
        self._done: deque[tuple[Held, bool, bool]] = deque()
        self._arm_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._chan_fd, self._wake_fd = chan.fileno(), self._wake_r.fileno()
        self._inline_held: Held | None = None  # in a call on the loop thread
        self._standby = False  # the monitor holds the loop's role: the loop thread is in its call
        self._monitor_asleep = False  # nothing served lately: the monitor waits for a call to start
        # Whether slow calls are common lately (the loop thread gives calls to the pool), judged by the monitor.
        self.mix = CallMix(time.monotonic())
        # The loop thread is app thread 0 and not inside a call: a request read now is called at once.
        self._serve_now = True
        # By request path: its share of calls of PATH_SLOW or more, a moving average (with a pool beside
        # the loop thread; see FAST_SHARE). Written by whichever thread ran the call.
        self._slow_share: dict[bytes, float] | None = {} if self.pool is not None else None
        self._call_begun = threading.Event()  # wakes it
        self._mark_reading = self.slots[0].reading  # the scoreboard's stamp of the connection being read
        self._reading_words, self._reading_at = self.slots[0].reading_stamp()  # the same, for _read inline
        self.slots[0].clears_reading = True  # the loop thread's calls end by clearing that stamp

    # ------------------------------------------------------------------ main

    def run(self) -> None:
        self.chan.setblocking(False)
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.poller.register(self.chan, select.EPOLLIN)
        self.poller.register(self._wake_r, select.EPOLLIN)
        helpers = self._start_threads()
        self.lock.acquire()
        try:
            while not self.owner.done:
                self._turn()
        finally:
            self.lock.release()
            self._call_begun.set()
            if self.pool is not None:
                self.pool.stop()
            for t in helpers:
                t.join(timeout=1.0)
            self.closed.report()
            self._flush_tallies()
            self.poller.close()
            self._wake_r.close()
            self._wake_w.close()

    def _start_threads(self) -> list[threading.Thread]:
        """The pool's floor, and the monitor (the loop thread is app thread 0)."""
        if self.pool is not None:
            self.pool.start()
        self._thread_alive(0, True)
        return [start_guarded("monitor", self._monitor, lambda: self.owner.done)]

    def _thread_alive(self, line: int, alive: bool) -> None:
        """On app thread ``line`` as it starts (True) and as it ends (False): the loop thread is line 0."""
        if alive and line:
            cpupolicy.for_pool_thread()
        self.slots[line].alive(alive)

    def _turn(self, timeout: float = TICK) -> None:
        # Requests left waiting by the last turn's dispatch (DISPATCH_TURN): look at the others, but do not wait.
        events = self.poller.poll(0 if self.ready and not self._standby else timeout)
        if not events and self.access is not None:
            self.access.flush()  # idle: write the lines out
        if self._done:  # before the events: one may be the next request of a connection a pool thread put back
            self._take_done()
        watching = self.watching
        for fd, _ in events:
            held = watching.get(fd)
            if held is not None:
                self._read(held)
            elif fd == self._chan_fd:
                self._read_channel()
            elif fd == self._wake_fd:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
                self._take_done()
            # else: a connection that left earlier in this turn (a stale event)
        if self.ready:
            self._dispatch_ready()
        now = time.monotonic()
        if now >= self._next_timers:
            self._next_timers = now + TIMER_INTERVAL
            # The supervisor kills a worker whose loop stops turning for timeout. Not on every turn (one a
            # request when busy): this often is plenty against a timeout of seconds.
            self.slots[0].beat()
            self._timers(now)
            if self.access is not None:
                self.access.flush_if_due(now)
            self._flush_tallies()
        if self.closed.ids:
            self.closed.report()

    def _flush_tallies(self) -> None:
        """Publish the request counts to the supervisor (a copy to shared memory; no syscall)."""
        for tally in self._tally_lines:
            tally.flush()

    # ------------------------------------------------------------------ the channel

    def _read_channel(self) -> None:
        read_channel(self.receiver, self.chan, self._adopt, self._retire)

    def _adopt(self, msg: handoff.Message) -> None:
        sock = socket.socket(msg.family, socket.SOCK_STREAM, 0, fileno=msg.fd)
        if not self.owner.takes(self._stalled()):
            hand_back(self.chan, msg, sock, msg.data, msg.head_started)
            return
        site = self.sites[msg.listener]
        state, since = Owner.arrival(msg, site, time.monotonic())
        # Until its PROXY header is whole, a connection's engine has no bytes: HTTP waits for the header.
        pending = b"" if state is PREFACE else msg.data
        held = self.owner.add(Held(msg, sock, site, state, since, self._http(msg, sock, site, pending)))
        held.marked(self.slots[0].mark_of(msg.conn_id))
        # The rest of a CONNS waits in the receiver, where the monitor, standing in for the loop while a
        # call lasts, cannot see it: a request read now queues (the turn's end calls it), or the others
        # would wait for its call to end.
        serve_now = self._serve_now
        self._serve_now = serve_now and not self.receiver.pending
        try:
            if state is PREFACE:
                self._read_preface(held, b"", eof=False)
            elif msg.data:
                self._advance(held)
            else:
                self._read(held)  # a new client's request is usually there already: no wait in the poller
        finally:
            self._serve_now = serve_now

    def _http(self, msg: handoff.Message, sock: socket.socket, site: Site, pending: bytes) -> HTTPConnection:
        return HTTPConnection(sock, site, peer=msg.peer, conn_id=msg.conn_id, pending=pending,
                              environ_extra=conn_extra(msg), stopping=self._is_stopping,
                              client=msg.proxy.client if msg.proxy else None, base_environ=self._environs[msg.listener])

    def _read_preface(self, held: Held, data: bytes, eof: bool) -> None:
        """Bytes of a connection whose PROXY header is not whole yet (b"" when none came now)."""
        preface = held.preface
        assert preface is not None
        preface += data
        try:
            parsed = preface_header(bytes(preface), held.site.proxy_protocol, eof)
        except ProxyProtocolError as exc:
            self._refuse_preface(held, str(exc))
            return
        if parsed is None:
            if data or not preface:
                self._watch(held)
            else:
                self._read(held)
            return
        header, size = parsed
        held.msg.proxy = header
        held.http.release()  # made before the client was known: the connection's starts now
        held.http = self._http(held.msg, held.sock, held.site, bytes(preface[size:]))
        held.preface = None
        held.to("preface")
        if size == len(preface):
            self._read(held)  # the request usually came in the same segment; if not, wait for it
        else:
            self._advance(held)

    # ------------------------------------------------------------------ connections

    def _read(self, held: Held) -> None:
        state = held.state
        if state.reading:
            # Named before the read: should the worker die before what it reads is on a line (a call's,
            # or a waiting one), the supervisor still knows this client may wait for an answer (a 502).
            self._reading_words[self._reading_at] = held.msg.conn_id  # _mark_reading, without its call
            if state is IDLE or state is HEAD:
                held.mark[held.mark_at] = 0  # its mark says what it held before this read, no longer true
        elif state is not CLOSING:
            if state is UNREAD:
                self._taken(held)  # writable: its client took some of its answers (or failed: its call finds out)
            elif state is SENDING:
                self._send_tail(held)  # writable: more of its outbox goes
            return  # its app thread reads it, or it left in this turn of the loop (a stale event)
        try:
            data = held.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            self._watch(held)
            return
        except OSError:
            data = b""
        if state.between:  # FRESH, HEAD, IDLE: what came is the engine's, whatever it is
            held.http.engine.receive_data(data)
            self._advance(held)
            return
        if state is CLOSING:
            held.lingered += len(data)
            if not data or held.lingered >= LINGER_BYTES:
                self._close(held)
            else:
                self._watch(held)
            return
        if state is PREFACE:
            if not data and not held.preface:
                self._close(held)  # a balancer's TCP check: connected, said nothing, left
            else:
                self._read_preface(held, data, eof=not data)
            return
        # BODY: the body the loop reads before the call. Its deadline runs from the head, and moves on a second
        # per BODY_MIN_RATE bytes received, as an ASGI body's does: a large upload at a real client's pace is not
        # cut, a trickle is.
        held.since += len(data) / BODY_MIN_RATE
        held.http.engine.receive_data(data)
        if held.http.spool is not None:
            self._spool_body(held)
        else:
            self._buffer_body(held, eof=not data)

    def _advance(self, held: Held) -> None:
        """Decide what comes next for a connection after it was read or served."""
        step = held.http.next_request()
        # Health checks pipelined one after another are answered in turn here, not each from the last one's
        # answer: a client's 64 KiB of them went that many calls deep, and the RecursionError ended the worker.
        while isinstance(step, Request) and held.site.health_path and held.http.is_health(step):
            if not self._answer_health(held, step):
                return
            step = held.http.next_request()
        if isinstance(step, Request):
            # A slow body must not hold an app thread: the loop reads it first, as any other input, in memory
            # (body_buffer: a Content-Length body only) or into a file (body_spool).
            if step.content_length and held.http.body_to_buffer():
                self._read_body(held, step)
                self._watch(held)
                return
            if (step.content_length or step.chunked) and held.http.body_to_spool():
                self._read_body(held, step, tell=False)
                self._spool_body(held)  # what came with the head
                if held.state is BODY:  # not refused (body_spool_total): a client waiting for 100 Continue is told
                    self._continue(held)
                return
            self._ready(held, step, "head")
            return
        if step is _CLOSE:
            self._close(held)
            return
        if step is _LINGER:
            self._linger(held)
            return
        if step is _PARTIAL:
            if held.state is not HEAD:
                held.to("bytes")
            # Part of a head, no more, since its last answer (all written): a dead worker's client gets a 408.
            held.rest(held.http.wire.sent, in_head=True)
        elif held.state is HEAD:
            held.to("idle")  # only the empty lines allowed between requests came
            self._mark_reading(0)  # nothing read waits for an answer
        self._settle(held, step)

    def _linger(self, held: Held) -> None:
        """Its error is answered: what the client still sends is dropped, not blocked on (unread input would
        make the kernel reset the connection before the client reads its error), while the loop serves others."""
        with contextlib.suppress(OSError):
            held.sock.shutdown(socket.SHUT_WR)
        held.to("closing")
        held.linger_until = time.monotonic() + LINGER_SECONDS
        self._watch(held)

    def _read_body(self, held: Held, request: Request, tell: bool = True) -> None:
        """The loop reads ``request``'s body before the call. Its head is read: on a waiting line meanwhile,
        so that a dead worker's client gets its 502 whichever connection the loop reads next. A client that
        waits for 100 Continue is told it now (``tell``), or by the caller once the body is not refused."""
        held.request = request
        held.to("buffer")
        self.waiting.add(held.msg.conn_id, held.line_of(request))
        self._mark_reading(0)
        if tell:
            self._continue(held)

    def _continue(self, held: Held) -> None:
        """The 100 Continue ``held``'s client waits for, if it waits for one, before it sends its body."""
        with contextlib.suppress(ClientGone):
            held.http.wire.send_now(held.http.continue_now())

    def _spool_body(self, held: Held) -> None:
        """What came of a spooled body goes to its file; the call is made once it is whole. A body the client
        broke is answered here (400, 413), with no call."""
        http = held.http
        try:
            ready = http.spool_body()
        except (ProtocolError, OSError) as exc:
            if isinstance(exc, OSError):
                why = exc if isinstance(exc, SpoolFull) else f"cannot write a temporary file ($TMPDIR): {exc}"
                # A client's body each, while the disk is full or the spool's total is spent.
                flood.WORKER.log(flood.NOT_SPOOLED, log, logging.ERROR, "conn %d: request body of %s not spooled: "
                                 "%s: 503", held.msg.conn_id, quoted_request_line(held.request), why)
                exc = ProtocolError(503, "request body not spooled")
            self.waiting.remove(held.msg.conn_id)  # answered: nothing read waits any more
            http.refuse(exc, linger=False)
            self._linger(held)
            return
        self._body_read(held, ready)

    def _settle(self, held: Held, step: Step) -> None:
        """Idle or partial: wait for more in the poller, or, idle in a worker that takes nothing new, go back."""
        owner = self.owner
        if step is _IDLE and (owner.retiring or owner.recycling or (self.in_call >= self.ceiling and self._stalled())):
            self._release(held)
            return
        if step is _IDLE and held.state is IDLE:
            # Every byte read is answered, and written (the WSGI runner buffers no output): a dead worker's
            # supervisor parks this client.
            held.rest(held.http.wire.sent)
        if not held.watched:
            self._watch(held)

    def _ready(self, held: Held, request: Request, event: str) -> None:
        """A request is parsed (``event``: "head", or "body" once its body is buffered, or "taken" once its client
        took its answers before it): called at once, or queued; or, its client taking none of those answers, it
        waits for room first (UNREAD, ``_unread``)."""
        held.request = request
        if held.http.wire.sent > held.look_at and self._unread(held):
            return
        if self._serve_now and not self.ready and not self._standby and (not self.mix.hand_off or self._fast(request)):
            # The loop thread is free and nothing waits before it: call at once. The call's own line
            # names the request from its first moment, so it needs no waiting line of its own.
            if event != "head":
                self.waiting.remove(held.msg.conn_id)  # the one it had while its body came, or its client read
            self._call_inline(held, "serve")
            return
        self._on_waiting_line(held, request, event)
        self.ready.append(held)

    def _on_waiting_line(self, held: Held, request: Request, event: str) -> None:
        """``held``'s request waits (``event``: to QUEUED, for an app thread; to UNREAD, for its client), on a
        waiting line of the scoreboard: a 502 if the worker dies."""
        held.to(event)
        self.waiting.add(held.msg.conn_id, held.line_of(request))
        self._mark_reading(0)  # on its waiting line now

    def _unread(self, held: Held) -> bool:
        """``held`` has been sent OUTPUT_LOOK bytes since its client last showed room: True when it shows none now.
        Its request then waits here, UNREAD, on a waiting line, its socket watched for room, for send_timeout at most
        (owner.due): no app thread's write waits for a client that reads nothing, however much it pipelines."""
        wire = held.http.wire
        if wire.has_room():
            held.look_at = wire.sent + OUTPUT_LOOK
            return False
        request = held.request
        assert request is not None
        self._on_waiting_line(held, request, "unread")
        self._watch(held, events=select.EPOLLOUT)
        return True

    def _taken(self, held: Held) -> None:
        """An UNREAD connection's socket has room: its request goes on (called at once, or queued)."""
        self._unwatch(held)
        held.look_at = held.http.wire.sent + OUTPUT_LOOK
        request = held.request
        assert request is not None
        self._ready(held, request, "taken")

    def _buffer_body(self, held: Held, eof: bool) -> None:
        # Whole, or cut short by the client: the call goes ahead, and a cut body is answered as any
        # other (400, from the app's read of wsgi.input). Its deadline runs from the head, in total.
        self._body_read(held, eof or not held.http.body_to_buffer())

    def _body_read(self, held: Held, done: bool) -> None:
        """What came of a body read before its call (buffered or spooled): ``done``, the call goes ahead (or waits
        its turn); else the loop watches for more."""
        if done:
            request = held.request
            assert request is not None
            self._ready(held, request, "body")
        else:
            self._watch(held)

    def _watch(self, held: Held, registered: bool = False, events: int = select.EPOLLIN) -> None:
        """Watch ``held`` for input, or for ``events`` (room to write: UNREAD, watched for input or not before);
        ``registered``: its pool thread put its fd in the poller already (_finished)."""
        if not held.watched:
            fd = held.sock.fileno()
            if not registered:
                self.poller.register(fd, events)
            self.watching[fd] = held
            held.watched = True
        elif events != select.EPOLLIN:
            self.poller.modify(held.sock.fileno(), events)

    def _unwatch(self, held: Held) -> None:
        if held.watched:
            fd = held.sock.fileno()
            self.poller.unregister(fd)
            del self.watching[fd]
            held.watched = False

    def _answer_health(self, held: Held, request: Request) -> bool:
        """On the loop thread, not counted as a request: the app is not called. True when the connection goes
        on (the caller looks for its next request); else it is closed."""
        self._mark_reading(0)  # answered here: nothing read waits
        if held.http.serve(request):
            held.to("answer")
            return True
        self._close(held)
        return False

    def _dispatch_ready(self) -> None:
        """Give each ready request an app thread. The loop thread, app thread 0, serves them
        itself one after the other (no hand-off: most calls are short), for DISPATCH_TURN a turn, unless calls
        were slow lately;
        the monitor, holding the loop's role while the loop thread is in a slow call, gives them to the
        pool. What finds no thread waits, out of the poller, for a call to end or for the stall
        hand-back."""
        ready = self.ready
        began = time.monotonic()
        while ready:
            on_loop = not self._standby  # the loop thread itself, free to serve
            if (not on_loop or (self.mix.hand_off and not self._fast(ready[0].request))) and self._submit(ready[0]):
                ready.popleft()
            elif on_loop:
                self._call_inline(self._next_ready(), "call")
                if ready and time.monotonic() - began >= DISPATCH_TURN:
                    return  # the rest wait for the next turn, behind what the other connections sent meanwhile
            else:
                for waiting in ready:
                    self._unwatch(waiting)  # its app thread will read it; the loop must not meanwhile
                return

    def _fast(self, request: Request | None) -> bool:
        """Whether ``request``'s path has rarely made a slow call lately."""
        shares = self._slow_share
        return shares is not None and request is not None and shares.get(request.path, 1.0) < FAST_SHARE

    def _next_ready(self) -> Held:
        held = self.ready.popleft()
        self.waiting.remove(held.msg.conn_id)  # its call's line names it from now on
        return held

    def _submit(self, held: Held) -> bool:
        """Hand ``held`` to a pool thread (an idle one, or one started for it); False when all are in calls."""
        if self.pool is None:
            return False
        if not self.pool.submit(held):
            return False
        # Its thread's line names it now (_begin): its waiting line goes. For a moment the books show the
        # call twice, which a dead worker's verdicts read as one (by connection).
        self.waiting.remove(held.msg.conn_id)
        held.to("call")
        self.in_call += 1
        self._unwatch(held)  # its app thread reads the body; the loop must not
        return True

    def _call_inline(self, held: Held, event: str) -> None:
        """Run ``held``'s call on the loop thread (``event`` moves it into CALL: "serve" for a request
        called the moment it is read, "call" for one that waited), then decide what comes next."""
        held.state = held.state.moves[event][0]  # connstates.ROW_MOVES
        self.in_call += 1
        self._inline_held = held
        # A request that this call leaves ready (pipelined) queues, and is served after it, not inside it.
        self._serve_now = False
        if self._monitor_asleep:
            self._call_begun.set()
        self.lock.release()  # the monitor may take the loop's role meanwhile
        try:
            # _begin on line 0, without its call.
            request = held.request
            assert request is not None
            started = self.call_started[0] = time.monotonic()
            line = held.call_line if request is held.call_of else held.line_of(request)  # line_of's usual answer
            self.slots[0].begin(line, held.msg.conn_id, now=started)
            keep = self._serve(0, held, started)
        finally:
            if self._standby:  # the monitor is the loop now: wake it, so that it gives the role back
                with contextlib.suppress(OSError):
                    self._wake_w.send(b"x")
            self.lock.acquire()
            self.in_call -= 1
            self._inline_held = None
        try:
            if self._after(held, keep):
                if held.http.engine.idle:  # nothing pipelined: what _advance would find, without asking it
                    if self._went_idle(held):
                        held.rest(held.http.wire.sent)  # as _settle marks it
                else:
                    self._advance(held)  # a pipelined request queues behind (not called inside this one)
        finally:
            self._serve_now = True

    def _went_idle(self, held: Held) -> bool:
        """A call is over, its connection back in IDLE with nothing read behind it: _settle, unless its usual
        answer holds (still in the poller, in a worker that takes new requests and has a free app thread). True
        when it held: the caller marks the rest, if not marked yet."""
        owner = self.owner
        if held.watched and self.in_call < self.ceiling and not owner.retiring and not owner.recycling:
            return held.state is IDLE
        self._settle(held, _IDLE)
        return False

    def _begin(self, line: int, held: Held) -> float:
        """Stamp ``held``'s call on ``line``, on the loop thread: for a pool thread, before the thread has
        it (while it is idle its line is the loop's to write), so that a request is on a line at every
        moment from its waiting line on, and a dead worker's client gets its 502. Returns the stamp's time."""
        request = held.request
        assert request is not None
        now = self.call_started[line] = time.monotonic()
        self.slots[line].begin(held.line_of(request), held.msg.conn_id, now=now)
        return now

    def _serve(self, index: int, held: Held, started: float = 0.0) -> bool:
        """Run ``held``'s call, stamped on line ``index`` already (_begin, at ``started`` when that was on
        this thread), then end it there."""
        request = held.request
        assert request is not None
        held.request = None
        slot = self.slots[index]
        if not started:
            started = time.monotonic()  # the call's own time, from here: a pool thread's wake-up is not the app's
        try:
            return held.http.serve(request, slot)
        finally:
            self.call_started[index] = 0.0
            slot.end()
            ended = time.monotonic()
            lasted = ended - started
            if lasted >= GROW_AFTER:
                mix = self.mix
                mix.slow += 1  # a hint: a count lost to a race between threads does not matter
                if lasted >= RELAXED_LOOK:
                    mix.long += 1
                if self._slow_share is not None:
                    self._note_path(request.path, lasted >= PATH_SLOW)
            elif self.mix.hand_off:
                # Only while calls are handed off is a short call's path written down: before, no path is
                # judged, and a worker of short calls pays nothing per request for the books.
                self._note_path(request.path, False)
            if self.tallies is not None:
                self.tallies[index].record(held.msg.listener, request.method, held.http.status, lasted)

    def _note_path(self, path: bytes, slow: bool) -> None:
        """One more call on ``path`` in its moving share of slow calls (hints: a lost update only delays a
        path's move)."""
        shares = self._slow_share
        assert shares is not None
        share = shares.get(path)
        if share is None:
            if len(shares) >= ROUTES_KEPT:
                shares.clear()
            share = 1.0
        shares[path] = share + ((1.0 if slow else 0.0) - share) * PATH_WEIGHT

    def _after(self, held: Held, keep: bool) -> bool:
        """A call is over: count it, and close its connection or bring it back to IDLE, or, with its response's tail
        in its outbox, leave it SENDING; True if it persists (the caller then looks for the next request: a pipelined
        one may be buffered already)."""
        sending = held.http.wire.outbox is not None
        if self.owner.served(held, keep and not sending):  # back to IDLE if it persists
            report(self.chan, handoff.Message(handoff.RECYCLE))
        if sending:
            held.close_after = not keep
            held.taken = held.http.wire.taken()
            held.to("sending")
            self._watch(held, events=select.EPOLLOUT)
            return False
        if not keep:
            self._close(held)
            return False
        return True

    def _send_tail(self, held: Held) -> None:
        """SENDING, and its socket has room: what the kernel takes of the outbox goes. Its deadline moves on a second
        per BODY_MIN_RATE bytes taken, as a body's does: a client at a real pace is never cut, a trickle is. Once all
        of it is out, the connection goes on as after its call (or closes, its response not persisting)."""
        wire = held.http.wire
        try:
            out = wire.send_outbox()
        except ClientGone:
            self._close(held)
            return
        self._moved_on(held, time.monotonic())
        if not out:
            return
        if held.close_after:
            self._close(held)
            return
        self._unwatch(held)  # watched for room; from here for input
        held.to("sent")
        self._advance(held)  # a request it pipelined meanwhile, or idle

    def _moved_on(self, held: Held, now: float) -> None:
        """SENDING: move its deadline on a second per BODY_MIN_RATE bytes its client took since the last look. Read
        from the kernel's queue, not from room to write: a client that reads steadily may free a large send buffer's
        third only long after send_timeout."""
        taken = held.http.wire.taken()
        held.since = min(now, held.since + (taken - held.taken) / BODY_MIN_RATE)
        held.taken = taken

    # ------------------------------------------------------------------ app threads

    def _finished(self, held: Held, keep: bool) -> None:
        """On a pool thread, its call over: the loop takes it from here. A connection that goes on with nothing
        read behind its request is put back in the poller by this thread, its last act on it, and the loop is not
        woken for it: its client's next request wakes the loop, which takes this end first (_turn). Waking the loop
        to put it back would cost a thread switch and the GIL's hand-over before the next request could be read."""
        armed = keep and held.http.engine.idle and held.http.wire.outbox is None
        if armed:
            held.rest(held.http.wire.sent)  # as _settle marks it: every byte read is answered, and written
        # Every end goes in under the lock, armed or not: _take_done empties the list under it, and an end put
        # in between its copy and its clear would be lost (its connection never closed or served again).
        with self._arm_lock:
            self._done.append((held, keep, armed))
            if armed:
                try:
                    self.poller.register(held.sock.fileno(), select.EPOLLIN)
                except (OSError, ValueError):
                    armed = False
                    self._done[-1] = (held, keep, armed)  # not put back: the loop does it, woken below
        # Woken all the same while requests wait for a thread (the pool at its ceiling): this one is free now, and
        # they would wait for the loop's next event, up to a TICK. A request queued after this look finds the
        # thread idle already (AppThreads frees it before this runs).
        if armed and not self.ready:
            return
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _take_done(self) -> None:
        """The calls ended on pool threads: each connection closed, or back to IDLE and watched (a pipelined
        request goes on at once). Under _arm_lock: a connection its thread is putting back is in the poller
        once the lock is free."""
        done = self._done
        with self._arm_lock:
            ended = list(done)
            done.clear()
        for held, keep, armed in ended:
            self.in_call -= 1
            if armed:
                self._watch(held, registered=True)
            if self._after(held, keep):
                if armed:
                    self._went_idle(held)
                else:
                    self._advance(held)

    def _monitor(self) -> None:
        """With the loop thread as app thread 0: once its call has lasted a while, take the loop's role
        until the call ends. As the loop, it starts pool threads for the requests that wait (a pool
        that may grow takes over after GROW_AFTER), or, with none to start, hands them back when the
        worker stalls (handback_after)."""
        slow = max(0.005, self.handback_after / 2)
        after = GROW_AFTER if self.pool is not None else self.handback_after
        interval = min(after, slow)
        relaxed = max(interval, RELAXED_LOOK)
        # Growing, while long calls are rare: take over only once the call has lasted a relaxed look. On a
        # busy machine the scheduler makes a short call last a millisecond far more often than ten; a
        # take-over then finds a queue of short requests and hands them to pool threads for nothing.
        patient = max(after, relaxed) if self.pool is not None else after
        quiet, seen = 0, -1
        owner, mix = self.owner, self.mix

        while not owner.done:
            # While calls are handed off, the loop thread calls only paths that are rarely slow: it looks,
            # and takes over, at the relaxed pace, as where long calls are rare; a look each GROW_AFTER
            # would cost the loop thread the GIL a thousand times a second for calls that seldom need it.
            common = mix.long_common(owner.requests) and not mix.hand_off
            if quiet >= QUIET_LOOKS:
                # Nothing served for a while: sleep until a call starts (the loop sets the event), not
                # waking every GROW_AFTER on an idle worker.
                self._monitor_asleep = True
                if self.call_started[0] or self._call_begun.wait(slow):
                    quiet = 0  # serving again: look every GROW_AFTER
                self._call_begun.clear()
                self._monitor_asleep = False
            else:
                time.sleep(interval if common else relaxed)
            if self.pool is not None:
                mix.look(time.monotonic(), owner.requests)
            started = self.call_started[0]
            if not started:
                quiet = quiet + 1 if owner.requests == seen else 0
                seen = owner.requests
                continue
            quiet = 0
            # The lock is free only while the loop thread is inside its call. The connections closed
            # before that call go in one DONE at the end of the loop's turn (one message for a batch of
            # `Connection: close` clients, not one each), unless the call lasts: then they go from here.
            lasted = time.monotonic() - started
            take_after = after if common else patient
            if ((lasted >= take_after or (lasted >= GROW_AFTER and self.closed.ids))
                    and self.lock.acquire(blocking=False)):
                try:
                    if lasted >= take_after:
                        if lasted >= RELAXED_LOOK:
                            mix.long += 1  # long already: on an otherwise quiet worker, common now
                        if self.pool is not None:
                            # A new thread once none has been given work for GROW_AFTER while long calls
                            # are common, else for a relaxed look: a take-over that finds short requests
                            # waiting lets the threads that free up serve them, not a thread for each.
                            self.pool.start_every = GROW_AFTER if mix.long_common(owner.requests) else relaxed
                        self._take_over()
                    else:
                        self.closed.report()
                finally:
                    self.lock.release()

    def _take_over(self) -> None:
        """The monitor, holding the lock while the loop thread is in its call: be the loop until it ends."""
        self._standby = True
        try:
            if not self.call_started[0]:
                return  # it ended meanwhile, and the loop thread waits for the lock
            if self._inline_held is not None:
                self._unwatch(self._inline_held)  # its call reads it; this loop must not
            self._timers(time.monotonic())  # a stalled worker hands back at once
            while self.call_started[0]:
                self._turn(self._standby_tick())
        finally:
            self._standby = False

    def _standby_tick(self) -> float:
        """How long the standing-in loop may wait for events: requests that wait for a thread to start
        (once none has been given work for pool.start_every) are given out again when one may."""
        start_in = self.pool.start_in() if self.ready and self.pool is not None else None
        return TICK if start_in is None else min(TICK, start_in)

    # ------------------------------------------------------------------ hand-back and timers

    def _stalled(self) -> bool:
        """Every app thread up to the ceiling has been in one call for longer than handback_after."""
        if self.in_call < self.ceiling:
            return False
        now = time.monotonic()
        return all(started and now - started > self.handback_after for started in self.call_started)

    def _timers(self, now: float) -> None:
        if self._stalled():
            self._hand_back_waiting()
        self._carry_out_deadlines(now)

    def _time_out(self, held: Held, what: Due) -> None:
        if what is Due.HEAD_TIMEOUT:
            held.http.head_timed_out()
        elif what is Due.BODY_TIMEOUT:
            held.http.body_timed_out()
        elif what is Due.SEND_TIMEOUT and held.state is SENDING:
            now = time.monotonic()
            self._moved_on(held, now)
            if due(held, now, 0.0, self.stopping) is None:
                return  # its client reads, more slowly than room to write would show
            held.http.response_not_taken()
        elif what is Due.SEND_TIMEOUT:
            held.http.answers_not_taken(held.request)
        self._close(held)  # DROP: it sent nothing, and is told nothing

    def _closing(self, held: Held, now: float) -> None:
        if now > held.linger_until:
            self._close(held)  # the linger is over

    def _hand_back_waiting(self) -> None:
        """Stalled: every connection not in a call goes back, with what it has read (owner.stall_hand_backs)."""
        for held, data, head_started in self.owner.stall_hand_backs():
            if held.state is QUEUED:
                self.ready.remove(held)
            self.waiting.remove(held.msg.conn_id)  # queued, or its body coming
            self._unwatch(held)
            self.owner.gone(held, "hand_back")
            hand_back(self.chan, held.msg, held.sock, data, head_started)
            held.http.release()
        # Connections already on their way in go straight back too.
        self._read_channel()

    def _release(self, held: Held) -> None:
        if self.stopping:
            self._close(held)
            return
        self._unwatch(held)
        self.owner.gone(held, "park")
        hand_back(self.chan, held.msg, held.sock, held.unparsed(), held.head_started)
        held.http.release()

    def _close(self, held: Held) -> None:
        if held.watched:  # usually not: a Connection: close request ends in its call, out of the poller
            self._unwatch(held)
        if held.state is not CALL:  # a call's connection is on its thread's line, on no waiting one
            self.waiting.remove(held.msg.conn_id)  # one whose body was coming (timed out, or the worker stops)
        # The supervisor holds a copy of every connection a worker holds, so close() alone would not
        # end it: shutdown() sends the client its FIN now.
        try:  # noqa: SIM105 - once a connection: contextlib.suppress costs about half a microsecond more
            held.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the client is gone already
        held.sock.close()
        held.http.release()
        self.owner.gone(held, "close")

    def _retire(self) -> None:
        """EOF on the channel: hand back what waits, finish what is in calls, then exit."""
        with contextlib.suppress(OSError, ValueError):
            self.poller.unregister(self.chan)
        self._park_on_retire()

    def _is_stopping(self) -> bool:
        return self.stopping or self.draining
