"""The sans-I/O HTTP/1.1 server side of one connection. No socket or select here.

Feed bytes with ``receive_data`` (``b""`` means the client closed), pull events with
``next_event``: a ``Request`` head, ``Data`` of its body, ``END_OF_MESSAGE``, or
``NEED_DATA`` / ``PAUSED`` / ``CONNECTION_CLOSED``. A client's error raises
ProtocolError, whose status is the answer. The response goes the other way:
``start_response`` / ``send_data`` / ``end_response`` return the bytes to send and
decide framing and persistence. After both messages end, ``start_next_cycle``.

States of the request side, in order: IDLE (waiting for a head, maybe part of one
buffered) -> BODY -> DONE (paused until the response ends) -> IDLE again, or ERROR.

httptools parses. It reports no byte offsets, so the engine itself finds where each
message ends and feeds httptools exactly one message: the head up to its empty line
(found by search, checked by rules.check_head), then a Content-Length body counted
by the engine, or a chunked body walked by chunked.ChunkedFraming. A parser serves
one message, and the next one only when it ended the last cleanly (a body-less request
on a persistent connection, after which it is back at its start), so nothing of one
request's parse state leaks into the next; and a connection can be handed on with its
unparsed bytes (``unparsed``) between messages, in a partial head, or after a head nobody
has begun to serve.
A head byte for byte the same as the last one parsed whole on the connection (keep-alive clients
send the same few again and again) gives the same request again without either step: a head's
request depends on its bytes and the limits alone. So a new connection starts from the last head
parsed whole by any connection with the same limits (a listener's): clients that close after one
request (``Connection: close``) mostly send the head the last one did. Chunked and upgrade requests
are parsed anew.
A head that differs from the last one by its request line alone (a query, a path) has the raw checks and
httptools run on that line, and takes the fields, as parsed and ruled then, from the last head, when those
fields give no body and ask no upgrade.
The events are defined in events.py.
"""

from __future__ import annotations

import time

import httptools

from sockact.errors import ProtocolError
from sockact.http.chunked import ChunkedFraming
from sockact.http.dates import DATES, HEAD_END
from sockact.http.events import CONNECTION_CLOSED, END_OF_MESSAGE, NEED_DATA, PAUSED, Data, Request, has_body
from sockact.http.limits import DRAIN_LIMIT, Limits
from sockact.http.rules import (
    FRAMING,
    VERSIONS,
    FieldRules,
    check_head,
    check_line,
    check_partial_head,
    check_target,
    is_token,
)

IDLE, BODY, DONE, ERROR = "IDLE", "BODY", "DONE", "ERROR"

# whole_response's heads, all but the Date and what follows: (status, headers, version, keep-alive asked,
# HEAD, close, body length) -> (that part, framing mode, length, keep-alive). Bounded, so apps whose
# answers always vary cannot inflate it.
_HEADS: dict[tuple[object, ...], tuple[bytes, str, int, bool]] = {}
_HEADS_MAX = 1024

# The last answer any connection kept as its _last_whole: a new connection starts from it (a Connection:
# close client's one request is the one the last connection answered). What it holds depends on nothing
# of the connection's own: the head is _HEADS' for the same key. One tuple, replaced whole (app threads).
_LAST_WHOLE: list[tuple[object, Request, int, str, bool, bytes, bool] | None] = [None]


# Lengths of the response field names start_response looks at: "Connection", "Content-Length", and
# "Date" and "Server", which the engine adds unless the app gave its own (one Date: RFC 9110 6.6.1).
_NAME_LENGTHS = frozenset((len("connection"), len("content-length"), len("date"), len("server")))


# Field names seen to be tokens, each to its upper-cased form: clients send the same few names on
# every request. Bounded, so odd clients cannot inflate it.
_GOOD_NAMES: dict[bytes, bytes] = {}
_GOOD_NAMES_MAX = 1024


_LF = ord("\n")
# A head's fields from the CRLF that ends its request line, with what they parsed to and the rules' record.
_Fields = tuple[bytes, list[tuple[bytes, bytes]], FieldRules]

# By Limits object (its id, the object kept to check it): the last head parsed whole by any connection with
# those limits, its request and its fields, where each new connection's engine starts. One tuple, replaced
# whole: a reader on another thread sees an old one or a new one, never a mix.
_LAST: dict[int, tuple[Limits, bytes, Request, _Fields | None]] = {}
_LAST_MAX = 64  # a worker has one Limits a listener; a process that makes many (tests) starts over


