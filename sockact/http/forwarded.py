"""Who the client is behind trusted proxies: X-Forwarded-* and RFC 7239 Forwarded, sans I/O.

A proxy in ``forwarded_allow_ips`` may tell the client's address, the scheme, the host
and the port it was reached on. ``resolve(peer, fields, trust)`` is the whole contract,
shared by the WSGI environ and any other request builder:

- an untrusted peer's fields are never acted on (the caller passes them to the app as
  they are);
- a ``Forwarded`` field, when present, is used alone; otherwise ``X-Forwarded-For``,
  ``-Proto``, ``-Host`` and ``-Port``;
- the list of addresses is walked from the right, skipping trusted proxies: the
  right-most untrusted address is the client, since every address to its left was
  written by someone we cannot vouch for;
- anything malformed is ignored rather than half-used: a bad ``Forwarded`` field
  leaves everything as the socket says.

Unix-socket peers are trusted when the list holds ``unix`` (the default), as with
gunicorn: only processes the socket's file mode admits can connect, which is the proxy.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The lower-case field names this module reads; callers collect just these.
FIELDS = ("forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port")
SCHEMES = frozenset({"http", "https"})
UNIX = "unix"  # the forwarded_allow_ips item that trusts Unix-socket peers

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
# One forwarded-pair (RFC 7239 4): token "=" ( token / quoted-string ), with optional spaces around ";".
_PAIR = re.compile(rf"\s*({_TOKEN})=({_TOKEN}|{_QUOTED})\s*")
# A host as RFC 9110 allows it in Host (reg-name, IPv4 or [IPv6], optional port), nothing else.
_KNOWN_MAX = 4096  # addresses whose trust a Trust remembers: odd clients cannot grow it further
_HOST = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=%-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


@dataclass(frozen=True)
class Trust:
    """The parsed ``forwarded_allow_ips``: which peers may speak for the client."""

    networks: tuple[IPNetwork, ...] = ()
    everyone: bool = False
    unix: bool = False
    # Each address's answer, once known: a worker asks for every connection's peer, mostly the same few.
    _known: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, spec: str) -> Trust:
        """From the setting's text: comma-separated addresses, networks, '*' and 'unix'."""
        items = [item for item in re.split(r"[,\s]+", spec) if item]
        networks = tuple(ipaddress.ip_network(item, strict=False) for item in items if item not in ("*", UNIX))
        return cls(networks, "*" in items, "*" in items or UNIX in items)

    @staticmethod
    @lru_cache(maxsize=16)
    def kept(spec: str) -> Trust:
        """parse(), once a process for each setting: the supervisor parses before it forks a worker
        (worker.shell.prepare), and the worker takes that Trust, its own copy after the fork (its memo of
        answers included). Parsed in the worker instead, re's compiler and ipaddress run there first,
        and what they make and touch takes some 400 KiB of the pages it shares with the supervisor."""
        return Trust.parse(spec)

    def trusts(self, address: str) -> bool:
        """Whether an IP address given as text is a trusted proxy; False for anything else."""
        known = self._known.get(address)
        if known is None:
            ip = None if self.everyone else _ip(address)
            known = self.everyone or (ip is not None and any(ip in net for net in self.networks))
            if len(self._known) < _KNOWN_MAX:
                self._known[address] = known
        return known

    def trusts_peer(self, peer: tuple[Any, ...] | str | None) -> bool:
        """Whether the socket's peer may set the forwarded fields: (host, port) for TCP, else Unix."""
        if isinstance(peer, tuple):
            return self.trusts(str(peer[0]))
        return self.unix


NOBODY = Trust()


@dataclass(frozen=True)
class Origin:
    """What trusted proxies said; None where they said nothing usable."""

    client: str | None = None  # the client's address
    client_port: str | None = None  # only RFC 7239 can carry it
    scheme: str | None = None  # "http" or "https"
    host: str | None = None  # for HTTP_HOST / Host
    port: str | None = None  # the port the client reached, for SERVER_PORT


def resolve(peer: tuple[Any, ...] | str | None, fields: Mapping[str, str], trust: Trust) -> Origin | None:
    """The client's origin as the trusted proxies tell it, or None when nothing applies.

    ``peer`` is the socket's peer; ``fields`` maps the lower-case names in FIELDS to their
    values, repeated fields joined with ", " (see ``collect``).
    """
    if not trust.trusts_peer(peer):
        return None
    return from_fields(fields, trust)


