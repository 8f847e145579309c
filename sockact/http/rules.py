"""sockact's own request rules, enforced on top of httptools.

httptools does the parsing. Its two supported generations differ: 0.1.1 (Debian 12,
http-parser) accepts bare LF, obs-fold, spaces in field names, non-ASCII targets and
any HTTP/x.y version, where the llhttp-based releases reject them. So every rule that
guards against request smuggling or that sockact documents (docs/http.md) is checked
here, the same way for both, and raises ProtocolError with its status.

Two kinds of check:
- ``check_head`` looks at the raw bytes of a complete head before httptools sees them
  (line endings, folding, NUL, sizes): the parsed fields no longer show these. ``check_line`` is the
  same for a head whose fields are a checked head's: its request line alone is new.
- ``FieldRules`` looks at the parsed fields (framing, duplicates, targets).

The raw checks use bytes.count/find/translate, which run in C, and no regex. They test for a
substring of several bytes with find(), not ``in``: for bytes, ``in`` first tries its operand as an
integer and builds the TypeError it then drops, which costs as much as the search. For one byte,
``in`` with the byte's value is the cheapest test of all (find() parses its arguments the slow way,
a fifth of a short head's checks).
"""

from __future__ import annotations

import string

from sockact.errors import ProtocolError
from sockact.http.limits import Limits

