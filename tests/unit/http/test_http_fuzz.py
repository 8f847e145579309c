"""The sans-I/O engine fuzzed with hypothesis: request heads, bodies and chunk framing, valid and
mutated, fed whole and in random splits.

Properties: no exception but ProtocolError leaves the engine; a ProtocolError is a 4xx, or 501
for a transfer coding sockact cannot undo (RFC 9112 6.1); the engine never asks for bytes after
the client's EOF; a split never changes which requests are seen or whether one fails; and valid
requests come out as they went in.

SOCKACT_FUZZ_PROFILE picks the examples per test: ``ci`` (the default) keeps `make test` short,
``long`` is the run documented in docs/robustness.md; SOCKACT_FUZZ_EXAMPLES overrides the count.
Neither keeps an example database in the tree: a failure prints the blob that reproduces it
(``@reproduce_failure``).
"""

from __future__ import annotations

import itertools
import os
import string

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_http_engine import Replay, drive

from sockact.http.limits import Limits

_TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
_PCHAR = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%/"
_VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
# Field names the engine's framing rules look at; the random fields of a valid request avoid them.
_FRAMING = {"CONTENT-LENGTH", "TRANSFER-ENCODING", "CONNECTION", "EXPECT", "HOST", "CONTENT-TYPE", "UPGRADE"}
# Bytes a mutation inserts: the ones that delimit HTTP's syntax, and a few that are never allowed.
_SPECIAL = b"\r\n\0 \t:;,\"=\x7f\x80\xff0aF/?#"

