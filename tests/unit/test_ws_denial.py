"""The WebSocket denial response's state machine (sockact.asgi.denial), fed messages, with no socket: the
bytes it gives for each, and the messages out of turn it refuses."""

from __future__ import annotations

import pytest

from sockact.asgi.denial import ENDED, IDLE, SENDING, STARTED, Denial
from sockact.errors import InvalidResponse
from sockact.http.engine import Connection
from sockact.http.events import END_OF_MESSAGE, Request
from sockact.http.limits import Limits

UPGRADE = (b"GET /chat HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
START = {"type": "websocket.http.response.start", "status": 403, "headers": [(b"x-why", b"no token")]}


def body(data: bytes, more: bool = False) -> dict:
    return {"type": "websocket.http.response.body", "body": data, "more_body": more}


def denial() -> Denial:
    """A denial for an upgrade request its engine has read whole, as the WebSocket session finds it."""
    engine = Connection(Limits())
    engine.receive_data(UPGRADE)
    assert isinstance(engine.next_event(), Request)
    assert engine.next_event() is END_OF_MESSAGE
    return Denial(engine)


def split(data: bytes) -> tuple[list[str], bytes]:
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n"), rest


def test_a_whole_body_gets_its_length_and_the_head_waits_for_it():
    d = denial()
    assert d.send("websocket.http.response.start", START) == b""  # the head waits for the body
    assert d.state is STARTED and not d.begun
    lines, rest = split(d.send("websocket.http.response.body", body(b"go away")))
    assert lines[0] == "HTTP/1.1 403 Forbidden"
    assert "x-why: no token" in lines and "Content-Length: 7" in lines and "Connection: close" in lines
    assert "Server: sockact" in lines and any(line.startswith("Date: ") for line in lines)
    assert rest == b"go away"
    assert d.state is ENDED and d.ended and d.status == 403


def test_a_body_in_parts_is_chunked_and_an_empty_part_is_no_chunk():
    d = denial()
    d.send("websocket.http.response.start", START)
    lines, rest = split(d.send("websocket.http.response.body", body(b"one", more=True)))
    assert "Transfer-Encoding: chunked" in lines and rest == b"3\r\none\r\n"
    assert d.state is SENDING and d.begun and not d.ended
    assert d.send("websocket.http.response.body", body(b"", more=True)) == b""
    assert d.send("websocket.http.response.body", body(b"two")) == b"3\r\ntwo\r\n0\r\n\r\n"
    assert d.ended


def test_the_apps_content_length_frames_it():
    d = denial()
    d.send("websocket.http.response.start", {**START, "headers": [(b"content-length", b"6")]})
    lines, rest = split(d.send("websocket.http.response.body", body(b"abc", more=True)))
    assert "content-length: 6" in lines and "Transfer-Encoding: chunked" not in lines and rest == b"abc"
    assert d.send("websocket.http.response.body", body(b"def")) == b"def"


@pytest.mark.parametrize(("before", "message", "says"), [
    ([], body(b"x"), "before websocket.http.response.start"),
    ([START], START, "after websocket.http.response.start"),
    ([START, body(b"x", more=True)], START, "in the middle of the denial response"),
    ([START, body(b"x", more=True)], {"type": "websocket.accept"}, "in the middle of the denial response"),
    ([START, body(b"x")], body(b"x"), "after the denial response ended"),
    ([START, body(b"x")], {"type": "websocket.close"}, "after the denial response ended"),
])
def test_a_message_out_of_turn_is_refused_and_changes_nothing(before, message, says):
    d = denial()
    for earlier in before:
        d.send(earlier["type"], earlier)
    state = d.state
    with pytest.raises(InvalidResponse, match=says):
        d.send(message["type"], message)
    assert d.state is state


@pytest.mark.parametrize("start", [
    {**START, "status": 101},  # it would say the protocol switched
    {**START, "status": "403"},
    {**START, "status": 99},
    {**START, "headers": [(b"x-split", b"a\r\nx-injected: 1")]},
    {**START, "headers": [("x-str", "not bytes")]},
    {**START, "headers": [(b"bad name", b"v")]},
])
def test_a_bad_status_or_header_is_refused_as_an_http_responses_is(start):
    d = denial()
    with pytest.raises(InvalidResponse):
        d.send(start["type"], start)
    assert d.state is IDLE  # nothing went out: the session answers 500


def test_a_body_that_is_not_bytes_is_refused_before_any_byte_goes():
    d = denial()
    d.send("websocket.http.response.start", START)
    with pytest.raises(InvalidResponse, match="must be bytes"):
        d.send("websocket.http.response.body", body("text"))  # type: ignore[arg-type]
    assert d.state is STARTED and not d.begun


def test_hop_by_hop_fields_are_dropped_and_the_engine_keeps_its_own():
    d = denial()
    d.send("websocket.http.response.start", {**START, "headers": [(b"transfer-encoding", b"gzip"),
                                                                  (b"server", b"mine")]})
    lines, _ = split(d.send("websocket.http.response.body", body(b"x")))
    assert "Transfer-Encoding: gzip" not in lines and "transfer-encoding: gzip" not in lines
    assert "server: mine" in lines and "Server: sockact" not in lines  # the app's own Server stands
