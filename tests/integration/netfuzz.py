"""Random and mutated requests over real sockets, many connections at once, and what came back.

``cases`` yields seeded hostile inputs: valid requests of every framing cut, flipped, stretched and
repeated, random bytes, and heads past each limit. ``throw`` sends them (or any such source) on up to ``parallel``
connections at a time from one selector loop (raw sockets, no client library in the way) and
sorts each connection's outcome into a ``Tally``. A connection answered by nothing, neither bytes
nor a close, within ``bound`` seconds is a hang.
"""

from __future__ import annotations

import random
import re
import selectors
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

BASES = [
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a/b?c=d&e HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nUser-Agent: x\r\n\r\n",
    b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\n",
    b"PUT /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET http://h:80/abs HTTP/1.1\r\nHost: h\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /up HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
]
# Bytes a mutation inserts: HTTP's delimiters, and some never allowed.
SPECIAL = b"\r\n\0 \t:;,\"=\x7f\x80\xff0aF/?#"
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def mutate(rng: random.Random, data: bytes) -> bytes:
    """``data`` with one to four bytes flipped, special bytes inserted, ranges cut or repeated."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randint(0, len(buf))
        j = min(len(buf), i + rng.randint(0, 16))
        kind = rng.randrange(5)
        if kind == 0 and i < len(buf):
            buf[i] = rng.getrandbits(8)
        elif kind == 1:
            buf[i:i] = bytes([rng.choice(SPECIAL)])
        elif kind == 2:
            del buf[i:j]
        elif kind == 3:
            buf[i:i] = buf[i:j] * rng.randint(1, 3)
        else:
            del buf[i:]
    return bytes(buf)


def cases(seed: int) -> Iterator[tuple[bytes, bool]]:
    """Endless (bytes, hang_up): whether the client shuts its side after sending."""
    rng = random.Random(seed)
    huge = [b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 150 + b"\r\n",
            b"GET / HTTP/1.1\r\nX: " + b"v" * 9000 + b"\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 20 + b"\r\n"]
    while True:
        roll = rng.random()
        if roll < 0.75:
            data = mutate(rng, rng.choice(BASES))
        elif roll < 0.85:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
        elif roll < 0.9:
            data = rng.choice(huge)
        else:
            data = rng.choice(BASES)  # unmutated: must get a 2xx
        # Most clients hang up after sending; the rest leave the server to its timeouts, and one that
        # stops inside a body holds an app thread until `timeout`, so they are few.
        yield data, rng.random() < 0.97


@dataclass
class Tally:
    """Outcomes of the cases sent, counted by kind, with an example of each failure."""

    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    silent: int = 0  # closed (or reset) with no bytes: allowed, e.g. EOF between requests
    resets: int = 0
    hangs: int = 0
    server_errors: int = 0  # 5xx other than 501 (a transfer coding sockact cannot undo, RFC 9112 6.1)
    examples: list[bytes] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, data: bytes, answer: bytes, reset: bool, hung: bool) -> None:
        self.cases += 1
        codes = [int(m) for m in _STATUS.findall(answer)]
        self.statuses.update(codes)
        self.resets += reset
        if hung:
            self.hangs += 1
            self.examples.append(data)
        elif not answer:
            self.silent += 1
        if any(code >= 500 and code != 501 for code in codes):
            self.server_errors += 1
            self.examples.append(data)

    def summary(self) -> str:
        return (f"{self.cases} cases in {self.seconds:.1f}s: statuses {dict(sorted(self.statuses.items()))}, "
                f"{self.silent} closed without an answer ({self.resets} reset), {self.hangs} hangs, "
                f"{self.server_errors} 5xx")


class _Case:
    __slots__ = ("answer", "data", "deadline", "hang_up", "reset", "sock", "to_send")

    def __init__(self, sock: socket.socket, data: bytes, hang_up: bool, deadline: float) -> None:
        self.sock, self.data, self.hang_up, self.deadline = sock, data, hang_up, deadline
        self.to_send = memoryview(data)
        self.answer = b""
        self.reset = False


def throw(port: int, count: int, source: Iterator[tuple[bytes, bool]], parallel: int = 100,
          bound: float = 15.0) -> Tally:
    """Send ``count`` cases from ``source`` to 127.0.0.1:``port``, ``parallel`` connections at a time."""
    tally = Tally()
    sel = selectors.DefaultSelector()
    started = time.monotonic()
    sent = 0

    def open_one() -> None:
        nonlocal sent
        data, hang_up = next(source)
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        sel.register(sock, selectors.EVENT_WRITE, _Case(sock, data, hang_up, time.monotonic() + bound))
        sent += 1

    def finish(case: _Case, hung: bool = False) -> None:
        sel.unregister(case.sock)
        case.sock.close()
        tally.add(case.data, case.answer, case.reset, hung)

    while sent < count or sel.get_map():
        while sent < count and len(sel.get_map()) < parallel:
            open_one()
        for key, events in sel.select(0.5):
            case = key.data
            try:
                if events & selectors.EVENT_WRITE:
                    n = case.sock.send(case.to_send[:65536])
                    case.to_send = case.to_send[n:]
                    if not case.to_send:
                        if case.hang_up:
                            case.sock.shutdown(socket.SHUT_WR)
                        sel.modify(case.sock, selectors.EVENT_READ, case)
                    continue
                chunk = case.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:  # refused, reset, or a send after the server closed: all a close
                case.reset = True
                finish(case)
                continue
            if chunk:
                case.answer += chunk
            else:
                finish(case)
        now = time.monotonic()
        for key in list(sel.get_map().values()):
            if key.data.deadline < now:
                finish(key.data, hung=True)
    tally.seconds = time.monotonic() - started
    return tally
