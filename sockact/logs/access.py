"""The access log: one line per request, built without ``logging`` and written in batches.

Contract:
- ``compile_format(spec)`` turns an ``access_logformat`` into a function of one ``Entry``, once.
  The spec uses gunicorn's atoms (``%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"``
  is its default, and ours for files), or is ``"json"`` for one JSON object per line.
- ``AccessLog.log(entry)`` formats the line and buffers it, keeping nothing of ``entry`` (a connection
  fills one entry for all its requests: http/logline.fill_entry); ``log_response(entry, ...)`` fills the
  response's part of a connection's entry and logs it, or gives the connection's last line again while
  nothing in it changed (the runners' call at a request's end); ``log_websocket`` writes the one line
  of a WebSocket session when it ends (its close code, message bytes in and out, duration).
  ``flush()`` writes the buffer: one ``write()`` of whole lines to the file or stderr (an
  ``O_APPEND`` file keeps each batch together, whichever worker writes), or one journal record per
  line. The worker calls ``flush()`` when its loop goes idle and ``flush_if_due(now)`` at least
  every FLUSH_INTERVAL; ``log()`` also flushes a buffer that is due or full.
- What a crash can lose: only lines still in a worker's buffer. Every line is written before the
  worker blocks for more work, so a worker that exits, recycles or is stopped loses nothing (a quick
  stop's exit, at Ctrl-C, writes them first). A worker killed outright (SIGKILL after ``timeout``, the
  OOM killer, a crash in C) loses the lines of requests it finished in the last FLUSH_INTERVAL, at most
  MAX_BUFFERED of them.
- A file target is reopened when its path no longer names the open file (checked at most once a
  REOPEN_CHECK), so logrotate may simply move it away; after ``reopen()`` (SIGUSR1) it is checked
  before the next line. A path that cannot be opened again (its directory gone or read-only) leaves
  the lines going to the file already open.
- A target that cannot be written (a full disk, a gone journal) loses lines and fails no request:
  the worker's error log says so once, with the reason, and once more when lines are written again,
  with how many were lost (at most one such pair a REPORT_INTERVAL, however the failures flap: logfile.py).
- ``escape(text)`` is the one escape for client-controlled text in any log line: control bytes,
  DEL, bytes above 0x7f, ``"`` and ``\\`` become ``\\xHH``, so a request cannot forge a line.
"""

from __future__ import annotations

import binascii
import functools
import json
import logging
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sockact.errors import ConfigError
from sockact.logs.logfile import Lines, Outage, lines_lost

T = TypeVar("T")

GUNICORN_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
JSON_FORMAT = "json"
# Without a file, lines go where the other logs go (journal or stderr). The journal stamps the
# time itself; stderr lines get one from the format.
JOURNAL_FORMAT = '%(h)s "%(r)s" %(s)s %(B)sB %(D)sus pid=%(p)s'
STDERR = "-"

FLUSH_INTERVAL = 0.1  # seconds a line may wait in the buffer while the worker is busy
MAX_BUFFERED = 256  # lines; a full buffer is written at once, so a burst costs bounded memory
REOPEN_CHECK = 1.0  # seconds between checks that the file was not rotated away

log = logging.getLogger("sockact.worker")

# Printable ASCII except '"' and '\': the bytes that pass into a log line unchanged.
_UNSAFE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')