# RFC 9110 5.6.2: tchar. bytes.translate(None, _TCHAR) deletes them; anything left is not a token.
_TCHAR = (string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~").encode()
_HEXDIG = string.hexdigits.encode()
# Bytes never allowed in a request target: controls, space, DEL and non-ASCII
# (RFC 3986 has no raw non-ASCII; llhttp rejects it and 0.1.1 does not).
_TARGET_OK = bytes(range(0x21, 0x7F))
_CR = ord("\r")

VERSIONS = {"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0"}

# RFC 3986 3.2.2 and 3.2.3: the bytes of a reg-name (unreserved, pct-encoded, sub-delims), and of a Host
# value (uri-host [":" port]), which adds an IP literal's brackets and the port's colon.
_REG_NAME_BYTES = (string.ascii_letters + string.digits + "-._~%!$&'()*+,;=").encode()
_HOST_BYTES = _REG_NAME_BYTES + b":[]"

# Trailer fields that would change framing or routing if a later hop merged them
# into the head (RFC 9110 6.5.1).
FORBIDDEN_TRAILERS = frozenset({b"CONTENT-LENGTH", b"TRANSFER-ENCODING", b"HOST"})

# Upper-cased field names FieldRules looks at; all others pass untouched.
FRAMING = frozenset({b"CONTENT-LENGTH", b"TRANSFER-ENCODING", b"CONNECTION", b"EXPECT", b"HOST", b"CONTENT-TYPE"})


def is_token(name: bytes) -> bool:
    """True if ``name`` is a non-empty RFC 9110 token (a valid field name or method)."""
    return bool(name) and not name.translate(None, _TCHAR)


def is_hex(digits: bytes) -> bool:
    """True if ``digits`` is 1..n hex digits and nothing else."""
    return bool(digits) and not digits.translate(None, _HEXDIG)


def check_partial_head(buf: bytes, start: int, limits: Limits) -> None:
    """Checks on a head that has not ended yet, so a bad client is answered without waiting.

    ``start`` is where the bytes not yet checked begin (less one, so a CRLF split
    across reads is seen whole); a slow client then costs linear time, not quadratic.
    """
    if len(buf) > limits.head:
        raise ProtocolError(431, "request head too large")
    if len(buf) > limits.request_line + 1 and buf.find(b"\r\n", 0, limits.request_line + 2) < 0:
        raise ProtocolError(414, "request line too long")  # +1: its CR may be here already
    fresh = buf[start:]
    lfs = fresh.count(b"\n") - (fresh[:1] == b"\n")  # an LF at ``start`` was checked last time
    if lfs != fresh.count(b"\r\n"):
        raise ProtocolError(400, "bare LF in request head")
    if buf.find(b" ", 0, start) < 0 and buf[:1] != b"\r":
        # The method has not ended before what is new: what came of it must be a token, or no
        # request will come (a TLS ClientHello on an http port). A leading CR may be an empty line.
        space = buf.find(b" ")
        if buf[:space if space >= 0 else len(buf)].translate(None, _TCHAR):
            raise ProtocolError(400, "not an HTTP request: the method is not a token")


def check_head(head: bytes, limits: Limits) -> None:
    """Raw-byte rules for a complete head (request line through the empty line).

    Statuses: 414 request line too long; 431 too many fields, a field too long or the
    head too large; 400 for NUL, a bare CR or LF, an obs-fold or an empty line first.
    """
    line_end = head.find(b"\r\n")
    if line_end > limits.request_line:
        raise ProtocolError(414, "request line too long")
    if len(head) > limits.head:
        raise ProtocolError(431, "request head too large")
    if line_end == 0 or head[0] in b" \t":
        # One empty line before a request is skipped by the engine; a second is an error.
        raise ProtocolError(400, "request line missing")
    if 0 in head:  # NUL
        raise ProtocolError(400, "NUL in request head")
    crlf = head.count(b"\r\n")
    # Every CR and LF in pairs: translate() drops them all at once, cheaper than counting each.
    if len(head) - len(head.translate(None, b"\r\n")) != 2 * crlf:
        if head.count(b"\n") != crlf:
            raise ProtocolError(400, "bare LF in request head")
        raise ProtocolError(400, "bare CR in request head")
    text = head.decode("latin-1")  # ``in`` on str is a plain search; on bytes, see the module's docstring
    if "\r\n " in text or "\r\n\t" in text:
        raise ProtocolError(400, "obsolete line folding in request head")
    if crlf - 2 > limits.header_fields:
        raise ProtocolError(431, "too many header fields")
    # A field's size counts its CRLF, as gunicorn's does. Only fields longer in total
    # than the limit can hold one over it, so most heads skip the split.
    if len(head) - line_end - 4 > limits.header_field_size:
        longest = max(map(len, head[line_end + 2 : -4].split(b"\r\n")))
        if longest + 2 > limits.header_field_size:
            raise ProtocolError(431, "header field too large")


def check_line(line: bytes, limits: Limits) -> None:
    """check_head's rules for a head whose fields are those of a head checked before, for its request line
    alone (``line``, without its CRLF, and with no LF in it): what check_head would find in the line, this
    finds, with the same status and words."""
    if len(line) > limits.request_line:
        raise ProtocolError(414, "request line too long")
    if not line or line[0] in b" \t":
        raise ProtocolError(400, "request line missing")
    if 0 in line:  # NUL; the byte's value: see the module's docstring
        raise ProtocolError(400, "NUL in request head")
    if _CR in line:  # with no LF in the line, every CR is bare
        raise ProtocolError(400, "bare CR in request head")


def check_target(method: bytes, target: bytes) -> None:
    """RFC 9112 3.2: which request-target form each method may use, and its bytes."""
    if target.translate(None, _TARGET_OK):
        raise ProtocolError(400, "invalid character in request target")
    if target[:1] == b"/":
        if method == b"CONNECT":
            raise ProtocolError(400, "CONNECT needs an authority-form target")
        return
    if target == b"*":
        if method != b"OPTIONS":
            raise ProtocolError(400, "asterisk-form target is only for OPTIONS")
        return
    if method == b"CONNECT":
        if b"/" in target or b":" not in target:
            raise ProtocolError(400, "CONNECT needs an authority-form target")
        return
    scheme, sep, _ = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise ProtocolError(400, "request target is neither origin-form nor absolute-form")


def check_host(value: bytes) -> None:
    """RFC 9112 3.2: a Host field whose value is not uri-host [":" port] gets 400, as nginx answers it.
    http-parser (httptools 0.1.1) keeps a value's trailing blanks, which llhttp drops: they are allowed."""
    value = value.rstrip(b" \t")
    if value.translate(None, _HOST_BYTES) or not _authority(value):
        raise ProtocolError(400, "the Host field is not a host or host:port")


def _authority(value: bytes) -> bool:
    """Whether ``value``, made of _HOST_BYTES, is host [":" port]: brackets only around an IP literal,
    and a colon only before the port's digits."""
    if value[:1] == b"[":
        end = value.find(b"]")
        if end < 2 or b"[" in value[1:end]:
            return False
        rest = value[end + 1:]
    else:
        if b"[" in value or b"]" in value:
            return False
        colon = value.find(b":")
        rest = value[colon:] if colon >= 0 else b""
    return not rest or (rest[:1] == b":" and (len(rest) == 1 or rest[1:].isdigit()))


class FieldRules:
    """Collects what the framing rules need from the fields, one field at a time."""

    __slots__ = ("connection", "content_length", "expect", "hosts", "plain", "transfer_encoding", "types")

    def __init__(self) -> None:
        self.content_length: list[bytes] = []
        self.transfer_encoding: list[bytes] = []
        self.connection: list[bytes] = []
        self.expect: list[bytes] = []
        self.hosts = 0
        self.types = 0
        # No field but one Host has mattered so far: no body, persistence by version alone, nothing
        # to check (most requests; the engine then skips framing(), keep_alive() and expects_continue()).
        self.plain = True

    def field(self, name: bytes, value: bytes) -> None:
        """Record one field; ``name`` is upper-cased. Cheap for fields that do not matter."""
        if name not in FRAMING:
            return
        if name == b"HOST" and not self.hosts:
            self.hosts = 1
            if value.translate(None, _REG_NAME_BYTES):  # more than a name: a port, an IP literal, or no host
                check_host(value)
            return
        self.plain = False
        if name == b"CONTENT-LENGTH":
            self.content_length.append(value)
        elif name == b"TRANSFER-ENCODING":
            self.transfer_encoding.append(value)
        elif name == b"CONNECTION":
            self.connection.append(value)
        elif name == b"EXPECT":
            self.expect.append(value)
        elif name == b"HOST":
            self.hosts += 1
        else:
            self.types += 1

    def framing(self, version: str, limits: Limits) -> tuple[int | None, bool]:
        """(content length or None, chunked) of the request body; raises ProtocolError."""
        if self.hosts > 1:
            raise ProtocolError(400, "more than one Host field")
        if self.types > 1:
            raise ProtocolError(400, "more than one Content-Type field")
        if self.transfer_encoding:
            if self.content_length:
                raise ProtocolError(400, "both Content-Length and Transfer-Encoding")
            if version != "1.1":
                raise ProtocolError(400, "Transfer-Encoding in an HTTP/1.0 request")
            _check_codings(self.transfer_encoding)
            return None, True
        if not self.content_length:
            return None, False
        if len(self.content_length) > 1:
            # Even identical copies: llhttp rejects them, and one answer for both parsers is simpler.
            raise ProtocolError(400, "more than one Content-Length field")
        value = self.content_length[0]
        if not value.isdigit():
            raise ProtocolError(400, "Content-Length is not a number")
        length = int(value)
        if limits.body and length > limits.body:
            raise ProtocolError(413, "request body too large")
        return length, False

    def keep_alive(self, version: str) -> bool:
        """RFC 9112 9.3: 1.1 persists unless 'close'; 1.0 only with 'keep-alive'."""
        if not self.connection:
            return version == "1.1"
        tokens = _tokens(self.connection)
        if b"close" in tokens:
            return False
        return version == "1.1" or b"keep-alive" in tokens

    def expects_continue(self, version: str) -> bool:
        """RFC 9110 10.1.1: only an HTTP/1.1 client waits for 100 Continue."""
        return bool(self.expect) and version == "1.1" and b"100-continue" in _tokens(self.expect)


def _tokens(values: list[bytes]) -> set[bytes]:
    return {t.strip(b" \t").lower() for v in values for t in v.split(b",")}


def _check_codings(values: list[bytes]) -> None:
    codings = [c for c in (t.strip(b" \t").lower() for v in values for t in v.split(b",")) if c]
    if not codings or codings[-1] != b"chunked":
        raise ProtocolError(400, "Transfer-Encoding does not end with chunked")
    if codings.count(b"chunked") > 1:
        raise ProtocolError(400, "chunked applied more than once")
    # 'identity' is a no-op some clients still send; any other coding sockact cannot undo.
    if any(c != b"identity" for c in codings[:-1]):
        raise ProtocolError(501, "unsupported transfer coding")