_COMMON = {"deadline": None, "database": None, "print_blob": True,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("ci", max_examples=400, **_COMMON)
settings.register_profile("long", max_examples=50_000, **_COMMON)
settings.load_profile(os.environ.get("SOCKACT_FUZZ_PROFILE", "ci"))
if os.environ.get("SOCKACT_FUZZ_EXAMPLES"):  # a profile's size, changed for one run
    settings.register_profile("sized", settings(max_examples=int(os.environ["SOCKACT_FUZZ_EXAMPLES"])))
    settings.load_profile("sized")

DEFAULT = Limits()
SMALL = Limits(request_line=64, header_fields=4, header_field_size=64, head=256, body=16)

tokens = st.text(_TCHAR, min_size=1, max_size=10)
values = st.text(_VCHAR + " \t", max_size=20).map(str.strip)
names = tokens.filter(lambda n: n.upper() not in _FRAMING)
bodies = st.binary(max_size=40)


@st.composite
def targets(draw: st.DrawFn, method: str) -> str:
    path = "/" + draw(st.text(_PCHAR, max_size=20))
    if draw(st.booleans()):
        path += "?" + draw(st.text(_PCHAR + "?", max_size=10))
    if method == "OPTIONS" and draw(st.booleans()):
        return "*"
    if draw(st.integers(0, 4)) == 0:
        return f"http://{draw(st.sampled_from(['a', 'example.com', 'h:8080']))}{path}"
    return path


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` in chunks of random sizes, some with extensions, then maybe trailer fields."""
    out, pos = [], 0
    while pos < len(body):
        n = draw(st.integers(1, len(body) - pos))
        ext = draw(st.sampled_from(["", ";a", ";a=b", ';q="x y"']))
        size = draw(st.sampled_from(["%x", "%X", "0%x"])) % n
        out.append(f"{size}{ext}\r\n".encode() + body[pos : pos + n] + b"\r\n")
        pos += n
    trailers = draw(st.lists(st.tuples(names, values), max_size=2))
    out.append(b"0\r\n" + "".join(f"{n}: {v}\r\n" for n, v in trailers).encode() + b"\r\n")
    return b"".join(out)


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, tuple[bytes, bytes, bytes]]:
    """One request that every rule accepts: its bytes, and (method, target, body) as parsed."""
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]))
    target = draw(targets(method))
    version = draw(st.sampled_from(["1.1", "1.1", "1.0"]))
    fields = draw(st.lists(st.tuples(names, values), max_size=4))
    if draw(st.booleans()):
        fields.append(("Host", "example.com"))
    if draw(st.integers(0, 3)) == 0:
        fields.append(("Connection", draw(st.sampled_from(["close", "keep-alive", "Keep-Alive, foo"]))))
    body = draw(bodies)
    framing = draw(st.sampled_from(["none", "length", "chunked"] if version == "1.1" else ["none", "length"]))
    if framing == "none":
        body = b""
    elif framing == "length":
        fields.append(("Content-Length", str(len(body))))
    else:
        fields.append(("Transfer-Encoding", draw(st.sampled_from(["chunked", "identity, chunked", "Chunked"]))))
    fields = draw(st.permutations(fields))
    head = f"{method} {target} HTTP/{version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields) + "\r\n"
    wire = head.encode("latin-1") + (draw(chunked(body)) if framing == "chunked" else body)
    return wire, (method.encode(), target.encode(), body)


pipelines = st.lists(valid_requests(), min_size=1, max_size=3)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with one to four bytes flipped, special bytes inserted, ranges cut or repeated."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "repeat", "truncate"]))
        i = draw(st.integers(0, len(buf)))
        j = draw(st.integers(i, min(len(buf), i + 16)))
        if kind == "flip" and i < len(buf):
            buf[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            buf[i:i] = draw(st.binary(min_size=1, max_size=3) | st.sampled_from(_SPECIAL).map(lambda b: bytes([b])))
        elif kind == "delete":
            del buf[i:j]
        elif kind == "repeat":
            buf[i:i] = buf[i:j] * draw(st.integers(1, 3))
        elif kind == "truncate":
            del buf[i:]
    return bytes(buf)


@st.composite
def split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at random points, empty pieces left out (b"" is EOF)."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=12)))
    bounds = [0, *(c for c in cuts if c < len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if a < b]


def outcome(result: Replay) -> tuple[bool, list[bytes]]:
    """What may not depend on how the bytes were split: whether it failed, and the requests seen.

    Body bytes streamed before an error may, and so may the status when the bytes break several
    rules at once: the rule that sees them first answers (a bare LF at the end of a piece is
    refused before the request line it belongs to is known to be too long).
    """
    return result.status is not None, [r.target for r in result.requests]


def check(data: bytes, pieces: list[bytes], limits: Limits) -> Replay:
    """Drive ``data`` whole and as ``pieces``; each must end well, and both the same way."""
    whole = drive([data], limits)
    parts = drive(pieces, limits)
    for result in (whole, parts):
        if result.status is not None:
            assert 400 <= result.status < 500 or result.status == 501, result
        assert result.end in ("closed", "error", "close"), result
    assert outcome(parts) == outcome(whole)
    if whole.status is None:
        assert parts == whole
    return whole


@given(st.data(), pipelines)
def test_valid_pipelines_come_out_as_they_went_in(data: st.DataObject, requests: list) -> None:
    wire = b"".join(w for w, _ in requests)
    result = check(wire, data.draw(split(wire)), DEFAULT)
    assert result.status is None, result
    seen = [(r.method, r.target, r.body) for r in result.requests]
    # Up to the first request that does not persist; the engine reads nothing after it.
    expected = [want for _, want in requests][: len(seen)]
    assert seen == expected
    assert len(seen) == len(requests) or not result.requests[-1].keep_alive


@given(st.data(), pipelines, st.sampled_from([DEFAULT, SMALL]))
@example(None, [(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", None)], DEFAULT)
def test_mutated_requests_get_a_request_or_a_4xx(data: st.DataObject | None, requests: list, limits: Limits) -> None:
    wire = b"".join(w for w, _ in requests)
    if data is None:  # the explicit example: whole and byte by byte
        check(wire, [wire[i : i + 1] for i in range(len(wire))], limits)
        return
    bad = data.draw(mutated(wire))
    check(bad, data.draw(split(bad)), limits)


@st.composite
def chunk_lines(draw: st.DrawFn) -> bytes:
    """A chunk-size line built from near-valid pieces: sizes, extensions, whitespace, stray CR/LF."""
    size = draw(st.sampled_from([b"0", b"5", b"05", b"a", b"F", b"ffffffffffffffff", b"1" + b"0" * 16, b"-1",
                                 b"0x5", b"", b" 5", b"5 "]))
    ext = draw(st.lists(st.sampled_from([b";", b"a", b"=", b'"', b"\\", b" ", b"\t", b"\x01", b"\x80"]), max_size=6))
    end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n"]))
    return size + b"".join(ext) + end


@given(st.data(), st.lists(st.tuples(chunk_lines(), bodies), min_size=1, max_size=4),
       st.sampled_from([DEFAULT, SMALL]))
def test_chunk_framing_mutated(data: st.DataObject, chunks: list[tuple[bytes, bytes]], limits: Limits) -> None:
    wire = (b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(line + body + data.draw(st.sampled_from([b"\r\n", b"", b"\n"])) for line, body in chunks)
            + data.draw(st.sampled_from([b"0\r\n\r\n", b"", b"0\r\nX: y\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n"])))
    check(wire, data.draw(split(wire)), limits)


@given(st.data(), st.binary(max_size=300), st.sampled_from([b"", b"GET / HTTP/1.1\r\n", b"POST /x HTTP/1.0\r\n"]),
       st.sampled_from([DEFAULT, SMALL]))
def test_random_bytes_get_a_request_or_a_4xx(data: st.DataObject, noise: bytes, prefix: bytes, limits: Limits) -> None:
    wire = prefix + noise
    check(wire, data.draw(split(wire)), limits)