def _hex(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every byte that could break or forge a log line written as ``\\xHH``."""
    # The usual text passes whole: four checks in C cost less than one regex search.
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return _UNSAFE.sub(_hex, text)


class Memo:
    """What one connection's access lines reuse while its request repeats (the engine gives the same
    Request again for a repeated head): the request (``key``), its text for the entry, and what the
    worker's format made of the request line's atoms; and while its fields repeat, what it made of
    theirs and the client's; and with a format whose response atoms are the time, the status and the
    size alone, its last line, which serves again while the request, its second, status and size repeat.
    A connection logs one request at a time
    and a worker has one format, so it needs no lock and holds one line's atoms."""

    __slots__ = ("atoms", "fields", "fields_atoms", "key", "line", "line_second", "line_sent", "line_status",
                 "line_until", "remote", "text")

    def __init__(self) -> None:
        self.key: object = None
        self.text: tuple[str, str, str, str, str] = ("", "", "", "", "")  # method, target, path, query, protocol
        self.atoms: tuple[str, ...] | None = None  # of the request line
        # The atoms of the request's fields and its client, and the fields they were made of: the engine
        # gives the same list to the heads that differ from the last by their request line alone.
        self.fields: object = None
        self.remote = ""  # the client they were made for (a trusted proxy's fields name it)
        self.fields_atoms: tuple[str, ...] = ()
        self.line: str | None = None  # the last line, and the second (when // 1), status and size it was for
        self.line_second = self.line_until = 0.0  # the second's start and end, found by comparisons (PerSecond)
        self.line_status = 0
        self.line_sent = 0

    def renew(self, key: object, text: tuple[str, str, str, str, str]) -> None:
        """Another request: its text, and no atoms or line yet."""
        self.key, self.text, self.atoms, self.line = key, text, None, None


@dataclass(slots=True)
class Entry:
    """What one request leaves for the access log. Text is as received (latin-1), not escaped."""

    remote: str
    method: str  # "" when the request line itself was bad
    target: str
    path: str  # percent-decoded, as PATH_INFO
    query: str
    protocol: str
    status: int
    sent: int  # body bytes
    duration_us: int
    pid: int
    conn_id: int
    listener: str
    headers: Sequence[tuple[bytes, bytes]] = ()  # request fields, names upper-cased as the engine gives them
    response_headers: Sequence[tuple[str, str]] = ()
    when: float = field(default_factory=time.time)
    memo: Memo | None = None  # the connection's, while its request repeats

    def renew(self, key: object, text: tuple[str, str, str, str, str],
              headers: Sequence[tuple[bytes, bytes]]) -> None:
        """Another request (``key``) on the entry's connection: its text and its fields; the memo forgets
        the atoms of the last one."""
        self.method, self.target, self.path, self.query, self.protocol = text
        self.headers = headers
        if self.memo is not None:
            self.memo.renew(key, text)

    def fill_response(self, status: int, sent: int, started: float, response_headers: Sequence[tuple[str, str]],
                      when: float) -> None:
        """The response to the entry's request, which ends at ``when`` (time.time()); it began at ``started``
        (time.perf_counter(); 0.0 when the log shows no duration, AccessLog.timed)."""
        self.status = status
        self.sent = sent
        self.duration_us = int((time.perf_counter() - started) * 1e6) if started else 0
        self.response_headers = response_headers
        self.when = when

    def header(self, name: bytes) -> str:
        """A request field by upper-cased name, "" when absent."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return ""

    def response_header(self, name: str) -> str:
        lower = name.lower()
        for key, value in self.response_headers:
            if key.lower() == lower:
                return value
        return ""


# -- the text atoms: each a function of an Entry; client text goes through escape()

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class PerSecond(Generic[T]):
    """A time format remade at most once a second: these run once per request. ``last`` is the second's
    start and end and its text, swapped whole, so a thread never pairs one second with another's text;
    the access line's builder reads it inline, and calls ``at`` only for a new second. Two comparisons
    find the second, where ``when // 1`` would be a float division (fmod) on every request."""

    __slots__ = ("last", "make")

    def __init__(self, make: Callable[[int], T]) -> None:
        self.make = make
        self.last: list[tuple[float, float, T | None]] = [(0.0, 0.0, None)]

    def at(self, when: float | None = None) -> T:
        """The text of the second of ``when`` (time.time(); now, when None)."""
        if when is None:
            when = time.time()
        last = self.last[0]
        if not last[0] <= when < last[1]:
            second = when // 1
            last = self.last[0] = (second, second + 1.0, self.make(int(second)))
        return last[2]  # type: ignore[return-value]