class _Message:
    """The httptools callback sink for one message: collects the head, then body pieces."""

    __slots__ = ("body", "complete", "headers", "rules", "url")

    def __init__(self, rules: FieldRules | None) -> None:
        self.reset(rules)

    def reset(self, rules: FieldRules | None) -> None:
        """Empty, for the next message, whose fields ``rules`` collects (None: a request line alone is fed)."""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.rules = rules
        self.body: list[bytes] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.rules is None:
            return  # a trailer field: ChunkedFraming has checked it, and WSGI has no trailers
        upper = _GOOD_NAMES.get(name)
        if upper is None:
            if not is_token(name):
                # 0.1.1 accepts spaces and other separators in names; llhttp does not.
                raise ProtocolError(400, "invalid header field name")
            upper = name.upper()
            if len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
                _GOOD_NAMES[name] = upper
        value = value.rstrip(b" \t")  # both parsers keep trailing whitespace (RFC 9112 5: OWS)
        self.headers.append((upper, value))
        if upper in FRAMING:  # most fields do not matter to the rules: no call for them
            self.rules.field(upper, value)

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.complete = True


class Connection:
    """One HTTP/1.x server connection, as a state machine fed with bytes."""

    dropped = 0  # body bytes an app gave past its Content-Length (rare: no store for each connection)

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.state = IDLE
        self._buf = b""
        self._eof = False
        self._scanned = 0  # how far the current partial head has been searched
        self._crlf_skipped = False
        self.request: Request | None = None
        self._parser: httptools.HttpRequestParser | None = None
        self._message: _Message | None = None
        self._framing: ChunkedFraming | None = None
        # A parser (and its sink) that ended its last message cleanly, ready for the next head.
        self._spare: tuple[httptools.HttpRequestParser, _Message] | None = None
        self._remaining = 0  # Content-Length body still to come
        self._head: bytes | None = None  # the current head, until its body is first read
        # The last head parsed whole, and its request: a client sends the same head again and again on
        # one connection, and what a head gives is a function of its bytes and the limits alone.
        self._last_head = b""
        self._last_request: Request | None = None
        # The fields of the last head parsed whole (from the CRLF ending its request line), as parsed and
        # ruled: a client's heads mostly differ by their request line alone.
        self._last_fields: _Fields | None = None
        last = _LAST.get(id(limits))
        if last is not None and last[0] is limits:  # another connection's, on the same limits
            _, self._last_head, self._last_request, self._last_fields = last
        # The last whole_response's answer that went out as its head and body alone: (headers, request, body
        # length, status, close, the head up to its Date, keep-alive). An app's checked headers are one
        # object while it answers the same way (responses.remembering), so identity finds them.
        self._last_whole: tuple[object, Request, int, str, bool, bytes, bool] | None = _LAST_WHOLE[0]
        self.own_end = True  # the last head ended with the engine's Date and Server (start_response)
        # The response's state, which start_next_cycle resets for each next request.
        self.response_started = self.response_ended = self.continue_sent = self.keep_alive = False
        self._mode, self._length, self._sent = "", 0, 0

    # -- request side

    def receive_data(self, data: bytes) -> None:
        """Add bytes received from the client; ``b""`` means it closed its side."""
        if not data:
            self._eof = True
        elif self._buf:
            self._buf += data
        else:
            self._buf = data

    @property
    def idle(self) -> bool:
        """Between messages with nothing buffered: the connection may be handed back."""
        return self.state == IDLE and not self._buf and not self._eof

    def unparsed(self) -> bytes:
        """The bytes a new owner of the connection must be given to carry on where this one stops.

        Between requests, whatever is buffered; after a request head that nobody has begun
        to serve (no body event pulled), that head again as well.
        """
        if self.state == BODY and self._head is not None:
            return self._head + self._buf
        return self._buf

    @property
    def buffered(self) -> int:
        """Bytes received and not yet turned into events."""
        return len(self._buf)

    def next_event(self) -> object:
        """The next event; raises ProtocolError when the client broke the protocol."""
        buf = self._buf
        if buf == self._last_head and buf and self.state == IDLE:
            # The usual keep-alive request: the last head parsed whole again, and nothing after it. What
            # _repeat does, without its call: this is most requests.
            request = self.request = self._last_request
            assert request is not None
            self._buf, self._head, self._scanned, self._crlf_skipped = b"", buf, 0, False
            self.state, self._remaining = BODY, request.content_length or 0
            return request
        try:
            if self.state == BODY:
                return self._next_body()
            if self.state == DONE:
                return PAUSED
            if self.state != IDLE:
                raise ProtocolError(400, "connection already failed")
            # The head, here rather than in a method of its own: it runs once a request.
            buf = self._buf
            if not self._crlf_skipped and buf[:2] == b"\r\n":
                # RFC 9112 2.2: ignore one empty line before a request (some clients add one after a body).
                buf = self._buf = buf[2:]
                self._crlf_skipped = True
            end = buf.find(b"\r\n\r\n", self._scanned)
            if end < 0:
                if self._eof:
                    if buf:
                        raise ProtocolError(400, "connection closed in the middle of a request head")
                    return CONNECTION_CLOSED
                if buf:
                    check_partial_head(buf, max(0, self._scanned - 1), self.limits)
                self._scanned = max(0, len(buf) - 3)
                return NEED_DATA
            end += 4
            head, self._buf = buf[:end], buf[end:]
            self._head = head
            self._scanned = 0
            self._crlf_skipped = False
            if head == self._last_head:
                return self._repeat(self._last_request)
            fields = self._last_fields
            if fields is not None and head.endswith(fields[0]) and len(head) <= self.limits.head:
                line = head[:len(head) - len(fields[0])]
                if _LF not in line:  # the byte's value: see rules.py
                    # Only the request line is new (a query, a path): the fields were checked and parsed
                    # with the last head, so the parser and the raw checks see the line alone.
                    check_line(line, self.limits)
                    return self._parse_head(head, line + b"\r\n\r\n", fields)
            check_head(head, self.limits)
            return self._parse_head(head, head, None)
        except ProtocolError:
            self.state = ERROR
            raise

    def _parse_head(self, head: bytes, fed: bytes, fields: _Fields | None) -> Request:
        """The request of ``head``: ``fed`` to httptools, the head itself or, with ``fields`` (the last head's,
        which ``head`` ends with), its request line alone."""
        spare = self._spare
        rules = FieldRules() if fields is None else None  # a request line alone has no fields to rule
        if spare is None:
            message = _Message(rules)
            parser = httptools.HttpRequestParser(message)
        else:
            parser, message = spare
            self._spare = None  # taken: an error below must not leave it for the next message
            message.reset(rules)
        upgrade = False
        try:
            parser.feed_data(fed)
        except httptools.HttpParserUpgrade:
            upgrade = True  # Upgrade or CONNECT; served as a plain request, then closed
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, ProtocolError):
                raise cause from None
            raise ProtocolError(400, f"malformed request: {exc}") from None
        version = parser.get_http_version()
        if version not in VERSIONS:
            raise ProtocolError(400, "unsupported HTTP version")
        method = parser.get_method()
        target = message.url
        check_target(method, target)
        message.rules = None  # from here on, fields are trailers
        if fields is None:
            headers = message.headers
            assert rules is not None
        else:
            _, headers, rules = fields
        if not rules.hosts and version == "1.1" and self.limits.host_required:
            raise ProtocolError(400, "no Host field in an HTTP/1.1 request")
        if rules.plain and not upgrade:
            request = Request(method, target, version, headers, None, False, version == "1.1", False, False)
        else:
            length, chunked = rules.framing(version, self.limits)
            if upgrade and chunked:
                raise ProtocolError(400, "chunked body on an upgrade request")
            request = Request(method, target, version, headers, length, chunked,
                              rules.keep_alive(version) and not upgrade, rules.expects_continue(version), upgrade)
        if not request.chunked and not upgrade:
            # A chunked body needs this parser fed with its head; an upgrade ends the connection.
            self._last_head, self._last_request = head, request
            if (fields is None and not rules.content_length and not rules.transfer_encoding
                    and b"UPGRADE" not in dict(headers)):
                # Fields that give no body and ask no upgrade, whatever the request line: the parser needs
                # only the line of a later head that ends with them.
                self._last_fields = head[head.find(b"\r\n"):], headers, rules
            if len(_LAST) >= _LAST_MAX:
                _LAST.clear()
            _LAST[id(self.limits)] = self.limits, head, request, self._last_fields
        self.request = request
        self.state = BODY
        if request.chunked:
            self._parser, self._message = parser, message
            self._framing = ChunkedFraming(self.limits)
        else:
            self._remaining = request.content_length or 0
            if message.complete and request.keep_alive and parser.should_keep_alive():
                # The parser has ended this message (no body follows in its view) and waits for the
                # next one: it serves the next head too, which saves making and freeing one.
                self._spare = parser, message
        return request

    def _repeat(self, request: Request | None) -> Request:
        """The same head as the last one parsed: the same request, checked and parsed then. Request is
        never changed after it is made, so the object itself serves again."""
        assert request is not None
        self.request = request
        self.state = BODY
        self._remaining = request.content_length or 0
        return request

    def body_done(self) -> bool:
        """Whether the request body is all read; a request with no body (left) ends here, as the next
        ``next_event`` would end it, without the event."""
        if self.state == BODY and self._framing is None and not self._remaining:
            self._head = None
            self.state = DONE
            return True
        return self.state == DONE

    def _next_body(self) -> object:
        if self.body_done():
            return END_OF_MESSAGE
        self._head = None
        framing = self._framing
        if framing is None:
            buf = self._buf
            if not buf:
                return self._starved()
            if len(buf) <= self._remaining:
                self._buf = b""
            else:
                buf, self._buf = buf[: self._remaining], buf[self._remaining :]
            self._remaining -= len(buf)
            return Data(buf)
        while True:
            if framing.done:
                self._parser = self._message = self._framing = None
                self.state = DONE
                return END_OF_MESSAGE
            buf = self._buf
            if not buf:
                return self._starved()
            n = framing.scan(buf)
            if not n:
                return self._starved()
            piece, self._buf = (buf, b"") if n == len(buf) else (buf[:n], buf[n:])
            assert self._parser is not None and self._message is not None
            try:
                self._parser.feed_data(piece)
            except httptools.HttpParserError as exc:
                raise ProtocolError(400, f"malformed chunked body: {exc}") from None
            if framing.done != self._message.complete:
                raise ProtocolError(400, "chunked body framing is ambiguous")
            if self._message.body:
                data = b"".join(self._message.body)
                self._message.body.clear()
                return Data(data)

    def _starved(self) -> object:
        if self._eof:
            raise ProtocolError(400, "connection closed in the middle of a request body")
        return NEED_DATA

    @property
    def unread_body(self) -> int | None:
        """Body bytes still to come: 0 when complete, None when unknown (chunked)."""
        if self.state != BODY:
            return 0
        return None if self._framing is not None else self._remaining - min(len(self._buf), self._remaining)

    # -- response side

    def send_continue(self) -> bytes:
        """The interim 100 response, if the client waits for one and nothing was sent yet."""
        request = self.request
        if request is None or not request.expect_continue or self.continue_sent or self.response_started:
            return b""
        if self.state != BODY:
            return b""
        self.continue_sent = True
        return b"HTTP/1.1 100 Continue\r\n\r\n"

    def start_response(self, status: str, headers: list[tuple[str, str]], *, date: str, close: bool = False,
                       whole: int | None = None) -> bytes:
        """The response head. ``headers`` are already checked (PEP 3333 str, no hop-by-hop but
        "Connection: close"); the framing comes from them, here and nowhere else.

        A Content-Length field is the length. Without one, ``whole`` (the server knows the whole
        body is that long) adds it, for HEAD too when the status allows a body. Otherwise the
        body is chunked (HTTP/1.1) or close-delimited (HTTP/1.0); no body at all for HEAD, 1xx,
        204 and 304. The app's "Connection: close", or ``close`` (the server is stopping), ends
        the connection after this response; the Connection field itself is the engine's.
        """
        request = self.request
        assert request is not None and not self.response_started
        self.response_started = True
        code = int(status[:3])
        keep = request.keep_alive and not close
        unread = self.unread_body
        # Drain a small unread body afterwards; a large one, or one the client is
        # holding back until it sees 100 Continue, means closing.
        if unread != 0 and ((unread or 0) > DRAIN_LIMIT or (request.expect_continue and not self.continue_sent)):
            keep = False
        content_length: int | None = None
        own_date = own_server = True
        lines = ["HTTP/1.1 ", status, "\r\n"]
        for name, value in headers:
            if len(name) in _NAME_LENGTHS:  # only then may it be one of those below
                lower = name.lower()
                if lower == "connection":
                    keep = False  # check_response lets only "close" through
                    continue
                if lower == "content-length":
                    if code == 204:
                        continue  # RFC 9110 8.6: a 204 has no content, and names no length for it
                    content_length = int(value)
                elif lower == "date":
                    own_date = False
                elif lower == "server":
                    own_server = False
            lines += (name, ": ", value, "\r\n")
        if content_length is None and whole is not None and has_body(b"GET", code):
            content_length = whole
            lines += ("Content-Length: ", str(whole), "\r\n")
        if not has_body(request.method, code):
            self._mode = "none"
        elif content_length is not None:
            self._mode, self._length = "length", content_length
        elif request.version == "1.1":
            self._mode = "chunked"
            lines.append("Transfer-Encoding: chunked\r\n")
        else:
            self._mode = "close"
            keep = False
        if not keep:
            lines.append("Connection: close\r\n")
        elif request.version == "1.0":
            lines.append("Connection: keep-alive\r\n")
        # The usual end is the one whole_response keeps heads up to (dates.HEAD_END); the app's own Date or
        # Server stands instead of the engine's.
        self.own_end = own_date and own_server
        if self.own_end:
            lines += ("Date: ", date, "\r\nServer: sockact\r\n\r\n")
        else:
            lines += (*(("Date: ", date, "\r\n") if own_date else ()),
                      *(("Server: sockact\r\n",) if own_server else ()), "\r\n")
        self.keep_alive = keep
        return "".join(lines).encode("latin-1")

    def send_data(self, data: bytes) -> bytes:
        """The bytes that carry ``data`` in the chosen framing (b"" for a body-less response)."""
        mode = self._mode
        if mode == "length":
            room = self._length - self._sent
            if len(data) > room:
                # More than Content-Length promised: the rest would be read as a new response.
                self.dropped += len(data) - room
                data = data[:room]
                self.keep_alive = False
            self._sent += len(data)
            return data
        if mode == "chunked":
            self._sent += len(data)
            return b"%x\r\n%b\r\n" % (len(data), data) if data else b""
        if mode == "close":
            self._sent += len(data)
            return data
        return b""

    def whole_response(self, status: str, headers: list[tuple[str, str]], body: bytes, *, date: str | None = None,
                       close: bool = False) -> tuple[bytes, bytes]:
        """A response whose body is known whole, in one call: (head, the body's bytes with their end),
        as start_response, send_data and end_response would give them.

        With no request body left to come, the head depends on nothing but the key below: an app
        answers the same few ways again and again, so start_response runs once for each, and its
        head, all but the Date, is kept (_HEADS). The last answer of the connection, when it went out as
        its head and the body alone, is kept with the request it answered (``_last_whole``; a new connection
        starts with the last one any connection kept, _LAST_WHOLE): the same
        answer to that request again, or to one with the same method, version and keep-alive, is its head
        with this second's Date, and the engine's state as that answer left it. ``date``: the Date's text; None
        (the runners'): now's, from dates.DATES, read here inline, its encoded end with it."""
        request = self.request
        assert request is not None
        size = len(body)
        last = self._last_whole
        if (last is not None and last[0] is headers and last[2] == size and last[3] == status and last[4] == close
                and (last[1] is request or (last[1].method == request.method and last[1].version == request.version
                                            and last[1].keep_alive == request.keep_alive))
                and self._framing is None and not self._remaining and not self.response_started):
            # The usual keep-alive answer: what the rest of this method would do, without its steps.
            self.response_started = self.response_ended = True
            self._mode = "length"  # one statement each: a tuple of them would be made and unpacked
            self._length = self._sent = size
            self.keep_alive = last[6]
            if date is not None:
                return last[5] + date.encode("latin-1") + HEAD_END, body
            # DATES.at(), its call only for a new second.
            return last[5] + (d[2][1] if (d := DATES.last[0])[0] <= (now := time.time()) < d[1]  # type: ignore[index]
                              else DATES.at(now)[1]), body
        date, dated = DATES.at() if date is None else (date, date.encode("latin-1") + HEAD_END)
        before_date = None  # the head up to its Date, when it is kept
        if self._framing is None and not self._remaining and not self.response_started:
            key = (status, tuple(headers), request.version, request.keep_alive, request.method == b"HEAD", close, size)
            known = _HEADS.get(key)
            if known is not None:
                before_date, self._mode, self._length, self.keep_alive = known
                self.response_started = True
                head = before_date + dated
            else:
                head = self.start_response(status, headers, date=date, close=close, whole=size)
                if self.own_end and len(_HEADS) < _HEADS_MAX:
                    before_date = head[:len(head) - len(date) - len(HEAD_END)]
                    _HEADS[key] = (before_date, self._mode, self._length, self.keep_alive)
        else:
            head = self.start_response(status, headers, date=date, close=close, whole=size)
        if self._mode == "length" and self._length == size:
            self._sent = size
            self.response_ended = True
            if before_date is not None:  # the next answer like this one starts from it
                self._last_whole = _LAST_WHOLE[0] = (headers, request, size, status, close, before_date,
                                                     self.keep_alive)
            return head, body
        data = self.send_data(body) if body else b""
        return head, data + self.end_response()

    def count_sent(self, n: int) -> None:
        """Record ``n`` body bytes sent without send_data (sendfile); only for length framing."""
        assert self._mode in ("length", "close")
        self._sent += n

    @property
    def body_sent(self) -> int:
        """Body bytes passed to send_data so far (without chunk framing)."""
        return self._sent

    @property
    def length_left(self) -> int | None:
        """Bytes still promised by Content-Length, or None when the framing is not by length."""
        return self._length - self._sent if self._mode == "length" else None

    def sent_whole(self) -> bool:
        """Whether a body of known length has all been given to send_data: its last piece is the one in hand. Only
        such a piece may leave its tail in a WSGI outbox (wsgi/wire.py), which the loop writes once the call is over:
        any other would wait there for the app's next one, however fast its client reads (a stream's, chunked or to
        the close; a body the app writes in parts; a 100 Continue, whose client waits for it to send the body)."""
        return self._mode == "length" and self._sent == self._length

    def end_response(self) -> bytes:
        """The bytes that end the response body."""
        self.response_ended = True
        if self._mode == "chunked":
            return b"0\r\n\r\n"
        if self._mode == "length" and self._sent < self._length:
            self.keep_alive = False  # the client still waits for bytes that will never come
        return b""

    def error_response(self, status: int, date: str) -> bytes:
        """A complete plain-text error response; the connection then closes."""
        head_only = self.request is not None and self.request.method == b"HEAD" and self.state != ERROR
        self.response_started = self.response_ended = True
        self.keep_alive = False
        self.state = ERROR
        message = error_message(status, date, head_only)
        self._sent = len(message) - message.index(b"\r\n\r\n") - 4  # the access log counts the body too
        return message

    def start_next_cycle(self) -> bool:
        """After a complete request and response on a persistent connection: expect the next request. Returns
        ``idle`` (nothing of it came yet), which a caller would otherwise ask at once, a property's call."""
        if self.state != DONE or not self.response_ended or not self.keep_alive:
            raise RuntimeError("start_next_cycle() before both messages ended on a persistent connection")
        self.state = IDLE
        self.request = None
        self.response_started = self.response_ended = self.continue_sent = self.keep_alive = False
        self._mode, self._length, self._sent = "", 0, 0
        return not self._buf and not self._eof


def error_message(status: int, date: str, head_only: bool = False, *, detail: str = "", headers: str = "") -> bytes:
    """A complete plain-text error response with Connection: close (the supervisor's 502/503/504 too);
    ``detail`` follows the status in the body, ``headers`` are extra CRLF-ended header lines."""
    import http  # here: HTTPStatus, an enum of some sixty members, is built at import, and only errors need it

    phrase = http.HTTPStatus(status).phrase
    body = f"{status} {phrase}{': ' + detail if detail else ''}\n".encode()
    head = (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n{headers}Connection: close\r\nDate: {date}\r\nServer: sockact\r\n\r\n")
    return head.encode("latin-1") + (b"" if head_only else body)
