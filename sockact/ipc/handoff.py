"""The supervisor<->worker channel: one AF_UNIX SOCK_SEQPACKET socketpair per worker.

Each datagram is one message: a fixed binary header, then the peer's raw address,
then the PROXY protocol client if one was read (its raw address and port), then
optional bytes already read from the connection. A connection's fd rides along
as SCM_RIGHTS. SEQPACKET keeps message boundaries, so no framing is needed, and an
empty read means the other end has gone (EOF). CONNS, the one exception, carries
several CONN messages (each with its length before it) and their fds in the same
order: the connections that wait for one worker in one turn of the supervisor's
loop cost it one send, and the worker one receive.

Messages:
    CONN   supervisor -> worker, with fd: serve this connection
    CONNS  supervisor -> worker, with 2 to MAX_BATCH fds: serve these connections (CONNs, in order)
    PARK   worker -> supervisor, with fd: response done, connection idle at a request boundary
    DONE   worker -> supervisor: the worker closed the connection; the connections a worker closed
           in one turn of its loop travel in one DONE, the first in the header, the rest as data
    READY  worker -> supervisor: the app is loaded, send work
    RECYCLE worker -> supervisor: max_requests reached; retire me (the worker takes nothing new)
    FAILED worker -> supervisor, before it exits: it cannot start; the data is the one-line reason

Ownership of a connection's fd (see docs/architecture.md): a worker closes its copy right after
a successful PARK. The supervisor, after a CONN, keeps its copy untouched until the worker's PARK
or DONE for that connection id, so that it can still answer the client (502/504) if the worker dies.
"""

from __future__ import annotations

import array
import contextlib
import mmap
import select
import socket
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sockact.errors import HandoffError
from sockact.http.proxyprotocol import Header

CONN, PARK, DONE, READY, RECYCLE, FAILED, CONNS = 1, 2, 3, 4, 5, 6, 7
_KINDS = frozenset((CONN, PARK, DONE, READY, RECYCLE, FAILED))  # of one message; CONNS holds CONNs

# kind, address family, listener index, connection id, dispatch count, peer port, PROXY header's client
# family, when the request head in the data started to arrive (0.0: no head begun)
_HEADER = struct.Struct("!BBHQIHBd")
_HEADER_SIZE = _HEADER.size
_ADDR_LEN = {socket.AF_INET: 4, socket.AF_INET6: 16, socket.AF_UNIX: 0}
_IP = frozenset((int(socket.AF_INET), int(socket.AF_INET6)))
_UNIX = int(socket.AF_UNIX)
_UNSPEC = int(socket.AF_UNSPEC)
# The PROXY header's client: NO_PROXY (no header read yet), AF_UNSPEC (read; keep the socket's peer),
# or the client's family, followed by its raw address and port.
NO_PROXY = 0xFF
_PROXY_LEN = {NO_PROXY: 0, socket.AF_UNSPEC: 0, socket.AF_INET: 4 + 2, socket.AF_INET6: 16 + 2}
_FD_SIZE = array.array("i").itemsize
# The most bytes read from a connection and not yet served that one message carries with it: a
# connection holding more cannot be handed over (see fits).
MAX_DATA = 65536
# Room for the header, an IPv6 address and a full read buffer of pending bytes.
MAX_MESSAGE = _HEADER.size + 16 + 18 + MAX_DATA
# Connections (and fds) in one CONNS at most: a bound on the receiver's control buffer, and a batch
# small enough that the first worker to read it does not take a whole burst from the others.
MAX_BATCH = 16
_BATCH = struct.Struct("!BB")  # CONNS, how many
_LENGTH = struct.Struct("!I")  # before each CONN in a CONNS: its length
_ANC_SPACE = socket.CMSG_SPACE(_FD_SIZE * MAX_BATCH)
_ID = 8  # bytes of a connection id in a DONE's data
# As a plain int: an IntFlag's ``&`` runs enum code in Python, on every message received.
_CUT = int(socket.MSG_CTRUNC | socket.MSG_TRUNC)
_TRUNC = int(socket.MSG_TRUNC)
MAX_DONE = 4096  # connection ids in one DONE message, well within MAX_MESSAGE
MAX_REASON = 4096  # bytes of a FAILED's reason: a line for a status and a reload's outcome, not a dump