def per_second(make: Callable[[int], T]) -> Callable[[float], T]:
    """``make`` remade at most once a second, as a function of the time (time.time())."""
    return PerSecond(make).at


def _clf(second: int) -> str:
    t = time.localtime(second)
    offset = t.tm_gmtoff // 60
    sign = "-" if offset < 0 else "+"
    return (f"[{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:"
            f"{t.tm_sec:02d} {sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}]")


# ``[10/Oct/2000:13:55:36 +0000]`` in local time (locale-free).
_clf_texts = PerSecond(_clf)
clf_time = _clf_texts.at


def _or_dash(text: str) -> str:
    return escape(text) if text else "-"


def _user(e: Entry) -> str:
    """The user name of Basic authentication, as gunicorn logs it."""
    auth = e.header(b"AUTHORIZATION")
    if not auth:
        return "-"
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "basic":
        return "-"
    import base64  # here: a cold start needs it for no request, and most requests have no Basic auth

    try:
        user = base64.b64decode(token.strip(), validate=True).decode("latin-1").partition(":")[0]
    except (binascii.Error, ValueError):
        return "-"
    return _or_dash(user)


# Each atom is a Python expression over the Entry ``e``, written into the one function compile_format
# makes for a format: an atom as a function of its own would cost a call per atom on every request.
# The names the expressions use are _NAMES.
ATOMS: dict[str, str] = {
    "h": 'escape(e.remote) or "-"',
    "l": '"-"',
    "u": "_user(e)",
    # The second's text, read inline while the second lasts: a call per line costs more than the rest of it.
    "t": "(c[2] if (c := clf_last[0])[0] <= e.when < c[1] else clf_time(e.when))",
    "r": 'escape(f"{e.method} {e.target} {e.protocol}") if e.method else "-"',
    "m": 'escape(e.method) or "-"',
    "U": 'escape(e.path) or "-"',
    "q": "escape(e.query)",
    "H": 'e.protocol or "-"',
    "s": "numbers[e.status]",
    "B": "numbers[e.sent]",
    "b": 'numbers[e.sent] if e.sent else "-"',
    "f": '_or_dash(e.header(b"REFERER"))',
    "a": '_or_dash(e.header(b"USER-AGENT"))',
    "T": "str(e.duration_us // 1_000_000)",
    "M": "str(e.duration_us // 1000)",
    "D": "str(e.duration_us)",
    "L": 'f"{e.duration_us / 1e6:.6f}"',
    "p": 'f"<{e.pid}>"',
    # sockact's own, beyond gunicorn's
    "conn": "str(e.conn_id)",
    "listener": "e.listener",
}
_DURATION = frozenset({"T", "M", "D", "L"})  # the atoms of a request's duration
# Atoms of the response and the time, made anew for every line; the others depend only on the request
# and its connection (and so does a request field, {name}i; a response field, {name}o, is the response's).
_PER_RESPONSE = frozenset({"t", "s", "B", "b", "T", "M", "D", "L"})
# A format whose response atoms are among these makes the same line for the same request, second, status
# and size: the memo keeps it (a duration or a response field changes with every response).
_PER_SECOND = frozenset({"t", "s", "B", "b"})
_CONSTANT = {"l": "-"}  # atoms whose text never varies: literal text in the line
# Atoms of the request line; the other kept ones are of the fields and the client (a trusted proxy's
# fields name the client), kept while the fields repeat.
_LINE = frozenset({"r", "m", "U", "q", "H"})
# Atoms of a connection's own values: a line that names one is never another connection's.
_PER_CONNECTION = frozenset({"conn", "listener", "p"})
# gunicorn logs %(p)s as "<pid>"; the journal message keeps today's "pid=N".
_JOURNAL_ATOMS = {**ATOMS, "p": "str(e.pid)"}


class _Numbers(dict[int, str]):
    """The text of small numbers (statuses, short bodies), looked up rather than made for every line."""

    def __missing__(self, number: int) -> str:
        return str(number)


