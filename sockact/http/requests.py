"""What both interfaces read from a request head the same way: the protocol's name, the path
percent-decoded (PEP 3333's PATH_INFO, ASGI's path), the request line as text, and the Host field split
into name and port."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sockact.http.events import Request

_SPLIT_MAX = 1024  # the cache stops growing here, so odd clients cannot inflate it
PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}

PERCENT = ord("%")  # a byte's value: ``in`` finds it faster than find() (see rules.py)


def decoded_path(path: bytes) -> bytes:
    """The path percent-decoded, as the app sees it; most paths have no % and come back as they are."""
    if PERCENT not in path:  # the byte's value: see rules.py
        return path
    # Here, not at the top: urllib.parse builds some ten named tuples at import, about 2% of what a
    # cold start imports before its first fork, and most workers never see a %.
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(path)


def path_info(path: bytes) -> str:
    """PEP 3333: PATH_INFO is the percent-decoded path, as bytes carried in a latin-1 str."""
    return decoded_path(path).decode("latin-1")


def line_text(request: Request) -> tuple[str, str, str, str, str]:
    """The request line as text, as received (latin-1): the method, the target, the path percent-decoded
    (PATH_INFO before a mount point is cut), the query and the protocol. The environ and the access log
    take it from one call: a new head's line is decoded once."""
    return (request.method.decode("latin-1"), request.target.decode("latin-1"), path_info(request.path),
            request.query.decode("latin-1"), PROTOCOLS[request.version])


# Host values already split, by scheme: clients send the same few. Bounded.
_SPLIT_HOSTS: dict[str, dict[str, tuple[str, str]]] = {"http": {}, "https": {}}


def split_host(host: str, scheme: str) -> tuple[str, str]:
    """A Host value as (name, port), the port the scheme's default when it names none."""
    known = _SPLIT_HOSTS.get(scheme)
    if known is None:
        return _split_host(host, scheme)
    split = known.get(host)
    if split is None:
        split = _split_host(host, scheme)
        if len(known) < _SPLIT_MAX:
            known[host] = split
    return split


def _split_host(host: str, scheme: str) -> tuple[str, str]:
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and not name.endswith(":"):  # "[::1]" has colons but no port
        return name, port
    return host, "443" if scheme == "https" else "80"