@dataclass(slots=True)
class Message:
    kind: int
    conn_id: int = 0
    listener: int = 0
    family: int = socket.AF_UNIX
    peer: tuple[str, int] | None = None  # (host, port) for TCP; None for Unix sockets
    hops: int = 0  # how many times this connection has been dispatched, for the demo and logs
    data: bytes = b""  # bytes read from the connection but not yet parsed
    fd: int = -1
    proxy: Header | None = None  # the PROXY protocol header once read, so it is never read twice
    # When the head in ``data`` (or the PROXY header) began to arrive, in time.monotonic() seconds, which
    # every process on the host shares; 0.0 when none has. Its header_timeout runs on from there in
    # the next worker, so a head handed back again and again still gets its 408 on time.
    head_started: float = 0.0


def encode(msg: Message) -> bytes:
    """The datagram for ``msg``, without its fd."""
    return encode_fields(msg.kind, msg.conn_id, msg.listener, msg.family, msg.peer, msg.hops, msg.data, msg.proxy,
                         msg.head_started)


def encode_fields(kind: int, conn_id: int, listener: int, family: int, peer: tuple[str, int] | None, hops: int,
                  data: bytes, proxy: Header | None, head_started: float) -> bytes:
    """The datagram for a message given by its fields (Message's), with no Message made: the supervisor
    encodes each connection it hands off straight from its own record of it."""
    port, raw = 0, b""
    if peer is not None and family in _IP:
        raw = socket.inet_pton(family, peer[0])
        port = peer[1]
    proxy_family, client = NO_PROXY, b""
    if proxy is not None:
        proxy_family = proxy.family
        if proxy.client is not None:
            host, client_port = proxy.client
            client = socket.inet_pton(proxy_family, host) + client_port.to_bytes(2, "big")
    header = _HEADER.pack(kind, family, listener, conn_id, hops, port, proxy_family, head_started)
    return header + raw + client + data


def fits(data: bytes) -> bool:
    """Whether a connection's unserved bytes can travel with it; a longer message would be cut at the
    receiver (MSG_TRUNC), which takes the sender for broken."""
    return len(data) <= MAX_DATA


def done(conn_ids: Sequence[int]) -> Message:
    """One DONE for up to MAX_DONE connections a worker closed."""
    return Message(DONE, conn_id=conn_ids[0], data=_more_ids(conn_ids))


def encode_done(conn_ids: Sequence[int]) -> bytes:
    """encode(done(conn_ids)), with no Message made: a worker sends one at every turn of its loop that
    closed connections."""
    return encode_fields(DONE, conn_ids[0], 0, _UNIX, None, 0, _more_ids(conn_ids), None, 0.0)


def _more_ids(conn_ids: Sequence[int]) -> bytes:
    """A DONE's data: the ids after the first (which goes in the header)."""
    rest = conn_ids[1:]
    return struct.pack(f"!{len(rest)}Q", *rest) if rest else b""


def done_ids(msg: Message) -> tuple[int, ...]:
    """The connections a DONE reports (decode has checked its data's length)."""
    if not msg.data:
        return (msg.conn_id,)
    return (msg.conn_id, *struct.unpack(f"!{len(msg.data) // _ID}Q", msg.data))


def failed(reason: str, explained: str = "") -> Message:
    """The FAILED a worker that cannot start sends before it exits: its one-line reason, then the
    whole text to log (a traceback; its end kept if it is too long, as the innermost frames matter)."""
    head = reason.encode("utf-8", "replace")[:MAX_REASON] + b"\0"
    text = explained.encode("utf-8", "replace")
    room = MAX_DATA - len(head)
    if len(text) > room:
        text = b"[...]\n" + text[len(text) - room + 6:]
    return Message(FAILED, data=head + text)


def failure_reason(msg: Message) -> str:
    """The one-line reason a FAILED carries."""
    return msg.data.partition(b"\0")[0].decode("utf-8", "replace")


def failure_explained(msg: Message) -> str:
    """The whole text a FAILED carries to be logged; its reason if it carries none."""
    reason, _, text = msg.data.partition(b"\0")
    return (text or reason).decode("utf-8", "replace")