_numbers = _Numbers((n, str(n)) for n in range(1000))
_NAMES: dict[str, Any] = {"escape": escape, "_user": _user, "clf_time": clf_time, "clf_last": _clf_texts.last,
                          "_or_dash": _or_dash, "numbers": _numbers}

_ATOM_RE = re.compile(r"%\((\{[^}]*\}[io]|[A-Za-z_]+)\)s")


def _header_atom(spec: str) -> str:
    name, kind = spec[1:-2], spec[-1]
    if kind == "i":
        return f"_or_dash(e.header({name.upper().encode('latin-1')!r}))"
    return f"_or_dash(e.response_header({name!r}))"


def _braced(literal: str) -> str:
    """Literal text as it goes into an f-string."""
    return literal.replace("{", "{{").replace("}", "}}")


def compile_format(spec: str, atoms: dict[str, str] = ATOMS) -> Callable[[Entry], str]:
    """The line builder for an ``access_logformat``; ValueError names an unknown atom."""
    if spec.strip().lower() == JSON_FORMAT:
        return json_line
    leftover = _ATOM_RE.sub("", spec).replace("%%", "")
    if "%" in leftover:
        raise ValueError(f"stray '%' in {spec!r}: atoms look like %(h)s, %({{header}}i)s")
    # The builder is made once, as one generated function: an f-string of the literal text and the atoms'
    # expressions (a loop over the parts on every request costs as much as the atoms, and an f-string
    # less than a join). Literal text and header names enter the source only through repr(); atoms that
    # never vary ("l") are literal text. The expressions of the response's atoms are computed first, into
    # locals: an f-string's fields hold names and subscripts only.
    template = ""  # the f-string's text, its fields named
    repeats = True  # the line is the same for the same request, second, status and size
    computed: list[str] = []  # "rN = (expression)", for the response's atoms
    kept: list[str] = []
    fields: list[str] = []
    pos = 0
    for match in _ATOM_RE.finditer(spec):
        template += _braced(spec[pos:match.start()].replace("%%", "%"))
        pos = match.end()
        name = match.group(1)
        if name in _CONSTANT:
            template += _braced(_CONSTANT[name])
            continue
        if name.startswith("{"):
            expression = _header_atom(name)
        elif name in atoms:
            expression = atoms[name]
        else:
            raise ValueError(f"unknown atom %({name})s")
        if name in _PER_RESPONSE or name.endswith("}o"):
            repeats = repeats and name in _PER_SECOND
            template += f"{{r{len(computed)}}}"
            computed.append(f"    r{len(computed)} = ({expression})")
        elif name in _LINE:  # made once while the request repeats: kept[i]
            template += f"{{kept[{len(kept)}]}}"
            kept.append(f"({expression})")
        else:  # made once while the fields repeat: fields[i]
            template += f"{{fields[{len(fields)}]}}"
            fields.append(f"({expression})")
    template += _braced(spec[pos:].replace("%%", "%"))
    namespace = dict(_NAMES)
    source = ["def line(e):", "    memo = e.memo"]
    # What the last line made of a request, and of fields, is kept for the next connection too (its memo
    # starts empty): the engine gives a new connection the very request the last one parsed for the same
    # head (Connection: close clients), with the same fields. Each is one tuple, replaced whole, with what
    # it was made of: a line made on another thread at the same moment sees an old one or a new one.
    namespace["last_line"] = [None]
    namespace["last_fields"] = [None]
    if kept:
        # The atoms of the request line: made once while the connection's request repeats, or the last
        # line's request (Memo.key) is the same.
        source += ["    kept = memo.atoms if memo is not None else None",
                   "    if kept is None:",
                   "        last = last_line[0]",
                   "        if memo is not None and last is not None and last[0] is memo.key:",
                   "            kept = last[1]",
                   "        else:",
                   f"            kept = ({', '.join(kept)},)",
                   "            if memo is not None:",
                   "                last_line[0] = memo.key, kept",
                   "        if memo is not None:",
                   "            memo.atoms = kept"]
    if fields:
        # The atoms of the fields and the client: made once while the connection's fields repeat, or the
        # last line's fields, client, and whichever of the connection's own values they name, are the same.
        own = [name for name in ("conn_id", "listener", "pid") if any(f"e.{name}" in f for f in fields)]
        same_own = "".join(f" and last[{2 + i}] == e.{name}" for i, name in enumerate(own))
        source += ["    if memo is not None and memo.fields is e.headers and memo.remote == e.remote:",
                   "        fields = memo.fields_atoms",
                   "    else:",
                   "        last = last_fields[0]",
                   f"        if last is not None and last[0] is e.headers and last[1] == e.remote{same_own}:",
                   "            fields = last[-1]",
                   "        else:",
                   f"            fields = ({', '.join(fields)},)",
                   f"            last_fields[0] = e.headers, e.remote, {''.join(f'e.{name}, ' for name in own)}fields",
                   "        if memo is not None:",
                   "            memo.fields, memo.remote, memo.fields_atoms = e.headers, e.remote, fields"]
    source += computed
    if repeats:
        # The line, kept for AccessLog.log_response to give again while nothing it was made of changes. With atoms of
        # the fields, the memo's fields and client were just made the entry's; without, they are set here.
        source += [f"    text = f{template!r}",
                   "    if memo is not None:",
                   *([] if fields else ["        memo.fields, memo.remote = e.headers, e.remote"]),
                   "        memo.line, memo.line_second = text, e.when // 1",
                   "        memo.line_until = memo.line_second + 1.0",
                   "        memo.line_status, memo.line_sent = e.status, e.sent",
                   "    return text"]
    else:
        source.append(f"    return f{template!r}")
    exec("\n".join(source) + "\n", namespace)
    line: Callable[[Entry], str] = namespace["line"]
    return line


