"""The two WebSocket libraries behind sockact's one sans-I/O interface: fed bytes, they say the same."""

from __future__ import annotations

import struct

import pytest

from sockact.asgi.wsprotocols import LIBRARIES, Closed, Part, check_handshake, find, head_fields
from sockact.errors import ProtocolError
from sockact.http.engine import Connection
from sockact.http.events import Request
from sockact.http.limits import Limits

HEAD = (b"GET /chat HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: chat, other\r\n\r\n")


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame, zero key."""
    first = (0x80 if fin else 0) | opcode
    if len(payload) < 126:
        return bytes([first, 0x80 | len(payload)]) + b"\0\0\0\0" + payload
    return bytes([first, 0x80 | 126]) + struct.pack("!H", len(payload)) + b"\0\0\0\0" + payload


@pytest.fixture(params=sorted(LIBRARIES))
def library(request):
    name = request.param
    pytest.importorskip(LIBRARIES[name][0])
    return LIBRARIES[name][1]


def opened(library, max_size: int = 1 << 20):
    proto = library(HEAD, max_size)
    assert not proto.refused
    proto.accept("chat", [(b"x-extra", b"1")])
    answer = proto.take_output()
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"Sec-WebSocket-Protocol: chat\r\n" in answer and b"x-extra: 1\r\n" in answer.lower()
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer
    return proto


def test_messages_come_as_parts_text_utf8_encoded(library):
    proto = opened(library)
    proto.receive_data(frame(0x1, "é".encode()) + frame(0x2, b"ab", fin=False) + frame(0x0, b"cd"))
    parts = list(proto.events())
    assert b"".join(p.data for p in parts if not p.text) == b"abcd" and parts[-1].last
    assert parts[0] == Part("é".encode(), True, True)


def test_a_ping_is_answered_by_the_library(library):
    proto = opened(library)
    proto.receive_data(frame(0x9, b"hi"))
    assert list(proto.events()) == []
    assert proto.take_output() == b"\x8a\x02hi"


def test_the_clients_close_is_answered_and_said(library):
    proto = opened(library)
    proto.receive_data(frame(0x8, struct.pack("!H", 1000) + b"bye"))
    assert list(proto.events()) == [Closed(1000, "bye")]
    assert proto.take_output().startswith(b"\x88\x05\x03\xe8bye")


def test_sends_and_closes_are_frames(library):
    proto = opened(library)
    proto.send_message("hi")
    proto.send_message(b"\x00")
    proto.close(1009, "too big")
    assert proto.take_output() == b"\x81\x02hi" + b"\x82\x01\x00" + b"\x88\x09\x03\xf1too big"


def test_a_bad_handshake_is_refused_with_a_400(library):
    proto = library(b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 1000)
    assert proto.refused
    assert proto.take_output().startswith(b"HTTP/1.1 400 ")


def test_a_rejection_before_accept_is_an_http_answer(library):
    proto = library(HEAD, 1000)
    proto.reject(403)
    assert proto.take_output().startswith(b"HTTP/1.1 403")


def test_the_fields_of_a_librarys_answer_are_read_from_its_head_for_the_access_log(library):
    proto = library(HEAD, 1000)
    proto.accept("chat", [(b"x-extra", b"1")])
    # A ping that came with the head, answered behind it: not part of the head.
    fields = {name.lower(): value for name, value in head_fields(proto.take_output() + b"\x8a\x02hi")}
    assert fields["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" and fields["upgrade"] == "websocket"
    assert fields["sec-websocket-protocol"] == "chat" and fields["x-extra"] == "1"
    refusal = library(HEAD, 1000)
    refusal.reject(403)
    assert ("sec-websocket-accept" not in {name.lower() for name, _ in head_fields(refusal.take_output())})
    assert head_fields(b"") == []


def test_an_unmasked_frame_closes_with_1002(library):
    proto = opened(library)
    proto.receive_data(b"\x81\x02hi")
    [event] = list(proto.events())
    assert isinstance(event, Closed) and event.code == 1002
    assert proto.take_output().startswith(b"\x88")


def test_auto_takes_websockets_first_as_uvicorn_does():
    pytest.importorskip("websockets.server")
    assert find("auto") is LIBRARIES["websockets"][1]
    assert find("wsproto") is LIBRARIES["wsproto"][1]


def test_bytes_after_the_close_are_dropped(library):
    proto = opened(library)
    proto.receive_data(frame(0x8, struct.pack("!H", 1000)))
    assert list(proto.events()) == [Closed(1000, "")]
    proto.receive_data(frame(0x1, b"late"))
    proto.receive_data(b"")
    assert [e for e in proto.events() if isinstance(e, Part)] == []


def _request(head: bytes) -> Request:
    engine = Connection(Limits())
    engine.receive_data(head)
    request = engine.next_event()
    assert isinstance(request, Request)
    return request


@pytest.mark.parametrize(("version", "field"), [(b"HTTP/1.0", b""), (b"HTTP/1.1", b"Content-Length: 5\r\n")])
def test_a_handshake_rfc_6455_forbids_is_a_400_before_either_library_sees_it(version, field):
    head = HEAD.replace(b"HTTP/1.1", version).replace(b"\r\n\r\n", b"\r\n" + field + b"\r\n")
    with pytest.raises(ProtocolError) as refused:
        check_handshake(_request(head + b"hello"))
    assert refused.value.status == 400


def test_a_handshake_over_http_1_1_without_a_body_passes():
    check_handshake(_request(HEAD))
    check_handshake(_request(HEAD.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n")))


def test_a_ping_of_sockacts_is_framed_and_its_pong_heard_outside_the_events(library):
    proto = opened(library)
    pongs = []
    proto.on_pong = pongs.append
    proto.send_ping(b"\0\0\0\x01")
    assert proto.take_output() == b"\x89\x04\0\0\0\x01"
    proto.receive_data(frame(0xA, b"\0\0\0\x01") + frame(0x1, b"hi"))
    assert list(proto.events()) == [Part(b"hi", True, True)]  # the app hears only its message
    assert pongs == [b"\0\0\0\x01"]
