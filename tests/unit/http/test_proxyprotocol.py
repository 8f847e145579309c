"""proxyprotocol.py: real PROXY v1 and v2 headers, whole, byte by byte, cut short and too long."""

from __future__ import annotations

import socket
import struct

import pytest

from sockact.http.proxyprotocol import V1_MAX, V2_MAX, V2_SIGNATURE, Header, ProxyProtocolError, parse
from sockact.ipc import handoff

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def v2(command: int, family: int, addresses: bytes, tlvs: bytes = b"") -> bytes:
    body = addresses + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


V2_TCP4 = v2(1, 0x11, socket.inet_aton("198.51.100.7") + socket.inet_aton("10.0.0.2") + struct.pack("!HH", 51234, 80))
V2_TCP6 = v2(1, 0x21, socket.inet_pton(socket.AF_INET6, "2001:db8::7") + socket.inet_pton(socket.AF_INET6, "::1")
             + struct.pack("!HH", 443, 8080))
V2_TLVS = v2(1, 0x11, socket.inet_aton("198.51.100.7") + socket.inet_aton("10.0.0.2") + struct.pack("!HH", 1, 2),
             tlv(0x01, b"h2") + tlv(0x20, b"\x01" + b"\x00" * 4 + tlv(0x21, b"TLSv1.3")) + tlv(0x04, b""))
V2_LOCAL = v2(0, 0x00, b"")
V2_LOCAL_WITH_ADDRESSES = v2(0, 0x11, b"\x00" * 12)  # LOCAL ignores whatever follows
V2_UNIX = v2(1, 0x31, b"/run/a".ljust(108, b"\x00") + b"/run/b".ljust(108, b"\x00"))
V2_UNSPEC = v2(1, 0x00, b"")

VALID = {
    "v1 TCP4": (b"PROXY TCP4 198.51.100.7 10.0.0.2 51234 80\r\n", "v1", ("198.51.100.7", 51234)),
    "v1 TCP6": (b"PROXY TCP6 2001:db8::7 ::1 443 8080\r\n", "v1", ("2001:db8::7", 443)),
    "v1 UNKNOWN": (b"PROXY UNKNOWN\r\n", "v1", None),
    "v1 UNKNOWN with addresses": (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", "v1", None),
    "v1 longest": (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                   b"65535 65535\r\n", "v1", ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)),
    "v2 TCP4": (V2_TCP4, "v2", ("198.51.100.7", 51234)),
    "v2 TCP6": (V2_TCP6, "v2", ("2001:db8::7", 443)),
    "v2 TLVs": (V2_TLVS, "v2", ("198.51.100.7", 1)),
    "v2 LOCAL": (V2_LOCAL, "v2", None),
    "v2 LOCAL with addresses": (V2_LOCAL_WITH_ADDRESSES, "v2", None),
    "v2 UNIX": (V2_UNIX, "v2", None),
    "v2 UNSPEC": (V2_UNSPEC, "v2", None),
}


@pytest.mark.parametrize("name", VALID)
@pytest.mark.parametrize("mode_of", [lambda version: version, lambda version: "auto"], ids=["exact", "auto"])
def test_whole_headers(name: str, mode_of: object) -> None:
    raw, version, client = VALID[name]
    mode = mode_of(version)  # type: ignore[operator]
    assert parse(raw + REQUEST, mode) == (Header(client), len(raw))


@pytest.mark.parametrize("name", VALID)
def test_byte_by_byte(name: str) -> None:
    raw, _, client = VALID[name]
    for end in range(len(raw)):
        assert parse(raw[:end], "auto") is None, end
    assert parse(raw, "auto") == (Header(client), len(raw))


def test_v1_longest_line_is_the_limit() -> None:
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    longest = f"PROXY UNKNOWN {full} {full} 65535 65535\r\n".encode()
    assert len(longest) == V1_MAX and parse(longest, "v1") == (Header(None), V1_MAX)
    with pytest.raises(ProxyProtocolError):
        parse(longest[:-2] + b"5\r\n", "v1")


@pytest.mark.parametrize(("raw", "mode"), [
    (REQUEST, "auto"),  # no header at all
    (REQUEST, "v1"),
    (b"\x16\x03\x01", "auto"),  # TLS
    (VALID["v1 TCP4"][0], "v2"),  # the other version
    (V2_TCP4, "v1"),
    (b"PROXY TCP4 198.51.100.7 10.0.0.2 51234 80\n", "v1"),  # LF alone
    (b"PROXY TCP4 198.51.100.7 10.0.0.2 51234\r\n", "v1"),
    (b"PROXY TCP4 198.51.100.7  10.0.0.2 51234 80\r\n", "v1"),
    (b"PROXY TCP4 2001:db8::7 10.0.0.2 51234 80\r\n", "v1"),
    (b"PROXY TCP6 198.51.100.7 ::1 1 2\r\n", "v1"),
    (b'PROXY TCP6 fe80::1%"x ::1 1 2\r\n', "v1"),  # a zone: any text would reach REMOTE_ADDR
    (b'PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n', "v1"),
    (b"PROXY TCP4 198.51.100.7 10.0.0.2 051234 80\r\n", "v1"),
    (b"PROXY TCP4 198.51.100.7 10.0.0.2 65536 80\r\n", "v1"),
    (b"PROXY UDP4 198.51.100.7 10.0.0.2 1 2\r\n", "v1"),
    (b"PROXY TCP4 198.51.100.7 10.0.0.2 1 2" + b" " * 80 + b"\r\n", "v1"),  # oversized
    (b"PROXY " + b"X" * (V1_MAX + 10), "v1"),  # never ends
    (V2_SIGNATURE + b"\x11\x11\x00\x00", "v2"),  # version 1 in a v2 header
    (V2_SIGNATURE + b"\x22\x11\x00\x00", "v2"),  # unknown command
    (V2_SIGNATURE + b"\x21\x41\x00\x00", "v2"),  # unknown family
    (v2(1, 0x11, b"\x00" * 8), "v2"),  # address block too short
    (v2(1, 0x11, b"\x00" * 12, b"\x01\x00\x05ab"), "v2"),  # TLV longer than the header
    (v2(1, 0x11, b"\x00" * 12, b"\x01\x00"), "v2"),  # TLV cut short
    (V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", V2_MAX), "v2"),  # oversized, refused before it is read
])
def test_malformed_headers_are_refused(raw: bytes, mode: str) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(raw, mode)


def test_a_plain_request_is_refused_at_its_first_byte() -> None:
    with pytest.raises(ProxyProtocolError):
        parse(b"G", "auto")


@pytest.mark.parametrize("name", VALID)
def test_truncated_headers_wait_for_more(name: str) -> None:
    raw = VALID[name][0]
    assert parse(raw[:-1], "auto") is None


@pytest.mark.parametrize("header", [None, Header(None), Header(("198.51.100.7", 51234)), Header(("2001:db8::7", 1))])
@pytest.mark.parametrize(("family", "peer"), [(socket.AF_INET, ("10.0.0.2", 5)), (socket.AF_INET6, ("::1", 6)),
                                              (socket.AF_UNIX, None)])
def test_the_header_travels_on_the_channel(header: Header | None, family: int, peer: object) -> None:
    msg = handoff.Message(handoff.PARK, conn_id=9, listener=1, family=family, peer=peer,  # type: ignore[arg-type]
                          hops=2, data=b"GET /", proxy=header)
    assert handoff.decode(handoff.encode(msg)) == msg
