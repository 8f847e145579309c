"""The PROXY protocol header (HAProxy's, versions 1 and 2), sans I/O.

A balancer that speaks it sends one header before the client's first byte, naming the
client it accepted. ``parse(buffer, mode)`` looks at the bytes received so far and
returns None (need more), a Header and how many bytes it took, or raises
ProxyProtocolError. It is strict, as the specification asks of a receiver: anything
that is not a whole, well-formed header of an accepted version is an error, as soon as
the bytes in hand prove it, so a client that sends plain HTTP is refused at once.

What is kept of a header is the source address of a TCP over IPv4 or IPv6 "PROXY"
command. A v2 "LOCAL" command (the balancer's own health check), "UNKNOWN" (v1), and
other families (UNIX, UNSPEC, datagrams) keep the socket's own peer. v2 TLVs are skipped.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
# The v1 line, CRLF included, is at most 107 bytes long (the specification, 2.1).
V1_MAX = 107
# v2: 16 fixed bytes, then the addresses and TLVs. The specification allows 64 KiB; balancers
# send a few hundred bytes of TLVs at most, so a longer header is refused rather than buffered.
V2_MAX = 16 + 2048
MODES = ("v1", "v2", "auto")

_V2_FIXED = struct.Struct("!12sBBH")
_V2_INET = struct.Struct("!4s4sHH")
_V2_INET6 = struct.Struct("!16s16sHH")
_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY header of an accepted version; the connection is closed."""


@dataclass(frozen=True, slots=True)
class Header:
    """A PROXY header already read: the client it names, or None to keep the socket's peer."""

    client: tuple[str, int] | None = None

    @property
    def family(self) -> int:
        """The client's address family; AF_UNSPEC when the socket's peer is kept."""
        if self.client is None:
            return socket.AF_UNSPEC
        return socket.AF_INET6 if ":" in self.client[0] else socket.AF_INET


def parse(buf: bytes, mode: str = "auto") -> tuple[Header, int] | None:
    """(the header, its length in bytes) from the start of ``buf``; None while incomplete."""
    if mode not in MODES:
        raise ValueError(f"unknown PROXY protocol mode {mode!r}")
    if mode in ("v2", "auto") and _could_be(buf, V2_SIGNATURE):
        return _parse_v2(buf)
    if mode in ("v1", "auto") and _could_be(buf, V1_PREFIX):
        return _parse_v1(buf)
    expected = {"v1": "v1", "v2": "v2", "auto": "v1 or v2"}[mode]
    raise ProxyProtocolError(f"no PROXY protocol {expected} header (starts {bytes(buf[:16])!r})")


def _could_be(buf: bytes, prefix: bytes) -> bool:
    n = min(len(buf), len(prefix))
    return buf[:n] == prefix[:n]


def _parse_v1(buf: bytes) -> tuple[Header, int] | None:
    end = buf.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(buf) >= V1_MAX or b"\n" in buf[:V1_MAX]:
            raise ProxyProtocolError(f"PROXY v1 line not ended by CRLF within {V1_MAX} bytes")
        return None
    line = buf[len(V1_PREFIX):end]
    parts = line.split(b" ")
    if parts[0] == b"UNKNOWN":
        return Header(None), end + 2  # the rest of the line is to be ignored (2.1)
    if len(parts) != 5 or parts[0] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError(f"PROXY v1 line malformed: {bytes(buf[:end])!r}")
    family = ipaddress.IPv4Address if parts[0] == b"TCP4" else ipaddress.IPv6Address
    if b"%" in line:
        # ipaddress takes any text after an IPv6 zone's "%"; the specification has no zones
        raise ProxyProtocolError(f"PROXY v1 address with a zone: {bytes(buf[:end])!r}")
    try:
        source = family(parts[1].decode("ascii"))
        family(parts[2].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise ProxyProtocolError(f"PROXY v1 addresses malformed: {bytes(buf[:end])!r}") from None
    ports = parts[3:]
    if not all(_V1_PORT.fullmatch(p) and int(p) < 65536 for p in ports):
        raise ProxyProtocolError(f"PROXY v1 ports malformed: {bytes(buf[:end])!r}")
    return Header((str(source), int(ports[0]))), end + 2


def _parse_v2(buf: bytes) -> tuple[Header, int] | None:
    if len(buf) < _V2_FIXED.size:
        return None
    _, ver_cmd, fam, length = _V2_FIXED.unpack_from(buf)
    version, command = ver_cmd >> 4, ver_cmd & 0x0F
    if version != 2:
        raise ProxyProtocolError(f"PROXY v2 header with version {version}")
    if command not in (0, 1):
        raise ProxyProtocolError(f"PROXY v2 header with unknown command {command}")
    total = _V2_FIXED.size + length
    if total > V2_MAX:
        raise ProxyProtocolError(f"PROXY v2 header of {total} bytes, more than {V2_MAX}")
    if len(buf) < total:
        return None
    if command == 0:
        return Header(None), total  # LOCAL: the balancer speaking for itself; keep the socket's peer
    body = bytes(buf[_V2_FIXED.size:total])
    if fam == 0x11:  # TCP over IPv4
        layout, af = _V2_INET, socket.AF_INET
    elif fam == 0x21:  # TCP over IPv6
        layout, af = _V2_INET6, socket.AF_INET6
    elif fam >> 4 <= 3 and fam & 0x0F <= 2:
        return Header(None), total  # UNSPEC, UNIX or datagrams: no TCP client to name
    else:
        raise ProxyProtocolError(f"PROXY v2 header with unknown family/protocol 0x{fam:02x}")
    if length < layout.size:
        raise ProxyProtocolError(f"PROXY v2 address block of {length} bytes, less than {layout.size}")
    source, _, source_port, _ = layout.unpack_from(body)
    _check_tlvs(body[layout.size:])
    return Header((socket.inet_ntop(af, source), source_port)), total


def _check_tlvs(tlvs: bytes) -> None:
    """TLVs are skipped, but they must add up to the block they sit in."""
    at = 0
    while at < len(tlvs):
        if len(tlvs) - at < 3:
            raise ProxyProtocolError("PROXY v2 TLV cut short")
        at += 3 + int.from_bytes(tlvs[at + 1:at + 3], "big")
        if at > len(tlvs):
            raise ProxyProtocolError("PROXY v2 TLV longer than its header")
