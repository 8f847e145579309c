"""Holds idle keep-alive connections open to one server, for the idle-clients scenario.

    python -m bench.idle PORT COUNT

1. Opens COUNT connections to 127.0.0.1:PORT, sends one keep-alive GET / on each and reads the
   answer, so that the server has seen every connection and holds it as an idle keep-alive client.
   What is not answered within OPEN_DEADLINE is given up on and counted, not waited for.
2. Prints one JSON line of counts, then leaves the connections idle until its stdin closes.
3. Then counts which of them the server closed meanwhile, prints a second JSON line, closes them all
   and exits. Loopback only, bounded in time.
"""

from __future__ import annotations

import errno
import json
import resource
import selectors
import socket
import sys
import time
from collections import Counter

from bench.servers import HOST

OPEN_DEADLINE = 10.0
# Connections being opened at once. A burst of 10,000 SYNs would only overflow the listen backlog and
# time the kernel's SYN retries; a window keeps the helper measuring the server.
WINDOW = 500
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def answered(buf: bytes) -> bool:
    """Whether ``buf`` holds a whole response with a Content-Length body."""
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True  # no length: the head is all we wait for


class Opener:
    """Opens connections through a window and keeps those that were answered."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.left = count
        self.sel = selectors.DefaultSelector()
        self.buffers: dict[socket.socket, bytes] = {}
        self.idle: list[socket.socket] = []
        self.failed: Counter[str] = Counter()

    def run(self, deadline: float) -> None:
        while (self.left or self.buffers) and time.monotonic() < deadline:
            while self.left and len(self.buffers) < WINDOW:
                self._connect()
            for key, _ in self.sel.select(timeout=0.2):
                self._step(key.fileobj)  # type: ignore[arg-type]
        if self.buffers or self.left:
            self.failed["no answer in time"] += len(self.buffers) + self.left
        for sock in list(self.buffers):
            self._drop(sock)

    def _connect(self) -> None:
        self.left -= 1
        sock = socket.socket()
        sock.setblocking(False)
        err = sock.connect_ex((HOST, self.port))
        if err not in (0, errno.EINPROGRESS):
            self.failed[errno.errorcode.get(err, str(err))] += 1
            sock.close()
            return
        self.buffers[sock] = b""
        self.sel.register(sock, selectors.EVENT_WRITE)

    def _step(self, sock: socket.socket) -> None:
        try:
            if self.sel.get_key(sock).events == selectors.EVENT_WRITE:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, errno.errorcode.get(err, str(err)))
                sock.send(REQUEST)
                self.sel.modify(sock, selectors.EVENT_READ)
                return
            chunk = sock.recv(65536)
        except OSError as e:
            self.failed[errno.errorcode.get(e.errno or 0, "error")] += 1
            self._drop(sock)
            return
        if not chunk:
            self.failed["closed before answering"] += 1
            self._drop(sock)
            return
        self.buffers[sock] += chunk
        if answered(self.buffers[sock]):
            self.sel.unregister(sock)
            del self.buffers[sock]
            self.idle.append(sock)

    def _drop(self, sock: socket.socket) -> None:
        self.sel.unregister(sock)
        del self.buffers[sock]
        sock.close()


def closed_by_server(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has closed or reset: readable, and at EOF or in error."""
    sel = selectors.DefaultSelector()
    for sock in socks:
        sel.register(sock, selectors.EVENT_READ)
    closed = 0
    for key, _ in sel.select(timeout=0.5):
        sock = key.fileobj
        try:
            closed += sock.recv(1, socket.MSG_PEEK) == b""  # type: ignore[union-attr]
        except OSError:
            closed += 1
    sel.close()
    return closed


def main(argv: list[str]) -> int:
    port, count = int(argv[0]), int(argv[1])
    raise_fd_limit()
    began = time.monotonic()
    opener = Opener(port, count)
    try:
        opener.run(began + OPEN_DEADLINE)
        print(json.dumps({"requested": count, "answered": len(opener.idle), "failed": dict(opener.failed),
                          "seconds": round(time.monotonic() - began, 2)}), flush=True)
        sys.stdin.read()  # the idle period: until the harness closes our stdin
        print(json.dumps({"closed_by_server": closed_by_server(opener.idle)}), flush=True)
    finally:
        for sock in opener.idle:
            sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
