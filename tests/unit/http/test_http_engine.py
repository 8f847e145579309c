"""The sans-I/O engine fed bytes, with no sockets: whole, byte by byte, and in random pieces."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from sockact.errors import ProtocolError
from sockact.http.engine import CONNECTION_CLOSED, END_OF_MESSAGE, NEED_DATA, PAUSED, Connection, Data, Request
from sockact.http.limits import DRAIN_LIMIT, Limits


@dataclass
class Seen:
    """What the engine made of one request."""

    method: bytes
    target: bytes
    version: str
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    keep_alive: bool = False
    head: bytes = b""  # the response head the engine wrote
    path: bytes = b""
    query: bytes = b""


@dataclass
class Replay:
    requests: list[Seen] = field(default_factory=list)
    status: int | None = None  # the ProtocolError status, if one ended it
    end: str = ""  # "closed", "error" or "close" (the engine chose not to persist)


def splits(data: bytes, seed: int = 1) -> dict[str, list[bytes]]:
    """The same input whole, byte by byte and in seeded random pieces."""
    rng = random.Random(seed)
    pieces, pos = [], 0
    while pos < len(data):
        n = rng.randint(1, max(1, len(data) // 10))
        pieces.append(data[pos : pos + n])
        pos += n
    return {"whole": [data], "bytes": [data[i : i + 1] for i in range(len(data))], "random": pieces}


def drive(pieces: list[bytes], limits: Limits | None = None) -> Replay:
    """Feed ``pieces`` then EOF; answer each request with an empty 200 and go on while it persists."""
    conn = Connection(limits or Limits())
    feed = iter([*pieces, b""])
    out = Replay()
    seen: Seen | None = None
    while True:
        try:
            event = conn.next_event()
        except ProtocolError as exc:
            out.status, out.end = exc.status, "error"
            return out
        if event is NEED_DATA:
            conn.receive_data(next(feed))
        elif isinstance(event, Request):
            seen = Seen(event.method, event.target, event.version, event.headers, path=event.path, query=event.query)
            out.requests.append(seen)
        elif isinstance(event, Data):
            assert seen is not None
            seen.body += event.data
        elif event is END_OF_MESSAGE:
            pass
        elif event is PAUSED:
            assert seen is not None
            seen.head = conn.start_response("200 OK", [("Content-Length", "0")], date="-")
            conn.end_response()
            seen.keep_alive = conn.keep_alive
            if not conn.keep_alive:
                out.end = "close"
                return out
            conn.start_next_cycle()
        else:
            assert event is CONNECTION_CLOSED
            out.end = "closed"
            return out


def replay_all(data: bytes, limits: Limits | None = None) -> Replay:
    """drive() over every split of ``data``; asserts they all agree, returns one."""
    results = {name: drive(pieces, limits) for name, pieces in splits(data).items()}
    first = results["whole"]
    for name, other in results.items():
        if first.status is None:
            assert other == first, f"{name} split differs"
        else:  # the body streamed before the error depends on the split; the rest may not
            assert (other.status, [r.target for r in other.requests]) == (
                first.status, [r.target for r in first.requests]), f"{name} split differs"
    return first


def status_of(data: bytes, limits: Limits | None = None) -> int | None:
    return replay_all(data, limits).status


# -- request smuggling shapes: each is refused with 400 on both httptools generations

SMUGGLING = {
    "cl_and_te": b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_and_cl": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "cl_differing": b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl_identical": b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "cl_list": b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
    "cl_plus": b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
    "cl_negative": b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    "cl_hex": b"POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\nhello",
    "cl_space_inside": b"POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\nhello",
    "te_not_final": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te_gzip_only": b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    "te_chunked_twice": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "obs_fold": b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
    "obs_fold_tab": b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n",
    "space_before_colon": b"GET / HTTP/1.1\r\nContent-Length : 0\r\n\r\n",
    "tab_before_colon": b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
    "space_in_name": b"GET / HTTP/1.1\r\nX Y: a\r\n\r\n",
    "leading_space_field": b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
    "cr_in_value": b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
    "lf_in_value": b"GET / HTTP/1.1\r\nX: a\nb\r\n\r\n",
    "nul_in_value": b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n",
    "ctl_in_value": b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
    "bare_lf_lines": b"GET / HTTP/1.1\nHost: a\n\n",
    "bare_lf_end": b"GET / HTTP/1.1\r\nHost: a\r\n\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "chunk_size_space": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    "chunk_bare_lf": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    "chunk_last_bare_lf": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n",
    "chunk_data_no_crlf": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n",
    "chunk_size_overflow": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1" + b"0" * 16 + b"\r\n",
    "chunk_ext_ctl": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\x01\r\nhello\r\n0\r\n\r\n",
    "trailer_cl": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n",
    "upgrade_chunked": (b"POST / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"0\r\n\r\n"),
    "version_12": b"GET / HTTP/1.2\r\n\r\n",
    "version_20": b"GET / HTTP/2.0\r\n\r\n",
    "target_non_ascii": b"GET /\xc3\xa0 HTTP/1.1\r\n\r\n",
    "target_tab": b"GET /a\tb HTTP/1.1\r\n\r\n",
    "target_relative": b"GET a/b HTTP/1.1\r\n\r\n",
    "target_absolute_bad_port": b"GET http://a:b/ HTTP/1.1\r\n\r\n",
    "target_absolute_no_host": b"GET http:// HTTP/1.1\r\n\r\n",
    "asterisk_not_options": b"GET * HTTP/1.1\r\n\r\n",
    "two_empty_lines_first": b"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    "unknown_method": b"FOO / HTTP/1.1\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_smuggling_shapes_are_refused(name: str) -> None:
    result = replay_all(SMUGGLING[name])
    assert result.status == 400, result
    assert result.end == "error"


@pytest.mark.parametrize("name", sorted(set(SMUGGLING) - {"two_empty_lines_first"}))
def test_smuggling_shapes_are_refused_after_a_clean_request(name: str) -> None:
    # A body-less keep-alive request leaves its parser to the next head: that head is judged as by a fresh one.
    result = replay_all(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n" + SMUGGLING[name])
    assert result.status == 400, result
    assert [r.target for r in result.requests][:1] == [b"/first"]


def test_a_parser_serves_the_next_head_only_after_a_clean_end() -> None:
    conn = Connection(Limits())
    conn.receive_data(b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\r\n\r\n")
    parsers = []
    for _ in range(3):
        request = conn.next_event()
        assert isinstance(request, Request)
        parsers.append(conn._spare)
        while conn.next_event() is not PAUSED:
            pass
        conn.start_response("200 OK", [("Content-Length", "0")], date="-")
        conn.end_response()
        conn.start_next_cycle()
    assert parsers[0] is not None and parsers[1] is None  # a Content-Length body: its parser waits for it
    assert parsers[2] is not None and parsers[2] is not parsers[0]


def test_other_transfer_codings_are_not_implemented() -> None:
    assert status_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n") == 501


def test_identity_before_chunked_is_a_no_op() -> None:
    result = replay_all(b"POST / HTTP/1.1\r\nTransfer-Encoding: identity, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert result.requests[0].body == b"abc"


# -- limits


@pytest.mark.parametrize(("data", "limits", "status"), [
    (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n\r\n", Limits(request_line=100), 414),
    (b"GET /" + b"a" * 100, Limits(request_line=100), 414),  # refused before the line ends
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X%d: y\r\n" % i for i in range(4)) + b"\r\n", Limits(header_fields=3), 431),
    (b"GET / HTTP/1.1\r\nX: " + b"y" * 50 + b"\r\n\r\n", Limits(header_field_size=40), 431),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 60 + b"\r\n", Limits(head=300), 431),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 60, Limits(head=300), 431),  # refused before the head ends
    (b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", Limits(body=10), 413),  # before any body byte
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello!\r\n5\r\nhello\r\n0\r\n\r\n",
     Limits(body=10), 413),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + b"X: y\r\n" * 5 + b"\r\n",
     Limits(header_fields=4), 431),
])
def test_limits(data: bytes, limits: Limits, status: int) -> None:
    assert status_of(data, limits) == status


def request_line(size: int) -> bytes:
    """A request line of exactly ``size`` bytes, without its CRLF."""
    line = b"GET /" + b"a" * (size - 14) + b" HTTP/1.1"
    assert len(line) == size
    return line


def field(size: int, name: bytes = b"X") -> bytes:
    """One field line of exactly ``size`` bytes, its CRLF included (as the limit counts it)."""
    line = name + b": " + b"v" * (size - len(name) - 4) + b"\r\n"
    assert len(line) == size
    return line


def head_of(size: int) -> bytes:
    """A complete head of exactly ``size`` bytes: request line, padding fields, empty line."""
    fields, left = [], size - 18
    while left > 4000:
        fields.append(field(2000))  # each well inside the default field size
        left -= 2000
    head = b"GET / HTTP/1.1\r\n" + b"".join(fields) + field(left) + b"\r\n"
    assert len(head) == size
    return head


# name -> (the limit, the request exactly at it, one over it (a byte, or a field), the status). Each
# limit is checked twice: on a complete head, and before the head has ended (the partial-head check,
# which answers a client that is still sending); EOF there gives 400 unless the limit fired first.
BOUNDARIES: dict[str, tuple[Limits, bytes, bytes, int]] = {
    "request_line": (Limits(request_line=100), request_line(100) + b"\r\n\r\n",
                     request_line(101) + b"\r\n\r\n", 414),
    "request_line_default": (Limits(), request_line(8190) + b"\r\n\r\n", request_line(8191) + b"\r\n\r\n", 414),
    "request_line_unfinished": (Limits(request_line=100), request_line(100) + b"\r", request_line(101) + b"\r", 414),
    "field_size": (Limits(header_field_size=40), b"GET / HTTP/1.1\r\n" + field(40) + b"\r\n",
                   b"GET / HTTP/1.1\r\n" + field(41) + b"\r\n", 431),
    "field_size_among_others": (Limits(header_field_size=40),
                                b"GET / HTTP/1.1\r\nA: 1\r\n" + field(40) + b"B: 2\r\n\r\n",
                                b"GET / HTTP/1.1\r\nA: 1\r\n" + field(41) + b"B: 2\r\n\r\n", 431),
    "field_size_default": (Limits(), b"GET / HTTP/1.1\r\n" + field(8190) + b"\r\n",
                           b"GET / HTTP/1.1\r\n" + field(8191) + b"\r\n", 431),
    "field_count": (Limits(header_fields=5), b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 5 + b"\r\n",
                    b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 6 + b"\r\n", 431),
    "field_count_default": (Limits(), b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100 + b"\r\n",
                            b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    "head": (Limits(head=300), head_of(300), head_of(301), 431),
    "head_default": (Limits(), head_of(65536), head_of(65537), 431),
    "head_unfinished": (Limits(head=300), head_of(300)[:-4] + b"\r\nXY", head_of(301)[:-4] + b"\r\nXY", 431),
}


@pytest.mark.parametrize("name", sorted(BOUNDARIES))
def test_limits_at_their_boundary(name: str) -> None:
    limits, at, over, status = BOUNDARIES[name]
    if name.endswith("_unfinished"):  # the head never ends: EOF ends it with 400 unless a limit fired
        assert status_of(at, limits) == 400
    else:
        result = replay_all(at, limits)
        assert result.status is None and len(result.requests) == 1, result
    assert status_of(over, limits) == status


def test_body_limit_is_inclusive() -> None:
    body = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n" + b"x" * 10
    assert replay_all(body, Limits(body=10)).requests[0].body == b"x" * 10


def test_default_limits() -> None:
    assert Limits() == Limits(request_line=8190, header_fields=100, header_field_size=8190, head=65536, body=0)
    assert status_of(b"GET /" + b"a" * 8190 + b" HTTP/1.1\r\n\r\n") == 414
    assert status_of(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n") == 431


@pytest.mark.parametrize("host", [b"a b", b"user@example.com", b"example.com:http", b"a/b", b"[::1", b"::1",
                                  b"x:80:90", b"[]", b"x]", b"h\xc3\xa9.example", b"[::1]x", b"a?b", b"a#b"])
def test_a_host_field_that_is_not_host_and_port_gets_400(host: bytes) -> None:
    # RFC 9112 3.2: a server MUST answer 400 to "a Host header field with an invalid field value".
    assert status_of(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n") == 400
    assert status_of(b"GET / HTTP/1.0\r\nHost: " + host + b"\r\n\r\n") == 400


@pytest.mark.parametrize("host", [b"example.com", b"example.com:8080", b"[::1]", b"[::1]:80", b"127.0.0.1:1", b"",
                                  b"under_score.example", b"x:", b"%41.example", b"example.com \t"])
def test_a_host_field_of_host_and_port_is_served(host: bytes) -> None:
    assert status_of(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n") is None


def test_a_listener_refuses_an_http_1_1_request_without_host() -> None:
    # RFC 9112 3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1 request
    # message that lacks a Host header field". Every listener asks for that (host_required); an engine
    # alone serves such a request, as gunicorn and uvicorn do, so corpora written for them replay as they are.
    strict = Limits(host_required=True)
    assert status_of(b"GET / HTTP/1.1\r\n\r\n", strict) == 400
    assert status_of(b"GET http://example.com/ HTTP/1.1\r\n\r\n", strict) == 400  # its authority is no field
    assert status_of(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n", strict) == 400  # the second
    assert status_of(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", strict) is None
    # A head whose fields are the last one's is parsed by its request line alone: its Host is still counted.
    assert status_of(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n", strict) is None
    assert status_of(b"GET / HTTP/1.1\r\nhost:\r\n\r\n", strict) is None  # empty, as 3.2 allows with no authority
    assert status_of(b"GET / HTTP/1.0\r\n\r\n", strict) is None  # HTTP/1.0 has no such rule
    assert status_of(b"GET / HTTP/1.1\r\n\r\n") is None


# -- pipelining, keep-alive, bodies

PIPELINE = (b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
            b"POST /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nT: x\r\n\r\n"
            b"\r\n"  # one empty line between requests is allowed
            b"GET /4 HTTP/1.1\r\nConnection: close\r\n\r\n"
            b"GET /never HTTP/1.1\r\n\r\n")


def test_pipelined_requests_in_order() -> None:
    result = replay_all(PIPELINE)
    assert [r.target for r in result.requests] == [b"/1", b"/2", b"/3", b"/4"]
    assert [r.body for r in result.requests] == [b"", b"hello", b"hello world", b""]
    assert [r.keep_alive for r in result.requests] == [True, True, True, False]
    assert result.end == "close"


@pytest.mark.parametrize(("request_head", "keep_alive", "connection"), [
    (b"GET / HTTP/1.1\r\n\r\n", True, None),
    (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", False, b"close"),
    (b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n", False, b"close"),
    (b"GET / HTTP/1.0\r\n\r\n", False, b"close"),
    (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", True, b"keep-alive"),
    (b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", False, b"close"),
])
def test_keep_alive_rules(request_head: bytes, keep_alive: bool, connection: bytes | None) -> None:
    seen = replay_all(request_head).requests[0]
    assert seen.keep_alive is keep_alive
    fields = dict(line.split(b": ", 1) for line in seen.head.split(b"\r\n")[1:] if b": " in line)
    assert fields.get(b"Connection") == connection


def test_eof_between_requests_and_inside_one() -> None:
    assert replay_all(b"GET / HTTP/1.1\r\n\r\n").end == "closed"
    assert status_of(b"GET / HTTP/1.1\r\nHost") == 400
    assert status_of(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel") == 400
    assert status_of(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n") == 400


def test_idle_only_at_a_clean_boundary() -> None:
    conn = Connection(Limits())
    assert conn.idle
    conn.receive_data(b"GET / HTTP/1.1\r\n\r\nGE")
    assert isinstance(conn.next_event(), Request)
    assert conn.next_event() is END_OF_MESSAGE
    conn.start_response("200 OK", [], whole=0, date="-")
    conn.end_response()
    assert conn.start_next_cycle() is False  # its answer is idle's, asked by the ASGI runner without the property
    assert conn.next_event() is NEED_DATA
    assert not conn.idle and conn.buffered == 2  # part of a next request: not handed back


def test_the_next_cycle_starts_idle_when_nothing_of_the_next_request_came() -> None:
    conn = Connection(Limits())
    conn.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    assert isinstance(conn.next_event(), Request)
    assert conn.next_event() is END_OF_MESSAGE
    conn.start_response("200 OK", [], whole=0, date="-")
    conn.end_response()
    assert conn.start_next_cycle() is True and conn.idle


def test_absolute_form_and_fragment() -> None:
    conn = Connection(Limits())
    conn.receive_data(b"GET http://example.com:8080/a%20b?x=1#frag HTTP/1.1\r\nHost: example.com\r\n\r\n")
    request = conn.next_event()
    assert isinstance(request, Request)
    assert (request.path, request.query) == (b"/a%20b", b"x=1")
    conn = Connection(Limits())
    conn.receive_data(b"GET /p?q=1#frag HTTP/1.1\r\n\r\n")
    request = conn.next_event()
    assert isinstance(request, Request)
    assert (request.path, request.query) == (b"/p", b"q=1")


def test_an_absolute_targets_authority_stands_for_the_host_field() -> None:
    # RFC 9112 3.2.2, in the Host field's place; the same fields after an origin-form line keep theirs.
    replay = replay_all(b"GET http://u:p@a.example:81/x HTTP/1.1\r\nX: 1\r\nHost: b.example\r\nY: 2\r\n\r\n"
                        b"GET /x HTTP/1.1\r\nX: 1\r\nHost: b.example\r\nY: 2\r\n\r\n"
                        b"GET http://a.example HTTP/1.0\r\n\r\n")
    assert [r.headers for r in replay.requests] == [
        [(b"X", b"1"), (b"HOST", b"a.example:81"), (b"Y", b"2")],
        [(b"X", b"1"), (b"HOST", b"b.example"), (b"Y", b"2")],
        [(b"HOST", b"a.example")]]
    assert status_of(b"GET http:///x HTTP/1.1\r\nHost: b.example\r\n\r\n") == 400


def test_header_values_are_trimmed_and_names_upper_cased() -> None:
    seen = replay_all(b"GET / HTTP/1.1\r\nx-Thing: \t value \t \r\nEmpty:\r\n\r\n").requests[0]
    assert seen.headers == [(b"X-THING", b"value"), (b"EMPTY", b"")]


# -- 100-continue and response framing


def _head_of(data: bytes) -> Connection:
    conn = Connection(Limits())
    conn.receive_data(data)
    assert isinstance(conn.next_event(), Request)
    return conn


def test_continue_is_offered_once_while_the_body_is_unread() -> None:
    conn = _head_of(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.send_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert conn.send_continue() == b""
    conn.receive_data(b"abc")
    assert isinstance(conn.next_event(), Data)


def test_no_continue_for_http10_or_after_the_response_started() -> None:
    conn = _head_of(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert conn.send_continue() == b""
    conn = _head_of(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    conn.start_response("200 OK", [], whole=0, date="-")
    assert conn.send_continue() == b""
    assert not conn.keep_alive  # the client may still hold the body back: the connection closes


def test_unread_body_small_is_drained_large_closes() -> None:
    small = _head_of(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % DRAIN_LIMIT)
    small.start_response("200 OK", [], whole=0, date="-")
    assert small.keep_alive
    large = _head_of(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (DRAIN_LIMIT + 1))
    large.start_response("200 OK", [], whole=0, date="-")
    assert not large.keep_alive


@pytest.mark.parametrize(("request_head", "status", "length", "framing", "body"), [
    (b"GET / HTTP/1.1\r\n\r\n", "200 OK", None, b"Transfer-Encoding: chunked", b"5\r\nhello\r\n0\r\n\r\n"),
    (b"GET / HTTP/1.1\r\n\r\n", "200 OK", 5, None, b"hello"),
    (b"GET / HTTP/1.0\r\n\r\n", "200 OK", None, b"Connection: close", b"hello"),
    (b"HEAD / HTTP/1.1\r\n\r\n", "200 OK", 5, None, b""),
    (b"GET / HTTP/1.1\r\n\r\n", "204 No Content", None, None, b""),
    (b"GET / HTTP/1.1\r\n\r\n", "304 Not Modified", None, None, b""),
])
def test_response_framing(request_head: bytes, status: str, length: int | None, framing: bytes | None,
                          body: bytes) -> None:
    conn = _head_of(request_head)
    headers = [] if length is None else [("Content-Length", str(length))]
    head = conn.start_response(status, headers, date="D")
    sent = conn.send_data(b"hello") + conn.end_response()
    assert head.startswith(b"HTTP/1.1 " + status.encode() + b"\r\n")
    assert head.endswith(b"Date: D\r\nServer: sockact\r\n\r\n")
    if framing:
        assert framing in head
    assert b"Transfer-Encoding" not in head or framing == b"Transfer-Encoding: chunked"
    assert sent == body


@pytest.mark.parametrize(("request_head", "status", "headers", "whole", "expect", "mode_body"), [
    # A Content-Length from the app wins over what the server knows.
    (b"GET / HTTP/1.1\r\n\r\n", "200 OK", [("Content-Length", "5")], 9, b"Content-Length: 5\r\n", b"hello"),
    # The server knows the whole body: a length rather than chunked.
    (b"GET / HTTP/1.1\r\n\r\n", "200 OK", [], 5, b"Content-Length: 5\r\n", b"hello"),
    # HEAD: the GET's length, and no body.
    (b"HEAD / HTTP/1.1\r\n\r\n", "200 OK", [], 5, b"Content-Length: 5\r\n", b""),
    # A status without a body gets no length from what the server knows.
    (b"GET / HTTP/1.1\r\n\r\n", "204 No Content", [], 0, None, b""),
])
def test_the_engine_derives_framing_from_the_headers(request_head: bytes, status: str, headers: list,
                                                     whole: int, expect: bytes | None, mode_body: bytes) -> None:
    conn = _head_of(request_head)
    head = conn.start_response(status, headers, date="D", whole=whole)
    assert head.count(b"Content-Length") == (1 if expect else 0)
    if expect:
        assert expect in head
    assert b"Transfer-Encoding" not in head
    assert conn.send_data(b"hello") + conn.end_response() == mode_body
    assert conn.keep_alive


@pytest.mark.parametrize(("headers", "close"), [([("Connection", "close")], False), ([], True)])
def test_connection_close_from_the_app_or_the_server(headers: list, close: bool) -> None:
    conn = _head_of(b"GET / HTTP/1.1\r\n\r\n")
    head = conn.start_response("200 OK", [*headers, ("Content-Length", "0")], date="D", close=close)
    assert head.count(b"Connection:") == 1 and b"Connection: close\r\n" in head
    conn.end_response()
    assert not conn.keep_alive


def test_body_longer_than_content_length_is_cut_and_closes() -> None:
    conn = _head_of(b"GET / HTTP/1.1\r\n\r\n")
    conn.start_response("200 OK", [("Content-Length", "3")], date="-")
    assert conn.send_data(b"hello") == b"hel"
    conn.end_response()
    assert not conn.keep_alive


def test_body_shorter_than_content_length_closes() -> None:
    conn = _head_of(b"GET / HTTP/1.1\r\n\r\n")
    conn.start_response("200 OK", [("Content-Length", "3")], date="-")
    conn.send_data(b"he")
    conn.end_response()
    assert not conn.keep_alive


def test_error_response_is_complete_and_closes() -> None:
    conn = Connection(Limits())
    data = conn.error_response(431, "D")
    head, body = data.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"Connection: close" in head and b"Content-Length: %d" % len(body) in head
    assert not conn.keep_alive


def test_a_field_name_is_judged_alike_after_it_was_seen() -> None:
    # Names that passed as tokens are remembered (engine._GOOD_NAMES); a bad one must fail every time.
    for _ in range(2):
        good = Connection(Limits())
        good.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nX-Seen: 1\r\n\r\n")
        event = good.next_event()
        assert isinstance(event, Request) and event.headers == [(b"HOST", b"a"), (b"X-SEEN", b"1")]
        bad = Connection(Limits())
        bad.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nX(Seen): 1\r\n\r\n")
        with pytest.raises(ProtocolError) as caught:
            bad.next_event()
        assert caught.value.status == 400


# -- a head that repeats the last one on its connection is served from that one's parse

def test_repeated_heads_give_the_same_requests_as_fresh_ones():
    get = b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nX-Y: z\r\n\r\n"
    post = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"
    chunked = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    stream = (get + get + post + b"abc" + post + b"def" + get + chunked + b"2\r\nhi\r\n0\r\n\r\n"
              + chunked + b"1\r\n!\r\n0\r\n\r\n" + get + get)
    repeated = replay_all(stream)
    fresh = [drive([request + body]).requests[0] for request, body in (
        (get, b""), (get, b""), (post, b"abc"), (post, b"def"), (get, b""), (chunked, b"2\r\nhi\r\n0\r\n\r\n"),
        (chunked, b"1\r\n!\r\n0\r\n\r\n"), (get, b""), (get, b""))]
    assert repeated.end == "closed"
    assert repeated.requests == fresh
    assert [r.body for r in repeated.requests] == [b"", b"", b"abc", b"def", b"", b"hi", b"!", b"", b""]


def test_only_an_accepted_head_is_remembered():
    """Only a head parsed whole and accepted is remembered: the same bad head is refused every time,
    and after a good head, one that differs from it is checked in full."""
    good = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    assert replay_all(good + b"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n").status == 400
    assert replay_all(good + good + b"GET / HTTP/1.1\r\nHost: h\r\n\r\n".replace(b"\r\nHost", b"\nHost")).status == 400
    limits = Limits(header_fields=2)
    few = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n"
    assert replay_all(few + few + few.replace(b"\r\n\r\n", b"\r\nC: 3\r\n\r\n"), limits).status == 431


def test_a_new_connection_starts_from_the_last_head_its_limits_parsed():
    """A client that closes after one request sends the head the last one did: a new connection with
    the same limits (a listener's) gives the very request parsed then, the same as a fresh parse, and
    with the same fields, a new request line is parsed alone. Other limits parse anew, and a head
    refused on one connection is refused on the next."""
    limits = Limits()
    head = b"GET /c?x=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\nConnection: close\r\n\r\n"
    first = Connection(limits)
    first.receive_data(head)
    parsed = first.next_event()
    second = Connection(limits)
    second.receive_data(head)
    again = second.next_event()
    assert again is parsed
    other = Connection(Limits())
    other.receive_data(head)
    fresh = other.next_event()
    assert fresh is not parsed
    assert {name: getattr(fresh, name) for name in Request.__slots__} == \
        {name: getattr(parsed, name) for name in Request.__slots__}
    line = Connection(limits)
    line.receive_data(head.replace(b"/c?x=1", b"/d"))
    moved = line.next_event()
    assert isinstance(moved, Request) and moved.target == b"/d" and moved.headers is parsed.headers
    assert replay_all(head.replace(b"Host: h", b"Host: h\r\nHost: h"), limits).status == 400
    assert replay_all(head.replace(b"Host: h", b"Host: h\r\nHost: h"), limits).status == 400


# -- a head whose fields are the last head's is parsed by its request line alone

FIELD_BLOCKS = {
    "plain": b"\r\nHost: h\r\nUser-Agent: t\r\nCookie: a=1\r\n\r\n",
    "no_host": b"\r\nAccept: */*\r\n\r\n",
    "connection_close": b"\r\nHost: h\r\nConnection: close\r\n\r\n",
    "content_length": b"\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    "keep_alive": b"\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
    "expect": b"\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
    "upgrade": b"\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    "upgrade_alone": b"\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
    "content_type": b"\r\nHost: h\r\nContent-Type: text/plain\r\n\r\n",
    "many": b"\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
}
REQUEST_LINES = [
    b"GET /?n=2 HTTP/1.1", b"GET /other HTTP/1.0", b"HEAD /h HTTP/1.1", b"POST /p HTTP/1.1", b"OPTIONS * HTTP/1.1",
    b"CONNECT h:443 HTTP/1.1", b"GET http://h/abs?q HTTP/1.1", b"GET /%7Ex HTTP/1.1", b"GET / HTTP/2.0",
    b"GET / HTTP/1.1\r", b"GET /\r HTTP/1.1", b"GET /\x00 HTTP/1.1", b"GET /\xff HTTP/1.1", b"GET  / HTTP/1.1",
    b" GET / HTTP/1.1", b"GE(T / HTTP/1.1", b"", b"GET * HTTP/1.1", b"GET / HTTP/1.1\r\nX: 1", b"GET / HTTP/1.1\nX: 1",
    b"GET /" + b"a" * 60 + b" HTTP/1.1", b"GET\t/ HTTP/1.1", b"GET /\t HTTP/1.1", b"GET / HTTP/1.1 ", b"get / HTTP/1.1",
    b"GET / http/1.1", b"GET /a HTTP/1.1 x", b"GET /\x7f HTTP/1.1", b"GET / HTTP/1.10", b"GET /", b"\tGET / HTTP/1.1",
    b"\rGET / HTTP/1.1", b"GET /" + b"a" * 21 + b" HTTP/1.1", b"GET /" + b"a" * 22 + b" HTTP/1.1", b"PRI * HTTP/2.0",
    b"GET https://h:1/ HTTP/1.1", b"CONNECT /x HTTP/1.1", b"OPTIONS * HTTP/1.0", b"DELETE /d HTTP/1.0",
    b"GET /" + b"a" * 26 + b" HTTP/1.1",  # within request_line, but its head is over the limit
]


@pytest.mark.parametrize("first_line", [b"GET /?n=1 HTTP/1.1", b"GET /?n=1 HTTP/1.0", b"OPTIONS * HTTP/1.1"])
@pytest.mark.parametrize("fields", FIELD_BLOCKS.values(), ids=FIELD_BLOCKS.keys())
def test_a_new_request_line_on_known_fields_gives_what_a_fresh_connection_gives(fields, first_line):
    """Every request line after a head with the same fields: the same requests, or the same refusal, as
    on a connection of its own (limits that the line or the whole head may break included). The fresh
    connection's limits are a Limits of their own: a new connection on the same ones starts from the last
    head any of them parsed (engine._LAST), and would take the line-only path itself."""
    first = first_line + fields
    limits = Limits(request_line=40, head=len(first) + 20, header_fields=3)
    parsed = replay_all(first, limits)
    if parsed.status is not None:  # an HTTP/1.1 head without Host: nothing learnt
        return
    persists = parsed.requests[0].keep_alive
    for line in REQUEST_LINES:
        head = line + fields
        after = replay_all(first + head + head, limits)
        alone = replay_all(head + head, Limits(request_line=40, head=len(first) + 20, header_fields=3))
        if not persists:  # nothing follows the first head
            assert after.end == "close" and len(after.requests) == 1
            continue
        assert after.status == alone.status, line
        assert after.requests[1:] == alone.requests, line
        assert after.end == alone.end, line
