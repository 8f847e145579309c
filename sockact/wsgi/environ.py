"""The PEP 3333 side: environ, start_response, wsgi.input and wsgi.file_wrapper.

Nothing here touches a socket. The server gives ``InputStream`` a function that
returns the next piece of body (b"" at its end) and gives ``StartResponse`` the
``write`` callable; this module only builds and checks what PEP 3333 specifies.

Environ is built in layers, so a request copies a dict made for what it shares with
others and adds only what varies: ``site_environ`` (constant per listener), ``connection_environ``
(peer address, caller's extras), ``fields_environ`` (a request's fields, shared by the
connection's requests with the same fields) and ``line_environ`` (its request line). What a request's
fields and line give, when it depends on nothing of its connection's (``request_part``), can also be
made once for the same request on many connections.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from sockact.errors import InvalidResponse
from sockact.http.events import Request
from sockact.http.forwarded import FIELDS, Trust, from_fields
from sockact.http.requests import line_text, split_host
from sockact.http.responses import check_response

# Upper-cased field name -> environ key; None for names with "_", which are dropped:
# "Content_Length" would otherwise land on the same key as "Content-Length" (RFC 9110 17.10).
_ENV_KEYS: dict[bytes, str | None] = {b"CONTENT-TYPE": "CONTENT_TYPE", b"CONTENT-LENGTH": "CONTENT_LENGTH"}
_ENV_KEYS_MAX = 1024  # the cache stops growing here, so odd clients cannot inflate it




# The environ keys of forwarded.FIELDS, in the same order.
_FORWARDED_KEYS = tuple("HTTP_" + name.upper().replace("-", "_") for name in FIELDS)


def _env_key(name: bytes) -> str | None:
    key = _ENV_KEYS.get(name, "")
    if key == "":
        key = None if b"_" in name else "HTTP_" + name.decode("latin-1").replace("-", "_")
        if len(_ENV_KEYS) < _ENV_KEYS_MAX:
            _ENV_KEYS[name] = key
    return key


class FileWrapper:
    """``wsgi.file_wrapper``: iterates a file in blocks; the server may sendfile() it instead."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while True:
            data = read(self.blksize)
            if not data:
                return
            yield data

    def close(self) -> None:
        """Close the file, as PEP 3333 asks of the wrapper's close()."""
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


@functools.cache
def site_environ(url_scheme: str, root_path: str = "", threaded: bool = False) -> Mapping[str, Any]:
    """The environ keys that are the same for every request on a listener, made once (read-only: each
    connection copies them).

    ``root_path`` is the prefix the app is mounted under; it is SCRIPT_NAME, and
    ``request_environ`` cuts it from the front of PATH_INFO. ``threaded``: wsgi.multithread.
    """
    return MappingProxyType({
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url_scheme,
        "wsgi.multithread": threaded,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,  # the stream ends at the body's end, chunked or not
        "wsgi.file_wrapper": FileWrapper,
        "wsgi.errors": sys.stderr,  # the server gives each connection a stream that logs whole records
        "SCRIPT_NAME": root_path,
        "SERVER_SOFTWARE": "sockact",
    })


