"""The events of the HTTP engine (sockact.http.engine): what ``next_event`` returns.

A ``Request`` head, ``Data`` of its body, and the sentinels NEED_DATA, PAUSED, END_OF_MESSAGE
and CONNECTION_CLOSED; plus ``has_body``, the rule of which responses carry a body. Plain
objects: no parsing and no I/O here.
"""

from __future__ import annotations

import httptools

from sockact.errors import ProtocolError

_QUERY, _FRAGMENT = ord("?"), ord("#")


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")  # feed more bytes (or b"" at EOF)
PAUSED = _Sentinel("PAUSED")  # the request ended; finish the response, then start_next_cycle()
END_OF_MESSAGE = _Sentinel("END_OF_MESSAGE")  # the request body is complete
CONNECTION_CLOSED = _Sentinel("CONNECTION_CLOSED")  # the client closed between requests


class Request:
    """A request head. Field names are upper-cased (as CGI/WSGI use them), values stripped."""

    __slots__ = ("chunked", "content_length", "expect_continue", "headers", "keep_alive", "method",
                 "path", "query", "target", "upgrade", "version")

    def __init__(self, method: bytes, target: bytes, version: str, headers: list[tuple[bytes, bytes]],
                 content_length: int | None, chunked: bool, keep_alive: bool, expect_continue: bool,
                 upgrade: bool) -> None:
        self.method = method
        self.target = target
        self.version = version  # "1.0" or "1.1"
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.upgrade = upgrade  # Upgrade or CONNECT: answered, then the connection closes
        if target[:1] == b"/" and _QUERY not in target and _FRAGMENT not in target:  # one byte: see rules.py
            self.path, self.query = target, b""  # the usual target: nothing to split
        else:
            self.path, self.query = _split_target(target)
            if self.path and target[:1] != b"/":
                # RFC 9112 3.2.2: an absolute-form target's authority replaces the Host field, in its place. A
                # new list: the engine may hand the same fields to a later origin-form request.
                host = _authority(target)
                self.headers = [(name, host if name == b"HOST" else value) for name, value in headers]
                if (b"HOST", host) not in self.headers:
                    self.headers.append((b"HOST", host))

    def __repr__(self) -> str:
        return f"<Request {self.method.decode()} {self.target!r} HTTP/{self.version}>"


class Data:
    """A piece of the request body."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<Data {len(self.data)}B>"


def has_body(method: bytes, code: int) -> bool:
    """Whether a response to ``method`` with status ``code`` carries a body (RFC 9110 6.4.1)."""
    return method != b"HEAD" and code >= 200 and code != 204 and code != 304


def _split_target(target: bytes) -> tuple[bytes, bytes]:
    if target[:1] == b"/":
        path, _, query = target.partition(b"?")
        return path, query.partition(b"#")[0]
    if b"://" in target:
        try:
            url = httptools.parse_url(target)
        except httptools.HttpParserError:
            # The request parser checks targets less strictly than parse_url ("http://a:b/").
            raise ProtocolError(400, "invalid absolute-form target") from None
        return url.path or b"/", url.query or b""
    return b"", b""  # '*' or an authority: no path


def _authority(target: bytes) -> bytes:
    """The host[:port] of an absolute-form target, without its userinfo (RFC 9110 4.2.4)."""
    rest = target.partition(b"://")[2]
    end = min((i for i in map(rest.find, (b"/", b"?", b"#")) if i >= 0), default=len(rest))
    authority = rest[:end].rpartition(b"@")[2]
    if not authority:
        raise ProtocolError(400, "absolute-form target without a host")  # RFC 9110 4.2.1
    return authority