def _iso_second(second: int) -> tuple[str, str]:
    """The local time of ``second`` as ISO 8601, split around where its milliseconds go."""
    from datetime import datetime  # here: only the JSON and journal lines' time needs it

    text = datetime.fromtimestamp(second).astimezone().isoformat(timespec="milliseconds")
    return text[:-10], text[-6:]  # "2023-11-14T22:13:20", "+00:00" (".000" between)


_iso_time = per_second(_iso_second)
# One encoder for every line: json.dumps() with separators builds a new one per call, which costs
# as much as the encoding.
_encode = json.JSONEncoder(separators=(",", ":")).encode


def json_line(e: Entry) -> str:
    """One JSON object; json's own escaping keeps every value on its line, losslessly."""
    second, zone = _iso_time(e.when)
    return _encode({
        "time": f"{second}.{int(e.when * 1000) % 1000:03d}{zone}",
        "remote_addr": e.remote, "method": e.method, "path": e.path, "query": e.query,
        "protocol": e.protocol, "status": e.status, "bytes": e.sent, "duration_us": e.duration_us,
        "host": e.header(b"HOST"), "user_agent": e.header(b"USER-AGENT"), "referer": e.header(b"REFERER"),
        "pid": e.pid, "conn_id": e.conn_id, "listener": e.listener,
    })


