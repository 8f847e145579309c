"""Where a chunked request body ends, and whether its framing is strict.

httptools decodes chunked bodies but reports no byte offsets, so on its own it cannot
say where a body ends and the next pipelined request begins; and 0.1.1 accepts
framing that llhttp rejects (bare LF, a space after the size). ``ChunkedFraming``
walks the same bytes first: it checks each chunk-size line and trailer line
(RFC 9112 7.1) and says how many bytes belong to the body, so the engine hands
httptools exactly those. It skips chunk data by counting, without looking at it.
"""

from __future__ import annotations

import re

from sockact.errors import ProtocolError
from sockact.http.limits import CHUNK_LINE_MAX, CHUNK_SIZE_DIGITS, Limits
from sockact.http.rules import FORBIDDEN_TRAILERS, is_hex, is_token

_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
# RFC 9112 7.1.1 chunk-ext without BWS, which llhttp refuses and 0.1.1 accepts.
_EXTENSIONS = re.compile(rb"(?:;" + _TOKEN + rb"(?:=(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*")
# Bytes not allowed in a chunk extension or trailer value: controls except HTAB, and DEL.
_CTL = bytes(range(0x00, 0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f"
_NOT_CTL = bytes(b for b in range(256) if b not in _CTL)


class ChunkedFraming:
    """Tracks one chunked body. Feed it the bytes after the head with ``scan``."""

    __slots__ = ("_field_bytes", "_fields", "_limits", "_remaining", "_state", "body_size")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._state = _SIZE
        self._remaining = 0  # chunk data still to come, or CRLF bytes after it
        self._fields = 0
        self._field_bytes = 0
        self.body_size = 0

    @property
    def done(self) -> bool:
        """True once the last chunk and the trailer section have ended."""
        return self._state == _DONE

    def scan(self, data: bytes) -> int:
        """How many leading bytes of ``data`` belong to the body and are checked.

        All of them, unless the body ends inside ``data`` or it ends in an unfinished
        framing line, which stays unconsumed until the rest of it arrives.

        Raises ProtocolError on bad framing (400), a body over the limit (413) or a
        trailer section over the head limits (431).
        """
        pos, end = 0, len(data)
        while pos < end and self._state != _DONE:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state, self._remaining = _DATA_END, 2
            elif state == _DATA_END:
                # The CRLF after chunk data may arrive split across reads.
                if data[pos] != b"\r\n"[2 - self._remaining]:
                    raise ProtocolError(400, "chunk data not followed by CRLF")
                pos += 1
                self._remaining -= 1
                if not self._remaining:
                    self._state = _SIZE
            else:
                nxt = self._read_line(data, pos)
                if nxt < 0:
                    break
                pos = nxt
        return pos

    def _read_line(self, data: bytes, pos: int) -> int:
        """Check the line starting at ``pos``; where the next begins, or -1 if it has not ended.

        An unfinished line is left in the engine's buffer and read again whole later,
        so httptools never sees a framing line this class has not checked.
        """
        nl = data.find(b"\n", pos)
        limit = CHUNK_LINE_MAX if self._state == _SIZE else self._limits.header_field_size
        if (nl + 1 if nl >= 0 else len(data)) - pos > limit:  # the line with its CRLF, as for head fields
            raise ProtocolError(400 if self._state == _SIZE else 431, "chunk framing line too long")
        if nl < 0:
            return -1
        line = data[pos : nl + 1]
        if line[-2:] != b"\r\n" or b"\r" in line[:-2]:
            raise ProtocolError(400, "chunk framing line not ended by CRLF")
        if self._state == _SIZE:
            self._size_line(line[:-2])
        else:
            self._trailer_line(line[:-2])
        return nl + 1

    def _size_line(self, line: bytes) -> None:
        size, semicolon, _ = line.partition(b";")
        # No whitespace around the size or in extensions: RFC 9112 allows BWS there, llhttp does not.
        if not is_hex(size) or len(size) > CHUNK_SIZE_DIGITS:
            raise ProtocolError(400, "invalid chunk size")
        if semicolon and not _EXTENSIONS.fullmatch(line, len(size)):
            raise ProtocolError(400, "invalid chunk extension")
        n = int(size, 16)
        self.body_size += n
        if self._limits.body and self.body_size > self._limits.body:
            raise ProtocolError(413, "request body too large")
        if n:
            self._state, self._remaining = _DATA, n
        else:
            self._state = _TRAILER

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            self._state = _DONE
            return
        self._fields += 1
        self._field_bytes += len(line) + 2
        if self._fields > self._limits.header_fields or self._field_bytes > self._limits.head:
            raise ProtocolError(431, "trailer section too large")
        name, colon, value = line.partition(b":")
        if not colon or not is_token(name):
            raise ProtocolError(400, "invalid trailer field")
        if value.translate(None, _NOT_CTL):
            raise ProtocolError(400, "invalid trailer field value")
        if name.upper() in FORBIDDEN_TRAILERS:
            raise ProtocolError(400, "trailer field not allowed: " + name.decode("ascii"))