def decode(buf: bytes | memoryview, fd: int = -1) -> Message:
    """Parse one datagram. Raises HandoffError on anything malformed."""
    # Once for every connection a worker adopts: the usual message (a CONN with no PROXY client and no
    # bytes) makes no slice it does not need, and inet_ntop reads the address where it lies.
    size = len(buf)
    if size < _HEADER_SIZE:
        raise HandoffError(f"short message ({size} bytes)")
    kind, family, listener, conn_id, hops, port, proxy_family, head_started = _HEADER.unpack_from(buf)
    if kind not in _KINDS or family not in _ADDR_LEN or proxy_family not in _PROXY_LEN:
        raise HandoffError(f"bad message kind {kind}, family {family} or PROXY family {proxy_family}")
    end = _HEADER_SIZE + _ADDR_LEN[family]
    proxy_end = end + _PROXY_LEN[proxy_family]
    if size < proxy_end:
        raise HandoffError("truncated peer address")
    peer = (socket.inet_ntop(family, buf[_HEADER_SIZE:end]), port) if end > _HEADER_SIZE else None
    proxy = None
    if proxy_family == NO_PROXY:
        pass
    elif proxy_family == _UNSPEC:
        proxy = Header(None)
    else:
        raw = bytes(buf[end:proxy_end])
        proxy = Header((socket.inet_ntop(proxy_family, raw[:-2]), int.from_bytes(raw[-2:], "big")))
    data = bytes(buf[proxy_end:]) if size > proxy_end else b""
    if kind == DONE and len(data) % _ID:
        raise HandoffError(f"a DONE whose data is not connection ids ({len(data)} bytes)")
    return Message(kind, conn_id, listener, family, peer, hops, data, fd, proxy, head_started)


def encode_conns(msgs: Sequence[Message]) -> tuple[bytes, int]:
    """The datagram for the first of ``msgs`` (CONNs) that fit in one: a CONN for one alone, else a
    CONNS of up to MAX_BATCH within MAX_MESSAGE; and how many it carries, their fds in that order."""
    return batch([encode(msg) for msg in msgs[:MAX_BATCH]])


def batch(encoded: Sequence[bytes]) -> tuple[bytes, int]:
    """encode_conns() for CONNs already encoded (encode_fields)."""
    first = encoded[0]
    if len(encoded) == 1:
        return first, 1
    records = [_LENGTH.pack(len(first)), first]
    size = _BATCH.size + _LENGTH.size + len(first)
    for record in encoded[1:MAX_BATCH]:
        size += _LENGTH.size + len(record)
        if size > MAX_MESSAGE:
            break
        records += (_LENGTH.pack(len(record)), record)
    count = len(records) // 2
    if count == 1:
        return first, 1
    return _BATCH.pack(CONNS, count) + b"".join(records), count


def decode_conns(buf: bytes | memoryview, fds: Sequence[int]) -> list[Message]:
    """The CONNs of a CONNS datagram, each with its fd. Raises HandoffError when it is cut, or its
    fds and its connections disagree in number; the caller then closes ``fds``."""
    if len(buf) < _BATCH.size:
        raise HandoffError(f"short CONNS ({len(buf)} bytes)")
    kind, count = _BATCH.unpack_from(buf)
    if kind != CONNS or not 2 <= count <= MAX_BATCH:
        raise HandoffError(f"bad CONNS: kind {kind}, {count} connections")
    if count != len(fds):
        raise HandoffError(f"a CONNS of {count} connections arrived with {len(fds)} fds")
    msgs, at = [], _BATCH.size
    for fd in fds:
        if at + _LENGTH.size > len(buf):
            raise HandoffError("CONNS cut short")
        (length,) = _LENGTH.unpack_from(buf, at)
        at += _LENGTH.size
        if at + length > len(buf):
            raise HandoffError("CONNS cut short")
        msg = decode(buf[at:at + length], fd)
        if msg.kind != CONN:
            raise HandoffError(f"a CONNS holds a message of kind {msg.kind}")
        msgs.append(msg)
        at += length
    if at != len(buf):
        raise HandoffError(f"{len(buf) - at} bytes after the last connection of a CONNS")
    return msgs


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(supervisor end, worker end). Both close-on-exec, so an app's subprocesses never hold them."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class FdsLost(HandoffError):
    """A message arrived whole, but its fds did not (MSG_CTRUNC: no fd slot free in the receiver).

    Not the sender's fault: the receiver ran out of descriptors. ``messages`` say which
    connections were lost (every one of a CONNS: which fd is whose cannot be told), so the books
    can be kept straight.
    """

    def __init__(self, messages: list[Message]) -> None:
        ids = ", ".join(str(msg.conn_id) for msg in messages)
        super().__init__(f"control message truncated (MSG_CTRUNC): connections {ids} lost their fds")
        self.messages = messages


def send_conns(chan: socket.socket, msgs: Sequence[Message]) -> int:
    """Send the first of ``msgs`` (CONNs with their fds) that fit in one datagram (encode_conns); how
    many went. The caller still owns its copies of the fds. BlockingIOError when the channel is full."""
    return send_batch(chan, [encode(msg) for msg in msgs[:MAX_BATCH]], [msg.fd for msg in msgs])