def check_format(spec: Any) -> str:
    """The ``access_logformat`` setting's parser: the spec, if it compiles."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("expected a format such as '%(h)s \"%(r)s\" %(s)s', or 'json'")
    compile_format(spec)
    return spec


check_format.__doc__ = "format|json"


def _open_logfile(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)


def check_file(path: str | None, *, create: bool = False) -> None:
    """Raise ConfigError if ``access_logfile`` could not be written.

    Without ``create`` (`sockact check`, run as the configuring user, which may not be the
    service's), it creates nothing and only catches what is wrong for everyone: a directory in its
    place, an existing file this user cannot append to. A missing directory is no error then:
    systemd creates LogsDirectory= when the service starts. With ``create`` (the supervisor at start,
    as the user its workers run as), the file is opened as the workers will open it, so a path they
    cannot write is a settings error before any worker starts.
    """
    if not path or path == STDERR:
        return
    if os.path.isdir(path):
        raise ConfigError(f"access_logfile {path}: is a directory")
    if create or os.path.exists(path):
        try:
            os.close(_open_logfile(path) if create else os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC))
        except OSError as exc:
            raise ConfigError(f"access_logfile {path}: {exc.strerror}") from None


def unix_peer(sock: socket.socket) -> str:
    """``unix:pid=N,uid=N`` for a Unix-socket peer, from SO_PEERCRED; ``unix:`` if unknown."""
    try:
        pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
    except OSError:
        return "unix:"
    return f"unix:pid={pid},uid={uid}"


@functools.lru_cache(maxsize=8)
def _kept_builder(spec: str, journal: bool) -> Callable[[Entry], str]:
    """compile_format for an AccessLog's lines, kept. Compiled in a worker instead, Python's compiler and
    the generated code's objects would take some 500 KiB of the pages it shares with the supervisor.
    The builder's memo of the last line (compile_format) is each process's own after the fork, and within
    a process AccessLogs of the same format may share it: it gives back only a line made of the same parts."""
    if journal:
        return compile_format(spec if spec != GUNICORN_FORMAT else JOURNAL_FORMAT, _JOURNAL_ATOMS)
    return compile_format(spec)


class AccessLog:
    """One worker's access log: a line builder and a buffered target (file, stderr or journal)."""

    def __init__(self, spec: str, path: str | None, sendv: Callable[..., Any] | None = None) -> None:
        # Built after the fork, in the worker: the file is opened here, with O_APPEND.
        self.path = path if path and path != STDERR else None
        self.sendv = None if path else sendv
        self.format = self.line_builder(spec, path, sendv)
        # Whether a line shows its request's duration (the journal's fields and the JSON object do; gunicorn's
        # default format does not): a runner reads the clock for it only then (Entry.fill_response).
        self.timed = (self.sendv is not None or self.format is json_line
                      or not _DURATION.isdisjoint(_ATOM_RE.findall(spec)))
        self.fd = 2
        self._checked = 0.0
        where = self.path or ("the journal" if self.sendv is not None else "stderr")
        self._writes = Outage(f"access log {where}", "cannot write (%s); its lines are lost until it can",
                              "written again", log.log, lines_lost)
        self._reopens = Outage(f"access log {where}", "moved away and cannot be opened again (%s); lines go on to "
                               "the file it was", "opened again", log.log)
        self._lines = Lines()  # the file's, or stderr's
        if self.path:
            try:
                self.fd = self._open()
            except OSError as exc:
                raise ConfigError(f"access_logfile {self.path}: {exc.strerror}") from None
        # The lines to write, or with the journal their records (the fields of each, made as it is logged:
        # an Entry is used again for the connection's next request).
        self._buffer: list[Any] = []
        self._deadline = 0.0
        self._due_at = 0.0  # the same deadline, in the wall-clock time of Entry.when
        self._flushing = threading.Lock()  # app threads log, and flush a buffer their line made due
        self._flusher = 0  # the thread in flush(), if any: one cut off there by a signal never lets go of the lock
        # The last line a memo kept, for any connection, with what it was made of (Memo's request, fields,
        # client, second, status and size): a new connection's first line is often the very same (a
        # `Connection: close` client sends the head the last one sent, and the engine gives the same
        # Request). One tuple, replaced whole, read by app threads. Not with a format that names the
        # connection's own values.
        self._shared = self.sendv is None and _PER_CONNECTION.isdisjoint(_ATOM_RE.findall(spec))
        self._last: tuple[object, object, str, float, float, int, int, str] | None = None

    @staticmethod
    def line_builder(spec: str, path: str | None, sendv: Callable[..., Any] | None) -> Callable[[Entry], str]:
        """The line builder of an AccessLog made with these arguments, compiled once a process for each
        format (_kept_builder): the supervisor makes it before it forks a worker (worker.shell.prepare)."""
        return _kept_builder(spec, not path and sendv is not None)

    def _open(self) -> int:
        assert self.path is not None
        return _open_logfile(self.path)

    def log(self, entry: Entry) -> None:
        """Buffer the line for ``entry``, filled; write the buffer if it is due or full. ``entry`` may be used
        again as soon as this returns (a connection keeps one for all its requests)."""
        line = self.format(entry)
        buffer = self._buffer
        when = entry.when
        if not buffer:
            # The loop's flush_if_due reads the monotonic clock; a line's own check reads the time the entry
            # already holds, which saves a clock read per line (a wall clock set back delays only this check).
            self._deadline = time.monotonic() + FLUSH_INTERVAL
            self._due_at = when + FLUSH_INTERVAL
        # No lock: list.append is atomic under the GIL, and flush() takes lines from the front only, so
        # a line that app threads append meanwhile stays for the next batch.
        buffer.append(line if self.sendv is None else journal_fields(entry, line))
        if len(buffer) >= MAX_BUFFERED or when >= self._due_at:
            self.flush()

    def log_response(self, entry: Entry, status: int, sent: int, started: float,
                     response_headers: Sequence[tuple[str, str]]) -> None:
        """Log the request ``entry`` holds (http/logline.entry_for), which ends now with ``status`` and ``sent``
        body bytes, as Entry.fill_response and log() would, with the common case made cheap: the connection's
        last line again (nothing it was made of changed: its request, as Memo.renew forgets the line, the
        fields and the client, the second, the status and the size), or for a connection that has kept none yet,
        the line another connection kept last (``_last``) on the same terms, into a batch of lines already begun
        that it neither fills nor makes due. Then the entry is not filled: the builder keeps a line only for
        a format with no other atom of the response."""
        when = time.time()
        memo = entry.memo
        buffer = self._buffer
        if (memo is not None and buffer and len(buffer) < MAX_BUFFERED - 1 and when < self._due_at
                and self.sendv is None):
            line = memo.line
            if line is not None:
                if (memo.line_status == status and memo.line_sent == sent and memo.line_second <= when < memo.line_until
                        and memo.fields is entry.headers and memo.remote == entry.remote):
                    buffer.append(line)  # atomic, as in log()
                    return
            elif self.log_again(memo.key, entry.headers, entry.remote, status, sent, when):
                return
        entry.fill_response(status, sent, started, response_headers, when)
        self.log(entry)
        if self._shared and memo is not None and memo.line is not None:
            self._last = (memo.key, memo.fields, memo.remote, memo.line_second, memo.line_until, memo.line_status,
                          memo.line_sent, memo.line)

    def log_again(self, key: object, headers: object, remote: str, status: int, sent: int, when: float) -> bool:
        """Log the line another connection kept last (``_last``) again, if it was made of the same request
        (``key``, as Memo's), fields, client, second (of ``when``, time.time()), status and size, into a batch
        of lines already begun that it neither fills nor makes due; True if it was."""
        last = self._last
        if (last is not None and last[0] is key and last[1] is headers and last[2] == remote and last[5] == status
                and last[6] == sent and last[3] <= when < last[4]):
            buffer = self._buffer
            if buffer and len(buffer) < MAX_BUFFERED - 1 and when < self._due_at:
                buffer.append(last[7])  # atomic, as in log()
                return True
        return False

    def log_websocket(self, entry: Entry, close_code: int, received: int) -> None:
        """The line of a WebSocket session that ended: its upgrade request's, then the close code (0: it
        never opened), the message bytes in and out (``entry.sent``) and the duration. Written at once:
        a session ends rarely next to requests, and may have lasted hours."""
        line = self.format(entry)
        if self.format is json_line:  # one more key in the object, rather than a second builder
            code = close_code or "null"
            line = f'{line[:-1]},"websocket":{{"close_code":{code},"bytes_in":{received},"bytes_out":{entry.sent}}}}}'
        else:
            line += (f" websocket close={close_code or '-'} in={received} out={entry.sent} "
                     f"duration={entry.duration_us / 1e6:.3f}s")
        self._buffer.append(line if self.sendv is None else journal_fields(entry, line))
        self.flush()

    def due(self, now: float) -> bool:
        """True when a buffered line has waited FLUSH_INTERVAL (``now`` from time.monotonic())."""
        return bool(self._buffer) and now >= self._deadline

    def flush_if_due(self, now: float) -> None:
        if self.due(now):
            self.flush()

    def flush(self) -> None:
        """Write every buffered line. Never raises: a log that cannot be written loses lines."""
        with self._flushing:  # one writer at a time: the loop thread, or an app thread whose line made it due
            self._flusher = threading.get_ident()
            try:
                self._write_buffer()
            finally:
                self._flusher = 0

    def _write_buffer(self) -> None:
        """flush()'s work, under its lock."""
        buffer = self._buffer
        batch = buffer[:]
        del buffer[:len(batch)]  # what was appended since the copy stays
        if not batch:
            return
        sent = 0  # the records of the batch the journal took before a failure: not lost
        written = False  # the file's lines went to their write, which counts those it lost
        try:
            if self.sendv is not None:
                for sent, record in enumerate(batch):  # noqa: B007 (``sent`` is read after a failure)
                    self.sendv(*record)
            else:
                if self.path:
                    self._reopen_if_moved()
                data = ("\n".join(batch) + "\n").encode("utf-8", "replace")
                written = True
                self._lines.write(functools.partial(os.write, self.fd), data)
        except Exception as exc:  # a full disk or a gone journal must not fail requests
            # A full disk may take part of a batch: the whole lines written before it failed are not lost.
            self._writes.failed(exc, self._lines.lost if written else len(batch) - sent)
        else:
            if self._writes.told:
                self._writes.ended()

    def flush_before_exit(self) -> None:
        """From a signal handler of the thread about to end the process: write the buffer, unless that thread was
        itself cut off in a flush (it holds the lock, and would never let it go). Another thread's flush is
        waited for."""
        if self._flusher != threading.get_ident():
            self.flush()

    def reopen(self) -> None:
        """Check for a rotated file before the next line, not within REOPEN_CHECK. Safe in a signal
        handler: it only forgets when the file was last checked."""
        self._checked = -REOPEN_CHECK

    def _reopen_if_moved(self) -> None:
        now = time.monotonic()
        if now - self._checked < REOPEN_CHECK:
            return
        self._checked = now
        try:
            current = os.stat(self.path or "")
            mine = os.fstat(self.fd)
            moved = (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino)
        except FileNotFoundError:
            moved = True
        if moved:
            try:
                fd = self._open()
            except OSError as exc:  # the file still open takes the lines, rather than none
                self._reopens.failed(exc, 0)
                return
            if self._reopens.told:
                self._reopens.ended()
            os.close(self.fd)
            self.fd = fd

    def close(self) -> None:
        self.flush()
        if self.path:
            os.close(self.fd)



def journal_fields(e: Entry, message: str) -> list[str]:
    """The journal record of one access line; client text escaped as in the message."""
    return [
        f"MESSAGE={message}", "PRIORITY=6", "SYSLOG_IDENTIFIER=sockact", "LOGGER=sockact.access",
        f"SOCKACT_WORKER_PID={e.pid}", f"SOCKACT_LISTENER={e.listener}", f"SOCKACT_CONN_ID={e.conn_id}",
        f"REMOTE_ADDR={escape(e.remote)}", f"HTTP_METHOD={escape(e.method)}", f"HTTP_PATH={escape(e.target)}",
        f"HTTP_PROTOCOL={e.protocol}", f"HTTP_STATUS={e.status}", f"BYTES_SENT={e.sent}",
        f"DURATION_US={e.duration_us}", f"HTTP_HOST={escape(e.header(b'HOST'))}",
        f"HTTP_USER_AGENT={escape(e.header(b'USER-AGENT'))}", f"HTTP_REFERER={escape(e.header(b'REFERER'))}",
    ]