def connection_environ(site_env: Mapping[str, Any], peer: tuple[Any, ...] | str | None,
                       extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """Site keys plus the peer's address and the caller's extras.

    A TCP peer gives REMOTE_ADDR and REMOTE_PORT. A Unix-socket peer gives REMOTE_ADDR as
    its address string (the server passes "unix:pid=N,uid=N" for an unnamed one) and no REMOTE_PORT.
    """
    env = dict(site_env)
    if isinstance(peer, tuple):
        env["REMOTE_ADDR"] = str(peer[0])
        env["REMOTE_PORT"] = str(peer[1])
    else:
        env["REMOTE_ADDR"] = peer or ""
    if extra:
        env.update(extra)
    return env


def request_environ(conn_env: Mapping[str, Any], request: Request, body: Any,
                    local_address: Callable[[], tuple[str, str]], trust: Trust | None = None) -> dict[str, Any]:
    """The environ of one request: ``line_environ`` over ``fields_environ``."""
    env = put_line(fields_environ(conn_env, request.headers, local_address, trust), line_text(request))
    env["wsgi.input"] = body
    return env


def fields_environ(conn_env: Mapping[str, Any], headers: Sequence[tuple[bytes, bytes]],
                   local_address: Callable[[], tuple[str, str]], trust: Trust | None = None) -> dict[str, Any]:
    """The connection's environ with what a request's fields give: HTTP_*, CONTENT_*, SERVER_NAME and
    SERVER_PORT. A connection's requests mostly share their fields, so the server makes it once for them.
    ``local_address()`` is asked only when there is no Host.

    ``trust`` is given when the connection's peer is a trusted proxy: its X-Forwarded-* or
    Forwarded fields then set REMOTE_ADDR, the scheme, HTTP_HOST and SERVER_PORT. The fields
    themselves stay in the environ either way.
    """
    env = _put_fields(dict(conn_env), headers)
    port = None
    if trust is not None and not env.keys().isdisjoint(_FORWARDED_KEYS):
        port = _apply_forwarded(env, trust)
    host = env.get("HTTP_HOST")
    if host:
        env["SERVER_NAME"], env["SERVER_PORT"] = split_host(host, env["wsgi.url_scheme"])
    else:
        env["SERVER_NAME"], env["SERVER_PORT"] = local_address()
    if port is not None:
        env["SERVER_PORT"] = port
    return env


def _put_fields(env: dict[str, Any], headers: Sequence[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The fields' HTTP_* and CONTENT_* keys, into ``env``; returns it."""
    for name, value in headers:
        key = _ENV_KEYS.get(name) or _env_key(name)  # the cache first, without a call
        if key is None:
            continue
        text = value.decode("latin-1")
        if key in env:
            # RFC 9110 5.3 joins repeated fields with a comma; cookies join with ';' (RFC 6265 5.4).
            env[key] += ("; " if key == "HTTP_COOKIE" else ", ") + text
        else:
            env[key] = text
    return env


def request_part(headers: Sequence[tuple[bytes, bytes]], text: tuple[str, str, str, str, str], url_scheme: str,
                 root_path: str) -> dict[str, Any] | None:
    """What a request's fields and line (``text``) put in its environ on a listener of ``url_scheme`` and
    ``root_path`` (SCRIPT_NAME, which the line may empty, is among them), when that is the same on every
    connection: a connection's environ updated with it is ``line_environ(fields_environ(...))``'s. None when
    it is not: without Host, SERVER_NAME is the socket's; with forwarded fields, a trusted peer's change
    REMOTE_ADDR and the scheme."""
    env = _put_fields({"wsgi.url_scheme": url_scheme, "SCRIPT_NAME": root_path}, headers)
    host = env.get("HTTP_HOST")
    if not host or not env.keys().isdisjoint(_FORWARDED_KEYS):
        return None
    env["SERVER_NAME"], env["SERVER_PORT"] = split_host(host, url_scheme)
    return put_line(env, text)


def line_environ(fields_env: Mapping[str, Any], text: tuple[str, str, str, str, str]) -> dict[str, Any]:
    """A copy of ``fields_environ``'s with what the request line gives (``text``: requests.line_text); the
    server adds wsgi.input."""
    return put_line(dict(fields_env), text)


def put_line(env: dict[str, Any], text: tuple[str, str, str, str, str]) -> dict[str, Any]:
    """line_environ() into ``env`` itself, for a ``fields_environ`` nothing else will start from (a
    connection's last request); returns it."""
    method, target, path, query, protocol = text
    env["REQUEST_METHOD"] = method
    env["PATH_INFO"] = path
    root = env["SCRIPT_NAME"]
    if root:
        # /app/env under root /app: SCRIPT_NAME "/app", PATH_INFO "/env". A path outside the mount
        # (/other, or /application) reaches the app whole, with an empty SCRIPT_NAME.
        if path.startswith(root) and path[len(root):len(root) + 1] in ("", "/"):
            env["PATH_INFO"] = path[len(root):]
        else:
            env["SCRIPT_NAME"] = ""
    env["QUERY_STRING"] = query
    env["RAW_URI"] = target
    env["SERVER_PROTOCOL"] = protocol
    return env


def _apply_forwarded(env: dict[str, Any], trust: Trust) -> str | None:
    """Put what trusted proxies told into ``env``; returns the forwarded port, if any."""
    origin = from_fields({name: env[key] for name, key in zip(FIELDS, _FORWARDED_KEYS, strict=True)
                           if key in env}, trust)
    if origin is None:
        return None
    if origin.client is not None:
        env["REMOTE_ADDR"] = origin.client
        if origin.client_port is not None:
            env["REMOTE_PORT"] = origin.client_port
        else:
            env.pop("REMOTE_PORT", None)  # the proxy's own port would mislead
    if origin.scheme is not None:
        env["wsgi.url_scheme"] = origin.scheme
    if origin.host is not None:
        env["HTTP_HOST"] = origin.host
    return origin.port


class InputStream:
    """``wsgi.input``: the request body, read from the connection only as the app asks.

    ``pull()`` returns the next piece of the body, or b"" at its end; it raises what
    the connection raises (a ProtocolError for a bad body, OSError for a lost client).
    """

    def __init__(self, pull: Callable[[], bytes]) -> None:
        self._pull = pull
        self._buf = bytearray()
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        data = self._pull()
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that is left if negative or None); b"" at the end."""
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buf))
        while len(self._buf) < size and self._fill():
            pass
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        """One line including its b"\\n", at most ``size`` bytes if that is not negative."""
        limit = -1 if size is None else size
        scanned = 0
        while True:
            nl = self._buf.find(b"\n", scanned)
            if nl >= 0:
                end = nl + 1
                break
            scanned = len(self._buf)
            if 0 <= limit <= scanned or not self._fill():
                end = scanned
                break
        return self._take(end if limit < 0 else min(end, limit))

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """Lines until the end, or until their total length reaches ``hint`` if positive."""
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


# ``wsgi.input`` of a request without a body (no Content-Length, not chunked): it reads b"" at once, and
# holds nothing of any request's, so one serves them all.
NO_BODY = InputStream(lambda: b"")
NO_BODY._eof = True


class StartResponse:
    """The ``start_response`` callable of one request, and what it recorded.

    ``headers_sent`` is set by the server once the head is on the wire; from then on
    exc_info re-raises (PEP 3333). Bad arguments raise InvalidResponse at once, so the
    application's traceback shows where; the server answers 500 if the app goes on.
    """

    __slots__ = ("headers", "headers_sent", "status", "write")

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.headers_sent = False

    def __call__(self, status: str, headers: list[tuple[str, str]],
                 exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # PEP 3333: avoid a reference cycle through the traceback
        elif self.status is not None:
            raise InvalidResponse("start_response() called a second time without exc_info")
        self.status = None  # invalid until checked
        self.status, self.headers = check_response(status, headers)
        return self.app_write

    def app_write(self, data: bytes) -> None:
        """The ``write()`` start_response returns: the connection's, while this response is the one in hand
        (the server then sets ``write`` to ``ended``). One an app keeps (a thread of its own) would else write
        into the connection's next response."""
        self.write(data)


def ended(data: bytes) -> None:
    """A response's ``write`` once it is over."""
    raise InvalidResponse("write() called after its response ended (the application had returned)")


def close_iterable(result: Iterable[bytes]) -> None:
    """Call the result's close() if it has one (PEP 3333, even after an error)."""
    close = getattr(result, "close", None)
    if close is not None:
        close()