def send_batch(chan: socket.socket, encoded: Sequence[bytes], fds: Sequence[int]) -> int:
    """send_conns() for CONNs already encoded (encode_fields), ``fds`` theirs in the same order."""
    payload, count = batch(encoded)
    chan.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds[:count]))])
    return count


def send(chan: socket.socket, msg: Message, wait: float = 0.0) -> None:
    """Send ``msg`` and its fd, if any. The caller still owns (and must close) its copy of the fd.

    On a non-blocking channel whose buffer is full, waits up to ``wait`` seconds for room,
    then raises BlockingIOError.
    """
    send_encoded(chan, encode(msg), msg.fd, wait)


def send_encoded(chan: socket.socket, payload: bytes, fd: int = -1, wait: float = 0.0) -> None:
    """send() for a message already encoded (encode_done), with its fd if it has one."""
    while True:
        try:
            if fd >= 0:
                socket.send_fds(chan, [payload], [fd])
            else:
                chan.send(payload)
            return
        except BlockingIOError:
            if wait <= 0 or not _room(chan, wait):
                raise


def _room(chan: socket.socket, wait: float) -> bool:
    """Whether ``chan`` has room to send within ``wait`` seconds. poll(), not select(): a worker started while
    the supervisor held a thousand parked clients has its channel numbered above select()'s 1024."""
    poller = select.poll()
    poller.register(chan, select.POLLOUT)
    return bool(poller.poll(wait * 1000))


class Receiver:
    """Reads messages from one channel into a reused buffer; a CONNS comes out as its CONNs, one by one.

    ``count``, when set, is told how many messages have arrived so far (a CONNS counts its CONNs), each
    time a datagram does, before anything is done with it: a worker publishes that on the scoreboard,
    so that if it dies, the supervisor knows which of the connections it sent never arrived (and can
    go elsewhere whole).
    """

    def __init__(self, chan: socket.socket) -> None:
        self.chan = chan
        # Pages of its own, private, that take memory only once a message reaches them: most messages
        # fill the first page of the 64 KiB. A bytearray's is zeroed, and so taken whole, at once: a
        # worker's own 64 KiB, and the supervisor's for each worker.
        self._view = memoryview(mmap.mmap(-1, MAX_MESSAGE, flags=mmap.MAP_PRIVATE))
        self.received = 0
        self.count: Callable[[int], None] | None = None
        self._pending: deque[Message] = deque()  # the rest of a CONNS, not yet taken
        self._probe = select.poll()
        self._probe.register(chan, select.POLLIN)

    @property
    def pending(self) -> bool:
        """Whether messages already received wait here (read them before waiting on the channel)."""
        return bool(self._pending)

    def waiting(self) -> bool:
        """Whether recv() has something to give now: a message here, one in the channel, or its end.
        A poll(0) costs a quarter of a recv() that fails with EAGAIN and the exception it raises, so a
        reader that has taken one message asks this before reading the next."""
        return bool(self._pending) or bool(self._probe.poll(0))

    def recv(self) -> Message | None:
        """The next message; None at EOF. BlockingIOError propagates on a non-blocking channel."""
        if self._pending:
            return self._pending.popleft()
        view = self._view
        nbytes, ancdata, flags, _ = self.chan.recvmsg_into([view], _ANC_SPACE)
        batch = nbytes >= _BATCH.size and view[0] == CONNS
        if nbytes:
            self.received += view[1] if batch else 1
            if self.count is not None:
                self.count(self.received)
        fds = _fds_from(ancdata)
        if flags & _CUT:
            # A cut control message may have dropped fds in flight; a cut payload lost bytes.
            # Either way the fds cannot be trusted: close what did arrive and say so.
            _close_all(fds)
            if flags & _TRUNC:
                raise HandoffError("message truncated (MSG_TRUNC)")
            lost = view[:nbytes]
            if batch:
                raise FdsLost(decode_conns(lost, [-1] * view[1]))
            raise FdsLost([decode(lost)])
        if nbytes == 0 and not fds:
            return None
        try:
            if batch:
                self._pending.extend(decode_conns(view[:nbytes], fds))
                return self._pending.popleft()
            if len(fds) > 1:
                raise HandoffError(f"expected at most one fd, got {len(fds)}")
            msg = decode(view[:nbytes], fds[0] if fds else -1)
            if (msg.kind in (CONN, PARK)) != (msg.fd >= 0):
                raise HandoffError(f"message kind {msg.kind} arrived with {len(fds)} fds")
        except HandoffError:
            _close_all(fds)
            raise
        return msg


def _fds_from(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _FD_SIZE
            fds.extend(array.array("i", data[:usable]))
    return fds


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            socket.close(fd)
