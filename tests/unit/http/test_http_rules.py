"""sockact's own request rules (sockact/http/rules.py), with no parser in front of them.

Both httptools generations refuse some smuggling shapes before these rules run, so replaying
requests through the engine cannot show whether the rules themselves hold. They are the contract
if the parser changes: these tests feed them fields and raw heads directly.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sockact.errors import ProtocolError
from sockact.http.limits import Limits
from sockact.http.rules import FieldRules, check_head, check_line, check_partial_head, check_target


def rules_for(*fields: tuple[bytes, bytes]) -> FieldRules:
    rules = FieldRules()
    for name, value in fields:
        rules.field(name, value)
    return rules


def refusal(fields: list[tuple[bytes, bytes]], version: str = "1.1", limits: Limits | None = None) -> int:
    """The status FieldRules.framing refuses ``fields`` with; fails the test if it accepts them."""
    with pytest.raises(ProtocolError) as caught:
        rules_for(*fields).framing(version, limits or Limits())
    return caught.value.status


CL, TE = b"CONTENT-LENGTH", b"TRANSFER-ENCODING"


# name -> (fields, the status FieldRules refuses them with)
REFUSED: dict[str, tuple[list[tuple[bytes, bytes]], int]] = {
    "cl_then_te": ([(CL, b"5"), (TE, b"chunked")], 400),  # the classic smuggling pair, in either order
    "te_then_cl": ([(TE, b"chunked"), (CL, b"5")], 400),
    "te_and_cl_zero": ([(TE, b"chunked"), (CL, b"0")], 400),
    "cl_conflicting": ([(CL, b"5"), (CL, b"6")], 400),
    "cl_identical": ([(CL, b"5"), (CL, b"5")], 400),
    "cl_list": ([(CL, b"5, 5")], 400),
    "cl_plus": ([(CL, b"+5")], 400),
    "cl_negative": ([(CL, b"-1")], 400),
    "cl_hex": ([(CL, b"0x5")], 400),
    "cl_empty": ([(CL, b"")], 400),
    "te_chunked_not_final": ([(TE, b"chunked, identity")], 400),
    "te_chunked_twice_fields": ([(TE, b"chunked"), (TE, b"chunked")], 400),
    "te_chunked_twice_list": ([(TE, b"chunked, chunked")], 400),
    "te_empty": ([(TE, b"")], 400),
    "te_gzip_only": ([(TE, b"gzip")], 400),
    "te_gzip_chunked": ([(TE, b"gzip, chunked")], 501),  # well framed, but a coding sockact cannot undo
    "two_hosts": ([(b"HOST", b"a"), (b"HOST", b"b")], 400),
    "two_content_types": ([(b"CONTENT-TYPE", b"a"), (b"CONTENT-TYPE", b"b")], 400),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_framing_refusals(name: str) -> None:
    fields, status = REFUSED[name]
    assert refusal(fields) == status



def test_transfer_encoding_is_refused_in_http10() -> None:
    assert refusal([(TE, b"chunked")], version="1.0") == 400
    assert rules_for((TE, b"chunked")).framing("1.1", Limits()) == (None, True)


def test_body_over_the_limit_is_refused_before_it_is_read() -> None:
    assert refusal([(CL, b"11")], limits=Limits(body=10)) == 413
    assert rules_for((CL, b"10")).framing("1.1", Limits(body=10)) == (10, False)


@pytest.mark.parametrize(("fields", "framing"), [
    ([], (None, False)),
    ([(CL, b"0")], (0, False)),
    ([(CL, b"12345")], (12345, False)),
    ([(TE, b"chunked")], (None, True)),
    ([(TE, b"Chunked")], (None, True)),
    ([(TE, b"identity, chunked")], (None, True)),
    ([(TE, b"identity"), (TE, b"chunked")], (None, True)),
    ([(b"HOST", b"a"), (b"X-OTHER", b"1"), (b"X-OTHER", b"2")], (None, False)),
])
def test_framing_accepted(fields: list[tuple[bytes, bytes]], framing: tuple[int | None, bool]) -> None:
    assert rules_for(*fields).framing("1.1", Limits()) == framing


@pytest.mark.parametrize(("version", "connection", "keep_alive"), [
    ("1.1", [], True),
    ("1.0", [], False),
    ("1.1", [b"close"], False),
    ("1.1", [b"Keep-Alive, CLOSE"], False),
    ("1.0", [b"keep-alive"], True),
    ("1.0", [b"upgrade", b" Keep-Alive "], True),
])
def test_keep_alive(version: str, connection: list[bytes], keep_alive: bool) -> None:
    assert rules_for(*((b"CONNECTION", v) for v in connection)).keep_alive(version) is keep_alive


def test_expects_continue_only_in_http11() -> None:
    assert rules_for((b"EXPECT", b"100-Continue")).expects_continue("1.1")
    assert not rules_for((b"EXPECT", b"100-continue")).expects_continue("1.0")
    assert not rules_for().expects_continue("1.1")


@pytest.mark.parametrize(("head", "status"), [
    (b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nX: a\r\n\r\n", 400),  # bare LF
    (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400),  # bare CR
    (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400),  # obs-fold
    (b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", 400),
    (b"\r\nGET / HTTP/1.1\r\n\r\n", 400),  # an empty line where the request line should be
    (b" GET / HTTP/1.1\r\n\r\n", 400),
])
def test_raw_head_refusals(head: bytes, status: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        check_head(head, Limits())
    assert caught.value.status == status


def _verdict(check: object, *args: object) -> tuple[int, str] | None:
    try:
        check(*args)  # type: ignore[operator]
    except ProtocolError as exc:
        return exc.status, str(exc)
    return None


# Request lines as the engine gives check_line one: no LF (a head whose line has one is checked whole).
LINES = st.binary(max_size=24).map(lambda b: b.replace(b"\n", b"")) | st.lists(
    st.sampled_from([b"GET", b" ", b"/", b"\r", b"\0", b"\t", b"HTTP/1.1", b"a"]), max_size=8).map(b"".join)


@given(LINES)
@example(b"")
@example(b" GET / HTTP/1.1")
@example(b"GET / HTTP/1.1\r")
@example(b"GET /\0 HTTP/1.1")
@example(b"GET /" + b"a" * 20 + b" HTTP/1.1")
def test_a_request_line_alone_gets_the_verdict_of_its_whole_head(line: bytes) -> None:
    """check_line on a line whose fields were checked before: what check_head says of the line with no fields."""
    limits = Limits(request_line=20)
    assert _verdict(check_line, line, limits) == _verdict(check_head, line + b"\r\n\r\n", limits)


def test_bare_lf_is_refused_before_the_head_ends() -> None:
    with pytest.raises(ProtocolError) as caught:
        check_partial_head(b"GET / HTTP/1.1\r\nX: a\nY", 0, Limits())
    assert caught.value.status == 400
    check_partial_head(b"GET / HTTP/1.1\r\nX: a\r", 0, Limits())  # a CRLF split across reads is fine


@pytest.mark.parametrize(("method", "target"), [
    (b"GET", b"*"),
    (b"CONNECT", b"/x"),
    (b"CONNECT", b"example.com"),  # no port
    (b"GET", b"example.com:80"),  # authority-form is for CONNECT only
    (b"GET", b"ftp://example.com/"),
    (b"GET", b"/a b"),
    (b"GET", b"/\x7f"),
    (b"GET", "/é".encode()),
])
def test_target_refusals(method: bytes, target: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        check_target(method, target)
    assert caught.value.status == 400


@pytest.mark.parametrize(("method", "target"), [
    (b"OPTIONS", b"*"),
    (b"GET", b"/a?b=c"),
    (b"CONNECT", b"example.com:443"),
    (b"GET", b"http://example.com/x"),
    (b"GET", b"HTTPS://example.com"),
])
def test_target_accepted(method: bytes, target: bytes) -> None:
    check_target(method, target)


@pytest.mark.parametrize("pieces", [
    [b"\x16\x03\x01\x02\x00\x01"],  # a TLS ClientHello's first bytes
    [b"GE", b"T\x00"],  # a method that turns bad in its second piece
    [b"\x80"],
])
def test_a_method_that_is_no_token_is_refused_as_it_comes(pieces):
    buf, start = b"", 0
    with pytest.raises(ProtocolError) as refused:
        for piece in pieces:
            buf += piece
            check_partial_head(buf, start, Limits())
            start = max(0, len(buf) - 1)
    assert refused.value.status == 400


@pytest.mark.parametrize("pieces", [[b"G", b"E", b"T", b" /"], [b"\r", b"\nGET"], [b"PRI * HTTP/2.0"], [b"M-SEARCH"]])
def test_a_method_still_coming_is_waited_for(pieces):
    buf, start = b"", 0
    for piece in pieces:
        buf += piece
        check_partial_head(buf, start, Limits())
        start = max(0, len(buf) - 1)