def from_fields(fields: Mapping[str, str], trust: Trust) -> Origin | None:
    """The origin told by ``fields``, the peer already known to be trusted."""
    forwarded = fields.get("forwarded")
    if forwarded is not None:
        return _from_forwarded(forwarded, trust)
    chain = fields.get("x-forwarded-for")
    proto, host, port = (fields.get(name) for name in FIELDS[2:])
    if chain is None and proto is None and host is None and port is None:
        return None
    hops = 0
    client = None
    if chain is not None:
        client, hops = _walk([item.strip() for item in chain.split(",")], trust)
    scheme = _pick(proto, hops)
    scheme = scheme.lower() if scheme is not None and scheme.lower() in SCHEMES else None
    host = _pick(host, hops)
    port = _pick(port, hops)
    return Origin(client, None, scheme, host if host is not None and _HOST.fullmatch(host) else None,
                  port if port is not None and _is_port(port) else None)


def collect(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """FIELDS from raw (name, value) pairs of any case, repeated ones joined with ", "."""
    out: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        if name in FIELDS:
            value = raw_value.decode("latin-1")
            out[name] = out[name] + ", " + value if name in out else value
    return out


def _walk(addresses: list[str], trust: Trust) -> tuple[str | None, int]:
    """(the right-most untrusted address, how many trusted hops stand right of it).

    An item that is not an address ends the walk: nothing to its left can be vouched for,
    so the last trusted proxy seen is the best answer.
    """
    last = None
    for hops, item in enumerate(reversed(addresses)):
        # Some proxies add the port: "192.0.2.1:4711", "[2001:db8::1]:4711".
        address = item if _told_ip(item) is not None else _node(item)[0]
        if address is None:
            return last, max(0, hops - 1)
        if not trust.trusts(address):
            return address, hops
        last = address
    return last, max(0, len(addresses) - 1)


def _pick(value: str | None, hops: int) -> str | None:
    """The item of a list field written by the same proxy as the client's address."""
    if value is None:
        return None
    items = [item.strip() for item in value.split(",")]
    item = items[len(items) - 1 - min(hops, len(items) - 1)]
    return item or None


def _from_forwarded(value: str, trust: Trust) -> Origin | None:
    elements = _parse_forwarded(value)
    if not elements:
        return None  # malformed: act on none of it
    chosen = elements[0]
    client = client_port = None
    for element in reversed(elements):
        chosen = element
        node = element.get("for")
        address, port = _node(node) if node is not None else (None, None)
        if address is None:
            break  # unknown, obfuscated or absent: nothing left of here can be vouched for
        client, client_port = address, port
        if not trust.trusts(address):
            break
    scheme = chosen.get("proto", "").lower()
    host = chosen.get("host")
    return Origin(client, client_port, scheme if scheme in SCHEMES else None,
                  host if host is not None and _HOST.fullmatch(host) else None)


def _parse_forwarded(value: str) -> list[dict[str, str]]:
    """RFC 7239 4: elements separated by ",", pairs by ";". [] if any part is malformed."""
    elements = []
    for text in _split_outside_quotes(value, ","):
        element: dict[str, str] = {}
        for pair in _split_outside_quotes(text, ";"):
            match = _PAIR.fullmatch(pair)
            if match is None:
                return []
            key, raw = match.group(1).lower(), match.group(2)
            if key in element:
                return []  # RFC 7239 4: a parameter may appear once per element
            element[key] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        elements.append(element)
    return elements


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts, start, quoted, escaped = [], 0, False, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _node(node: str) -> tuple[str | None, str | None]:
    """RFC 7239 6: "192.0.2.1", "192.0.2.1:80", "[2001:db8::1]:80"; (None, None) for unknown or _obf."""
    if node.startswith("["):
        address, _, rest = node[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            return None, None
    else:
        address, _, port_text = node.partition(":")
        port = port_text or None
    if _told_ip(address) is None or (port is not None and not _is_port(port)):
        return None, None
    return address, port


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 0 < int(text) < 65536


def _told_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as a proxy tells it. A zone ("fe80::1%eth0") means nothing past that proxy, and
    ipaddress takes any text after the "%": it would reach REMOTE_ADDR and the access log."""
    return None if "%" in text else _ip(text)


@lru_cache(maxsize=256)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
