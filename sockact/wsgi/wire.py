"""Blocking socket I/O for one connection, with timeouts and few system calls.

The socket stays in blocking mode (its owner passes it on later). Each call first
tries without waiting (MSG_DONTWAIT), which succeeds at once in the common case, a
single system call; only when the kernel has nothing to give, or no room, does it
poll() with the timeout. Python's own socket timeouts would poll before every call
and switch the fd to non-blocking.

Every failure of the peer (reset, broken pipe, timeout) raises ClientGone.
"""

from __future__ import annotations

import fcntl
import math
import os
import select
import socket
import struct
import termios
import time
from collections.abc import Callable

from sockact.http.limits import LINGER_BYTES, LINGER_IDLE, LINGER_SECONDS, OUTBOX_MAX, RECV_SIZE, SpoolBudget

_POLLIN = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP
_POLLOUT = select.POLLOUT | select.POLLERR | select.POLLHUP
# sendfile() sends at most this much per call (Linux stops at 0x7ffff000 anyway).
_SENDFILE_MAX = 1 << 30


class ClientGone(OSError):
    """The client went away or stalled past a timeout; the connection is finished."""


class ClientTimedOut(ClientGone):
    """The client sent or took nothing within a wait's timeout, or the call's deadline passed."""


class Wire:
    """I/O on one connected stream socket (TCP or Unix) that this object does not own."""

    # What every wire starts with: class attributes until a wire sets its own (one per connection, made
    # for one request when its client sends `Connection: close`).
    send_stalled = False  # a send gave up for send_timeout
    # When the app call in progress must be done waiting for its client (monotonic seconds): every
    # wait ends by then, so a client that trickles can never keep a call running into `timeout`.
    deadline = math.inf
    # Made at the first wait: most connections never wait (a `Connection: close` client's never does).
    _poll: select.poll | None = None
    _events = 0
    _sndtimeo = 0.0  # SO_SNDTIMEO as last set for sendfile() (0.0: not set)
    # Bytes the kernel took through this object (and the loop's 100 Continue): set against the kernel's
    # own count if the worker dies, it tells whether a response had begun to go out.
    sent = 0
    # The outbox: what the kernel had no room for, for the worker's loop to write (send_outbox). Given a budget
    # (the worker's), a send keeps there what does not go at once, once some of its response has gone out
    # (``begun``: ``sent`` when it began): a worker that dies then leaves a cut response, closed, never a
    # client parked as if idle, or told 502 when part of its answer is out.
    outbox_budget: SpoolBudget | None = None
    outbox: bytearray | None = None
    begun = 0
    # Asked only when the kernel has no room: whether the piece in hand may leave its tail in the outbox (the
    # engine's sent_whole, given with the budget).
    may_keep: Callable[[], bool] = staticmethod(lambda: True)

    def __init__(self, sock: socket.socket, io_timeout: float, send_timeout: float | None = None) -> None:
        if sock.gettimeout() is not None:
            sock.settimeout(None)  # our waits are explicit; keep the fd in blocking mode
        self.sock = sock
        self.io_timeout = io_timeout
        # A send that makes no progress for this long gives up: shorter than the app call's timeout,
        # so a client that never reads costs its connection, not the worker.
        self.send_timeout = send_timeout or io_timeout

    def _poll_for(self, events: int) -> select.poll:
        poll = self._poll
        if poll is None:
            poll = self._poll = select.poll()
        if events != self._events:
            if self._events:
                poll.modify(self.sock, events)
            else:
                poll.register(self.sock, events)
            self._events = events
        return poll

    def _wait(self, events: int, timeout: float) -> None:
        poll = self._poll_for(events)
        if self.deadline != math.inf:
            timeout = min(timeout, self.deadline - time.monotonic())
        if timeout <= 0 or not poll.poll(timeout * 1000):
            raise ClientTimedOut("timed out")

    def recv(self, timeout: float) -> bytes:
        """Up to RECV_SIZE bytes, b"" at EOF; waits at most ``timeout`` seconds."""
        sock = self.sock
        try:
            try:
                return sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
            self._wait(_POLLIN, timeout)
            return sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            raise ClientGone("readable but nothing to read") from None
        except ClientGone:
            raise
        except OSError as exc:
            raise ClientGone(str(exc)) from exc

    def send(self, data: bytes | memoryview, *more: bytes | memoryview, keep: bool = True) -> None:
        """Send all of ``data`` and ``more``; with several pieces, in one sendmsg() where the kernel takes them.
        With an outbox, what the kernel has no room for may wait there instead, behind what waits already, unless
        not ``keep`` (all of it goes now: a linger or a close follows)."""
        # What waits in the outbox goes first: what the kernel takes of it now (a stream's next piece must not wait
        # behind it while its client reads), then, if some is left, this after it.
        if self.outbox is not None and not self.send_outbox():
            if keep and self.may_keep() and self._keep((data, *more)):
                return
            self._send([memoryview(self._take_outbox()), data, *more], keep=False)  # all of it now, waiting for room
            return
        if not more:
            # The usual case: one piece, which the kernel takes whole in one call.
            before = self.sent
            if self.send_now(data):
                return
            data = memoryview(data)[self.sent - before:]
        self._send([data, *more], keep=keep and self.outbox_budget is not None)

    def _send(self, pieces: list[bytes | memoryview], keep: bool) -> None:
        """send()'s loop: what the kernel takes at once, then waits for room (``keep``: or into the outbox)."""
        sock = self.sock
        buffers = [part for part in pieces if part]
        try:
            while buffers:
                try:
                    sent = (sock.send(buffers[0], socket.MSG_DONTWAIT) if len(buffers) == 1
                            else sock.sendmsg(buffers, (), socket.MSG_DONTWAIT))
                except BlockingIOError:
                    sent = 0
                self.sent += sent
                while buffers and sent >= len(buffers[0]):
                    sent -= len(buffers.pop(0))
                if buffers:
                    if sent:
                        buffers[0] = memoryview(buffers[0])[sent:]
                    if keep and self.sent > self.begun and self.may_keep() and self._keep(buffers):
                        return
                    self._wait_to_send()
        except ClientGone:
            raise
        except OSError as exc:
            raise ClientGone(str(exc)) from exc

    def _keep(self, pieces: tuple[bytes | memoryview, ...] | list[bytes | memoryview]) -> bool:
        """Put ``pieces`` in the outbox if they fit (OUTBOX_MAX, and the worker's budget): whether they went."""
        budget = self.outbox_budget
        size = sum(len(part) for part in pieces)
        outbox = self.outbox
        if budget is None or (len(outbox) if outbox is not None else 0) + size > OUTBOX_MAX or not budget.fits(size):
            return False
        if outbox is None:
            outbox = self.outbox = bytearray()
        for part in pieces:
            outbox += part
        return True

    def _take_outbox(self) -> bytearray:
        """The outbox's bytes, out of it (and out of the budget): for a send that writes them itself."""
        outbox = self.outbox
        assert outbox is not None and self.outbox_budget is not None
        self.outbox = None
        self.outbox_budget.give(len(outbox))
        return outbox

    def send_outbox(self) -> bool:
        """For the worker's loop, which must never wait for a client: what the kernel takes of the outbox now;
        True once it is empty. Raises ClientGone."""
        outbox = self.outbox
        assert outbox is not None and self.outbox_budget is not None
        sent = self._send_dontwait(outbox)
        del outbox[:sent]
        self.outbox_budget.give(sent)
        if outbox:
            return False
        self.outbox = None
        return True

    def drop_outbox(self) -> None:
        """The connection is closed: what its outbox held will never go."""
        if self.outbox is not None:
            self._take_outbox()

    def send_now(self, data: bytes | memoryview) -> bool:
        """Send ``data`` without waiting for room, for the worker's loop, which must never wait for a client: False
        when the kernel did not take it whole (what it took is counted, the rest is dropped)."""
        return self._send_dontwait(data) == len(data)

    def _send_dontwait(self, data: bytes | bytearray | memoryview) -> int:
        """What the kernel takes of ``data`` now, counted in ``sent``."""
        try:
            sent = self.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise ClientGone(str(exc)) from exc
        self.sent += sent
        return sent

    def taken(self) -> int:
        """The bytes the client has taken (acknowledged, or read: a Unix socket) of the ``sent``: less what still waits
        in the kernel's send queue (SIOCOUTQ). Room to write says so only once a third of the send buffer is free."""
        try:
            queued: int = struct.unpack("i", fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            return self.sent  # failed or closed: the next send finds out
        return self.sent - queued

    def has_room(self) -> bool:
        """Whether the kernel would take more output now, without waiting (the socket is writable, or failed:
        the next send finds out). False when the client leaves what went before in its buffer."""
        return bool(self._poll_for(_POLLOUT).poll(0))

    def _wait_to_send(self) -> None:
        try:
            self._wait(_POLLOUT, self.send_timeout)
        except ClientGone:
            self.send_stalled = True
            raise

    def sendfile(self, fd: int, offset: int, count: int) -> int:
        """Send ``count`` bytes of file ``fd`` from ``offset`` with os.sendfile; bytes sent.

        Fewer than ``count`` only if the file is shorter than it was said to be.
        """
        if self.outbox is not None:
            self._send([memoryview(self._take_outbox())], keep=False)  # before the file, waiting for room
        done = 0
        try:
            while done < count:
                self._bound_sendfile()
                n = os.sendfile(self.sock.fileno(), fd, offset + done, min(count - done, _SENDFILE_MAX))
                if not n:
                    break  # end of file
                done += n
                self.sent += n
        except BlockingIOError:
            self.send_stalled = True
            raise ClientTimedOut("timed out") from None
        except OSError as exc:
            raise ClientGone(str(exc)) from exc
        return done

    def _bound_sendfile(self) -> None:
        """sendfile() cannot be told not to wait, so bound each call's wait in the kernel: by
        send_timeout, and by what is left until the call's deadline."""
        wait = self.send_timeout
        if self.deadline != math.inf:
            wait = min(wait, self.deadline - time.monotonic())
            if wait <= 0:
                raise BlockingIOError  # as the kernel says when its wait ran out
            wait = max(wait, 0.001)  # 0 would mean no bound at all
        if wait != self._sndtimeo:
            sec = int(wait)
            usec = int((wait - sec) * 1e6)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", sec, usec))
            self._sndtimeo = wait

    @property
    def past_deadline(self) -> bool:
        """The call's deadline for waiting on the client has passed."""
        return time.monotonic() >= self.deadline

    def linger(self) -> None:
        """Stop sending, then read and drop what the client still sends, briefly.

        Closing a socket with unread input makes the kernel send a reset, which can
        destroy the answer in the client's receive buffer before it reads it.
        """
        self.deadline = math.inf  # the linger is bounded on its own
        try:
            self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            dropped = 0
            while dropped < LINGER_BYTES:
                data = self.recv(min(LINGER_IDLE, deadline - time.monotonic()))
                if not data:
                    return
                dropped += len(data)
        except OSError:
            pass
