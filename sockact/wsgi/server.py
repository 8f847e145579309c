"""A WSGI app on one connection: the engine's requests become environ and calls, and the app's
answers go out through the engine.

``HTTPConnection`` is what the WSGI runner drives: it feeds received bytes in, takes request heads
out, and serves each one on an app thread, reading the body and writing the response with blocking
waits bounded by the site's timeouts. It never closes the socket and never raises for what a client
sends or an app does. blocking.py serves a connection start to end with it, for tests and tools.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import socket
import stat
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sockact.errors import APP_FAILURES, InvalidResponse, ProtocolError
from sockact.http.dates import http_date
from sockact.http.engine import DONE, Connection
from sockact.http.events import NEED_DATA, Data, Request
from sockact.http.limits import COALESCE_MAX, DRAIN_LIMIT, SPOOL_READ, SpoolBudget, SpoolFull
from sockact.http.logline import connection_entry, entry_for, quoted_request_line
from sockact.http.requests import line_text
from sockact.http.responses import length_missed
from sockact.http.site import Site, health_response, is_health, local_address
from sockact.logs import flood
from sockact.logs.access import Entry, unix_peer
from sockact.logs.journal import ErrorStream
from sockact.wsgi.environ import (
    NO_BODY,
    FileWrapper,
    InputStream,
    StartResponse,
    close_iterable,
    connection_environ,
    ended,
    fields_environ,
    line_environ,
    put_line,
    request_part,
    site_environ,
)
from sockact.wsgi.wire import ClientGone, ClientTimedOut, Wire

if TYPE_CHECKING:
    import tempfile

    from sockact.ipc.scoreboard import SlotWriter

log = logging.getLogger("sockact.http")
app_log = logging.getLogger("sockact.app")  # what the app writes to wsgi.errors


def spool_dir(environ: Mapping[str, str]) -> str | None:
    """Where a spooled body's file goes: $TMPDIR, else /var/tmp, not /tmp. Where /tmp is a tmpfs (Debian
    13's default) a body there would be held in memory, charged to the service's cgroup; /var/tmp is on
    disk (under the packaged unit, the service's own: PrivateTmp=yes). None: tempfile's own choice."""
    return environ.get("TMPDIR") or ("/var/tmp" if os.access("/var/tmp", os.W_OK | os.X_OK) else None)


class Step(enum.Enum):
    """Where a connection stands when no request is ready to serve."""

    IDLE = "idle"  # between requests with nothing buffered: may be parked
    PARTIAL = "partial"  # part of a request head is buffered: keep reading until header_timeout
    CLOSE = "close"  # finished: close it
    LINGER = "linger"  # a protocol error was answered: read and drop what still comes, then close


# This process's pid for the access log, without a getpid() per connection; a forked child renews it.
_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


class _Codes(dict[str, int]):
    """The code of a checked status line ("200 OK": 200), made once for the few an app sends."""

    def __missing__(self, status: str) -> int:
        code = int(status[:3])
        if len(self) < 256:  # bounded: an app may put anything in the reason
            self[status] = code
        return code


_codes = _Codes()

# By listener (its Site's id), the last `Connection: close` request served on it, with the scheme and SCRIPT_NAME
# it was served under, its line's text, and what its line and fields put in an environ (environ.request_part;
# None when that depends on the connection): each such client of a benchmark, or of a health checker, sends the
# same head. One tuple, replaced whole: another thread sees the old one or the new one.
_LineText = tuple[str, str, str, str, str]
_last_close: dict[int, tuple[Request, Site, tuple[str, str], _LineText, dict[str, Any] | None]] = {}
_LAST_CLOSE_MAX = 64  # a worker has one Site a listener; a process that makes many (tests) starts over


def _body(data: Any) -> bytes:
    if type(data) is not bytes:
        raise InvalidResponse(f"response body must be bytes, not {type(data).__name__}")
    return data


class HTTPConnection:
    """One client connection driven from outside: feed bytes, take requests, serve them; what its
    requests share (the engine, the wire, the environ made for the last one) lives here.

    The event loop that owns the socket reads it (``receive``) and asks ``next_request``;
    an app thread then runs ``serve`` for the request, which reads the body and writes
    the response with blocking waits bounded by ``site.io_timeout``. Nothing here closes
    the socket, and nothing a client sends or an app does raises out of it.
    """

    # What a connection starts with and most never change: class attributes, read until a request sets its own.
    # A `Connection: close` client's connection is made for one request, and each store costs.
    request: Request | None = None  # the request in hand
    line: SlotWriter | None = None  # the scoreboard line of the call in progress, if any
    start: StartResponse | None = None
    body_error: ProtocolError | None = None
    wire_failed = False
    # The request body the loop read into a file before the call (body_spool), until the call ends.
    spool: tempfile.SpooledTemporaryFile[bytes] | None = None
    spooled = 0  # the bytes its spool took of the worker's (Site.spool_budget), given back with the file
    status = 0  # the status of the last response sent (0: none was sent)
    # The environ kept for a request that came again (engine.Connection gives the same Request for a repeated
    # head), which each of its calls copies, and whether its requests have a body (each then gets a stream of
    # its own; else NO_BODY is in it). A request's first environ goes to the app as made (_made_for): most
    # new requests do not repeat (a client's next head differs), and a copy kept for them is made for nothing.
    _environ_of: Request | None = None
    _environ: dict[str, Any]
    _made_for: Request | None = None
    _has_body = False
    # The environ of the last request's fields (engine.Connection gives the same list while they repeat).
    _fields_of: object = None
    _fields_env: dict[str, Any]
    # Its requests' access-log entry, filled again for each (with what its lines reuse while a request repeats),
    # made at the first line that needs one: a line the log gives again (AccessLog.log_again) needs none.
    log_entry: Entry | None = None

    def __init__(self, sock: socket.socket, site: Site, *, peer: tuple[Any, ...] | str | None, conn_id: int,
                 pending: bytes = b"", environ_extra: Mapping[str, Any] | None = None,
                 stopping: Callable[[], bool] = lambda: False, client: tuple[str, int] | None = None,
                 base_environ: Mapping[str, Any] | None = None) -> None:
        """``peer`` is the socket's peer; ``client`` the one a PROXY protocol header named, if any.
        ``base_environ``: the keys every connection of the site shares (site_environ's, and any extras
        of the caller's), prepared once as a plain dict, which copies faster than site_environ's view;
        ``environ_extra`` then holds this connection's own."""
        self.engine = engine = Connection(site.limits)
        self.wire = wire = Wire(sock, site.io_timeout, site.send_timeout or site.io_timeout)
        if site.outbox_budget is not None:  # the WSGI runner's loop writes what a response leaves in the outbox
            wire.outbox_budget = site.outbox_budget
            wire.may_keep = engine.sent_whole
        self.sock = sock
        self.site = site
        self.conn_id = conn_id
        self.errors = errors = ErrorStream(app_log, conn_id, site.listener, self.request_line)
        # The socket's peer is the one that wrote the fields, so it is the one trusted, or not.
        trust = site.trust
        self.trust = trust if trust.trusts_peer(peer) else None
        # An unnamed Unix-socket peer (the usual case) is known by its credentials, for the app and
        # the access log alike: REMOTE_ADDR "unix:pid=N,uid=N" rather than gunicorn's "".
        if client is not None:
            peer = client
        elif not peer and not isinstance(peer, tuple) and sock.family == socket.AF_UNIX:
            peer = unix_peer(sock)
        if base_environ is None:
            base_environ = site_environ(site.url_scheme, site.root_path, site.threaded)
        self.env = env = connection_environ(base_environ, peer, environ_extra)
        env["wsgi.errors"] = errors
        self.stopping = stopping
        self.access = access = site.access if site.access_log else None
        # The client as the access log names it, from the connection; per request, ``remote``: or as a trusted
        # proxy told it.
        self.remote = env["REMOTE_ADDR"]
        self._timed = access is not None and access.timed
        # Bound once, not on every request (the body's stream and the local address, asked for by few requests,
        # are bound when asked).
        self._write = self.write
        if pending:
            engine.receive_data(pending)

    def receive(self, data: bytes) -> None:
        """Bytes read from the client; b"" when it closed its side."""
        self.engine.receive_data(data)

    def next_request(self) -> Request | Step:
        """The next complete request head, or where the connection stands."""
        engine = self.engine
        try:
            event = engine.next_event()
        except ProtocolError as exc:
            self.refuse(exc, linger=False)  # the caller lingers, in its own way of waiting
            return Step.LINGER
        if event is NEED_DATA:
            return Step.IDLE if engine.idle else Step.PARTIAL
        if isinstance(event, Request):
            return event
        return Step.CLOSE

    def is_health(self, request: Request) -> bool:
        """Whether ``request`` asks for the listener's health path, which the app never sees."""
        return is_health(self.site, request)

    def serve(self, request: Request, line: SlotWriter | None = None) -> bool:
        """Run the app for ``request`` (or answer the health path) and answer it; True when the
        connection persists.

        ``line``, the call's scoreboard line, is told ``responded`` once, just before the first byte of the
        response is sent, with the bytes written on the connection before and the response's length if it
        goes in one send (else 0); and ``answered`` once the whole response is sent and the connection will
        persist (before the access line and the app's close()).
        """
        self.line = line
        access = self.access
        started = time.perf_counter() if self._timed else 0.0  # the access line's duration, if it shows one
        self.start = start = StartResponse(self._write)
        self.body_error = None
        self.wire_failed = False
        self.status = 0
        self.request = request
        site = self.site
        try:
            if site.health_path and is_health(site, request):
                keep = self._health(request, started)
            else:
                if site.client_budget:
                    self.wire.deadline = time.monotonic() + site.client_budget
                # A copy of the kept one (the app may change its own), or one made for this call (_renew_environ),
                # with the body's stream, which the next request does not share.
                environ = dict(self._environ) if request is self._environ_of else self._renew_environ(request)
                if self._has_body:
                    environ["wsgi.input"] = InputStream(self.pull_body if self.spool is None else self._pull_spooled)
                try:
                    result = site.app(environ, start)
                    if (type(result) is list and len(result) == 1 and type(result[0]) is bytes
                            and start.status is not None and not start.headers_sent):
                        keep = self._send_whole(start, result[0])
                    else:
                        keep = self._send_any(result, request)
                except APP_FAILURES as exc:  # the app's, or ours while sending; never the client's to see
                    keep = self._failed(exc)
                start.write = ended  # the write() it returned reaches no later response
                if keep and line is not None and self.wire.outbox is None:
                    # A worker that dies from here on leaves an idle connection, not a cut response (with a tail in
                    # the outbox, it is cut: the loop writes it, and the worker's death closes the connection).
                    line.answered()
                self.wire.deadline = math.inf
                if self.errors.pending:  # what the app wrote to wsgi.errors without a newline at its end
                    self.errors.flush()
                if access is not None:
                    self._access(request, self.status, started)
            if keep:
                self.engine.start_next_cycle()
            return keep
        except ClientGone as exc:
            log.debug("conn %d: client gone: %s", self.conn_id, exc)
        except Exception:
            # A bug of sockact's own: the worker lives on, this connection does not.
            log.exception("conn %d: internal error", self.conn_id)
        finally:
            if self.spool is not None:
                self.drop_spool()  # its disk space is freed with the call, whatever the app kept of wsgi.input
        return False

    def _renew_environ(self, request: Request) -> dict[str, Any]:
        """An environ made for ``request``'s call, which the call may keep; the second time a request comes, it
        is kept as well (``_environ``), for its later calls to copy. The engine gives the last request again
        for the same head, and the last fields (the same list) for a head that differs by its request line
        alone: what they give is made once."""
        if not request.keep_alive:
            # The connection's last request (Connection: close): nothing made here starts another, so one dict,
            # given to the app itself. What its line and fields give is the last such request's on the
            # listener when it is the same request (the engine gives a new connection the one the last parsed
            # for the same head): then the connection's own environ, updated, is the request's, and no copy.
            env, site = self.env, self.site
            scheme, root = env["wsgi.url_scheme"], env["SCRIPT_NAME"]
            last = _last_close.get(id(site))
            if last is not None and last[0] is request and last[1] is site and last[2] == (scheme, root):
                text, part = last[3], last[4]
            else:
                text = line_text(request)
                part = request_part(request.headers, text, scheme, root)
                if len(_last_close) >= _LAST_CLOSE_MAX:
                    _last_close.clear()
                _last_close[id(site)] = request, site, (scheme, root), text, part
            if part is not None:
                env.update(part)
            else:
                env = put_line(fields_environ(env, request.headers, self.local_address, self.trust), text)
            kept = False
        else:
            text = line_text(request)
            if request.headers is not self._fields_of:
                self._fields_env = fields_environ(self.env, request.headers, self.local_address, self.trust)
                self._fields_of = request.headers
            env = line_environ(self._fields_env, text)
            kept = request is self._made_for  # its second time
            self._made_for = request
        # A request without a body (no Content-Length, not chunked) reads nothing: one stream serves them all.
        self._has_body = bool(request.content_length or request.chunked)
        if not self._has_body:
            env["wsgi.input"] = NO_BODY
        if self.access is not None:
            if self.trust is not None:  # a trusted proxy's fields may name the client: the line names it too
                self.remote = env["REMOTE_ADDR"]
            entry = self.log_entry
            if entry is not None:
                entry.renew(request, text, request.headers)  # the access line's text: decoded once
        # Only the request whose environ is kept here may copy it: another one since (a chunked request, never
        # given again, leaves the engine's last request as it was) has set _has_body and the access line's client.
        self._environ_of = request if kept else None
        if kept:
            self._environ = env
            return dict(env)
        return env

    def body_to_buffer(self) -> int:
        """After a request head: the body bytes still to come, if the loop should read them before the
        app's call (a Content-Length body within the site's body_buffer); else 0."""
        limit = self.site.body_buffer
        if not limit:
            return 0
        engine = self.engine
        unread = engine.unread_body
        if not unread or unread + engine.buffered > limit:
            return 0
        return unread

    def body_to_spool(self) -> bool:
        """After a request head whose body is not buffered (body_to_buffer): whether the loop should read it
        into a file before the app's call (body_spool): a Content-Length body within the bound and not all
        here yet, or a chunked one (the bound applies to its decoded size as it comes, spool_body). A body
        longer than the worker's body_spool_total would get 503 even from an idle worker: the app reads it as
        it comes, as one past body_spool."""
        limit, budget = self.site.body_spool, self.site.spool_budget
        request = self.engine.request
        if not limit or request is None:
            return False
        if request.chunked:
            return True
        if budget is not None and budget.total:
            limit = min(limit, budget.total)
        return bool(self.engine.unread_body) and (request.content_length or 0) <= limit

    def spool_body(self) -> bool:
        """Move the body bytes received into the spool file (made at the first call): True when the app's
        call may begin, the body being whole, or a chunked one grown past body_spool (the app reads the rest
        as it comes, after the file); False while more is to come. Raises ProtocolError for a body the client
        broke (cut short, bad chunks, over limit_request_body), OSError when the file cannot be written, and
        SpoolFull (an OSError) when a new body would pass the worker's body_spool_total.

        A Content-Length body takes its whole length of the worker's budget at its start, so that slow
        clients cannot each start a spool the disk cannot hold; a chunked one takes a byte at its start (a
        full budget refuses it) and its decoded size as it comes: one that would pass the budget is read on
        by the app, as one past body_spool."""
        spool, budget = self.spool, self.site.spool_budget
        if spool is None:
            import tempfile  # here: it imports shutil, random, bz2 and lzma, which most workers never need

            # In memory up to body_buffer (a small chunked body), else a file unlinked at once (spool_dir).
            spool = self.spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by drop_spool
                max_size=self.site.body_buffer or 1, dir=spool_dir(os.environ))
            request = self.engine.request
            if budget is not None:  # after the file, which drop_spool closes whether this is taken or not
                need = 1 if request is None or request.chunked else request.content_length or 1
                budget.take(need)
                self.spooled = need
        engine, limit = self.engine, self.site.body_spool
        while True:
            event = engine.next_event()
            if type(event) is not Data:
                if event is NEED_DATA:
                    return False
                spool.seek(0)
                return True
            spool.write(event.data)
            size = spool.tell()
            if size > limit or (size > self.spooled and budget is not None and not self._spool_more(budget, size)):
                spool.seek(0)
                return True

    def _spool_more(self, budget: SpoolBudget, size: int) -> bool:
        """A chunked body's file grew to ``size``: take the growth of the worker's budget; False (nothing
        taken) when that would pass it."""
        try:
            budget.take(size - self.spooled)
        except SpoolFull:
            return False
        self.spooled = size
        return True

    def _pull_spooled(self) -> bytes:
        """wsgi.input's pull for a spooled body: the file, then whatever of the body is still to come."""
        spool = self.spool
        data = spool.read(SPOOL_READ) if spool is not None else b""
        return data or self.pull_body()

    def drop_spool(self) -> None:
        """Close the spool file: its disk space is freed (it has no name), and its share of the worker's budget."""
        spool, self.spool = self.spool, None
        if spool is not None:
            spool.close()
        spooled, self.spooled = self.spooled, 0
        if spooled and self.site.spool_budget is not None:
            self.site.spool_budget.give(spooled)

    def continue_now(self) -> bytes:
        """The 100 Continue a client waiting for one needs before it sends the body the loop buffers."""
        return self.engine.send_continue()

    def body_timed_out(self) -> None:
        """The buffered body stopped coming for io_timeout: 408, then the caller closes."""
        self.refuse(ProtocolError(408, "request body timed out"), linger=False)

    def response_not_taken(self) -> None:
        """The client took no bytes of its response for send_timeout (an app thread's write, or the outbox's in the
        worker's loop): said once, then the caller closes."""
        flood.WORKER.log(flood.SLOW_READER, log, logging.INFO, "conn %d: the client took no bytes of the response to "
                         "%s for %gs (send_timeout): connection closed", self.conn_id, self.request_line(),
                         self.wire.send_timeout)

    def answers_not_taken(self, waiting: Request | None) -> None:
        """The client took none of its answers for send_timeout while ``waiting`` waited behind them (UNREAD in the
        worker's loop): said once, then the caller closes."""
        flood.WORKER.log(flood.SLOW_READER, log, logging.INFO, "conn %d: the client took no bytes of the responses "
                         "before %s for %gs (send_timeout): connection closed", self.conn_id,
                         quoted_request_line(waiting), self.wire.send_timeout)

    def head_timed_out(self) -> None:
        """The head did not arrive in time: 408 if part of one came, then the caller closes."""
        if self.engine.buffered:
            self.refuse(ProtocolError(408, "request head timed out"), linger=False)

    def unparsed(self) -> bytes:
        """Bytes received and not yet parsed: what a new owner must be given with the socket."""
        return self.engine.unparsed()

    def release(self) -> None:
        """Drop what refers back to this object: the methods bound once, the last StartResponse (bound to
        write), the error stream (bound to request_line) and the environs that hold it. Each is a cycle, and
        a connection's whole state (its environs, engine, wire, log entry: some twenty objects) would wait
        for the cyclic collector; with one connection a request (Connection: close), its collections cost
        more than a tenth of a worker's time. An app that keeps an environ keeps what it needs alive."""
        self.start = None
        self.env = self._environ = self._fields_env = {}
        del self._write, self.errors
        if self.spool is not None:
            self.drop_spool()  # left while its body was coming (a 408, a stop)
        self.wire.drop_outbox()

    def request_line(self) -> str:
        """The request in hand as logs quote it: client text escaped (see logs.access.escape)."""
        return quoted_request_line(self.request)

    def local_address(self) -> tuple[str, str]:
        """SERVER_NAME and SERVER_PORT from the socket, for a request without Host."""
        local = local_address(self.site, self.sock)
        if isinstance(local, tuple):
            return local[0], str(local[1])
        return local or "", ""  # Unix: the path, as gunicorn

    def refuse(self, exc: ProtocolError, linger: bool = True) -> None:
        """Answer a client's protocol error and let the connection close."""
        log.debug("conn %d: %s", self.conn_id, exc)
        self.start = None  # no response of the app's goes with this one
        started = time.perf_counter()
        try:
            error = self.engine.error_response(exc.status, http_date())
            if linger:
                self.wire.send(error, keep=False)  # whole before the linger's shutdown
                self.wire.linger()
            else:
                # The caller is the worker's loop, which never waits for a client: one that has read none of what
                # went before, its buffer full, would hold every other connection until send_timeout. What fits
                # goes; the connection closes either way.
                self.wire.send_now(error)
        except ClientGone:
            pass
        self._access(self.engine.request, exc.status, started)

    def _send_whole(self, start: StartResponse, body: bytes) -> bool:
        """The common result, a one-item list of bytes after start_response: head and body in one
        send. What it does is _send_any's, for that case, in fewer steps. True if the connection persists."""
        status = start.status
        assert status is not None
        self.status = _codes[status]
        engine = self.engine
        head, data = engine.whole_response(status, start.headers, body, close=self.stopping())
        start.headers_sent = True
        # Rare: short of its Content-Length or past it, which ends the connection: one that persists was not.
        if not engine.keep_alive and (engine.length_left or engine.dropped):
            self._said_short()
        # All of the response in one send, on a connection that will persist: if the worker dies once
        # it is out, its client is as idle as after the call.
        whole = engine.keep_alive and engine.body_done()
        self._send_first(head, data, whole)
        return whole or (engine.keep_alive and self._drain())

    def _send_any(self, result: Any, request: Request) -> bool:
        """Any other result: iterated, written, or a file; True if the connection persists."""
        start = self.start
        assert start is not None
        try:
            self._send_result(result, request)
            if not start.headers_sent:
                # Nothing was written: the body is whole and empty, unless this is HEAD, whose
                # app may leave out a body of any length.
                self._send_head(b"", whole=None if request.method == b"HEAD" else 0)
            end = self.engine.end_response()
            if end:
                self._guarded_send(end)
            elif not self.wire_failed:
                self._said_short()
        finally:
            # After the response's end (and after an error, PEP 3333): a close() that raises fails a
            # response its client has whole, which then closes, as gunicorn's; before the end, its
            # chunked response was cut.
            if type(result) is not list:  # a list has no close(): skip the look-up
                close_iterable(result)
        return self.engine.keep_alive and not self.wire_failed and self._drain()

    def _said_short(self) -> None:
        if missed := length_missed(self.engine):
            log.error(missed[0], self.conn_id, *missed[1:], self.request_line())

    def _health(self, request: Request, started: float) -> bool:
        """The load balancer's question, answered without the app: 503 once stopping. On the worker's loop, which
        must never wait for a client: an answer the kernel has no room for (a client that pipelines checks and
        reads no answer) closes the connection, where a blocking send held every other client of the worker for
        send_timeout."""
        self.status, answer = health_response(self.engine, self.stopping())
        whole = self.wire.send_now(answer)
        if not whole:
            flood.WORKER.log(flood.HEALTH_UNREAD, log, logging.INFO, "conn %d: the client has not read its answers, "
                             "and the health check's does not fit: closed", self.conn_id)
        self._access(request, self.status, started)
        return self.engine.keep_alive and whole

    def _send_result(self, result: Any, request: Request) -> None:
        start = self.start
        assert start is not None
        if type(result) in (list, tuple) and len(result) == 1 and not start.headers_sent:
            # The whole body is known: the engine can frame it with a length rather than chunked.
            self._send_head(_body(result[0]), whole=len(result[0]))
            return
        if isinstance(result, FileWrapper) and self._send_file(result):
            return
        for chunk in result:
            if chunk:
                self.write(chunk)

    def write(self, data: bytes) -> None:
        """PEP 3333 write(): send ``data`` now, after the head if it is not sent yet."""
        start = self.start
        assert start is not None
        if start.headers_sent:
            self._guarded_send(self.engine.send_data(_body(data)))
        else:
            self._send_head(_body(data))

    def _send_head(self, first: bytes, whole: int | None = None) -> None:
        """The head, with the first piece of body; ``whole``: the body is known to be that long."""
        start = self.start
        assert start is not None
        if start.status is None:
            raise InvalidResponse("the application sent a body before calling start_response()")
        self.status = _codes[start.status]
        head = self.engine.start_response(start.status, start.headers, close=self.stopping(), date=http_date(),
                                          whole=whole)
        start.headers_sent = True
        self._send_first(head, self.engine.send_data(first) if first else b"")

    def _send_first(self, head: bytes, body: bytes, whole: bool = False) -> None:
        """A response's first bytes: its head, with its body's start in one send when small (``whole``:
        that is all of the response, and the connection persists after it)."""
        # Marked begun right before the send, never after it (a 502 after bytes went out would land
        # inside this response), with what was written before it: if the worker dies meanwhile, the
        # kernel's count of bytes written tells the supervisor whether any of this response went out.
        wire = self.wire
        wire.begun = wire.sent  # the outbox takes a tail of it only once some of it is out
        if self.line is not None:
            self.line.responded(wire.sent, len(head) + len(body) if whole else 0)
        # _guarded_send's steps, without its call: this runs for every response.
        try:
            if len(body) <= COALESCE_MAX:
                wire.send(head + body if body else head)
            else:
                wire.send(head, body)
        except ClientGone:
            self.wire_failed = True
            raise

    def _guarded_send(self, data: bytes, *more: bytes) -> None:
        try:
            self.wire.send(data, *more)
        except ClientGone:
            self.wire_failed = True
            raise

    def _send_file(self, wrapper: FileWrapper) -> bool:
        """Send a regular file with sendfile(); False to fall back to iterating it."""
        start = self.start
        assert start is not None
        try:
            fd = wrapper.filelike.fileno()
            st = os.fstat(fd)
            offset = os.lseek(fd, 0, os.SEEK_CUR)
        except (AttributeError, OSError, ValueError):
            return False
        if not stat.S_ISREG(st.st_mode) or start.status is None:
            return False
        size = max(0, st.st_size - offset)
        self._send_head(b"", whole=size)
        count = self.engine.length_left
        if count:
            self.engine.count_sent(self._wire_sendfile(fd, offset, min(count, size)))
        return True

    def _wire_sendfile(self, fd: int, offset: int, count: int) -> int:
        try:
            return self.wire.sendfile(fd, offset, count)
        except ClientGone:
            self.wire_failed = True
            raise

    def pull_body(self) -> bytes:
        """The next piece of the request body for wsgi.input; b"" at its end."""
        engine = self.engine
        while True:
            try:
                event = engine.next_event()
            except ProtocolError as exc:
                self.body_error = exc
                raise
            if isinstance(event, Data):
                return event.data
            if event is not NEED_DATA:
                return b""
            interim = engine.send_continue()
            if interim:
                self._guarded_send(interim)
            try:
                # A body that makes no progress for send_timeout is given up, as a response is.
                engine.receive_data(self.wire.recv(self.wire.send_timeout))
            except ClientTimedOut:
                self.body_error = ProtocolError(408, "request body timed out")
                raise
            except ClientGone:
                self.wire_failed = True
                raise

    def _drain(self) -> bool:
        """Read and drop what is left of the request body, if small; True if that worked."""
        if self.engine.state == DONE:
            return True
        dropped = 0
        try:
            while dropped <= DRAIN_LIMIT:
                data = self.pull_body()
                if not data:
                    return True
                dropped += len(data)
        except (ProtocolError, ClientGone):
            pass
        return False

    def _failed(self, exc: BaseException) -> bool:
        """After the app or the response failed: answer if still possible; always close."""
        start = self.start
        if self.wire.send_stalled:
            if self.wire.past_deadline:
                flood.WORKER.log(flood.SLOW_READER, log, logging.INFO, "conn %d: the client took the response to %s "
                                 "too slowly to end before timeout (%gs): connection closed", self.conn_id,
                                 self.request_line(), self.site.io_timeout)
            else:
                self.response_not_taken()
            return False
        if self.wire_failed:
            log.debug("conn %d: client gone while serving: %s", self.conn_id, exc)
            return False
        if self.body_error is not None:
            status = self.body_error.status
            if status == 408:
                flood.WORKER.log(flood.SLOW_BODY, log, logging.INFO, "conn %d: the request body of %s stopped coming "
                                 "for send_timeout, or came too slowly to end before timeout: 408", self.conn_id,
                                 self.request_line())
            else:
                log.debug("conn %d: bad request body: %s", self.conn_id, exc)
        else:
            status = 500
            # One record, traceback included: one journal entry at PRIORITY=3 (err).
            log.error("conn %d: application error on %s", self.conn_id, self.request_line(), exc_info=exc,
                      extra=self.errors.fields())
        if start is not None and start.headers_sent:
            return False  # the client sees a response cut short, which is the truth
        self.status = status
        unread = self.engine.unread_body != 0 or self.engine.buffered
        if self.line is not None:
            self.line.responded(self.wire.sent, 0)
        try:
            self.wire.send(self.engine.error_response(status, http_date()), keep=False)  # whole: a linger may follow
            if unread:
                self.wire.linger()
        except ClientGone:
            pass
        return False

    def _access(self, request: Request | None, status: int, started: float) -> None:
        access = self.access
        if access is None:
            return
        entry = self.log_entry
        if entry is None:
            # A connection's first line is often the last one another connection's request made: then it
            # needs no entry of its own (a Connection: close client's connection logs one line).
            if request is not None and access.log_again(request, request.headers, self.remote, status,
                                                        self.engine.body_sent, time.time()):
                return
            entry = self.log_entry = connection_entry(self.remote, _pid[0], self.conn_id, self.site.listener)
        entry.remote = self.remote
        memo = entry.memo
        if memo is None or request is not memo.key:  # else entry_for's answer, without its call: the same request
            entry_for(entry, request)
        start = self.start
        access.log_response(entry, status, self.engine.body_sent, started,
                            start.headers if start is not None else ())
