"""The supervisor<->worker channel: message format, fd passing, and its failure checks."""

import array
import contextlib
import os
import socket

import pytest

from sockact.errors import HandoffError
from sockact.ipc import handoff


@pytest.mark.parametrize(("family", "peer"), [
    (socket.AF_INET, ("192.0.2.7", 54321)),
    (socket.AF_INET6, ("2001:db8::1", 443)),
    (socket.AF_UNIX, None),
])
def test_encode_decode_round_trip(family, peer):
    msg = handoff.Message(handoff.CONN, conn_id=2**40 + 5, listener=3, family=family, peer=peer,
                          hops=7, data=b"GET / HT", head_started=12345.678)  # a head begun elsewhere keeps its start
    back = handoff.decode(handoff.encode(msg))
    assert back == msg


@pytest.mark.parametrize("ids", [[7], [7, 2**40 + 1, 9], list(range(1, handoff.MAX_DONE + 1))])
def test_one_done_carries_every_connection_closed_in_a_turn(ids):
    msg = handoff.done(ids)
    assert len(handoff.encode(msg)) <= handoff.MAX_MESSAGE
    assert handoff.done_ids(handoff.decode(handoff.encode(msg))) == tuple(ids)


def test_a_failed_worker_says_why_in_one_bounded_message():
    msg = handoff.decode(handoff.encode(handoff.failed("app 'x': importing x raised ValueError: é")))
    assert msg.kind == handoff.FAILED
    assert handoff.failure_reason(msg) == "app 'x': importing x raised ValueError: é"
    long = handoff.decode(handoff.encode(handoff.failed("x" * 10 * handoff.MAX_REASON)))
    assert len(handoff.failure_reason(long)) == handoff.MAX_REASON


def test_a_failed_worker_sends_its_traceback_for_the_supervisor_to_log_keeping_its_end():
    text = "app 'x': boom\nTraceback (most recent call last):\n" + "  frame\n" * 20_000 + "ValueError: boom"
    msg = handoff.decode(handoff.encode(handoff.failed("app 'x': boom", text)))
    assert handoff.failure_reason(msg) == "app 'x': boom"
    explained = handoff.failure_explained(msg)
    assert len(handoff.encode(msg)) <= handoff.MAX_MESSAGE
    assert explained.startswith("[...]\n") and explained.endswith("  frame\nValueError: boom")
    short = handoff.decode(handoff.encode(handoff.failed("app 'x': boom", "app 'x': boom\nTraceback")))
    assert handoff.failure_explained(short) == "app 'x': boom\nTraceback"
    assert handoff.failure_explained(handoff.decode(handoff.encode(handoff.failed("why")))) == "why"


def test_a_done_whose_data_is_not_whole_ids_is_rejected():
    raw = handoff.encode(handoff.done([1, 2]))
    with pytest.raises(HandoffError, match="not connection ids"):
        handoff.decode(raw[:-1])


# The last two: a whole 27-byte header for an AF_INET peer with no address after it, and one that
# announces a PROXY client of an unknown family.
@pytest.mark.parametrize("raw", [b"", b"\x01" * 5, b"\x09" + b"\x00" * 40,
                                 b"\x01\x02" + b"\x00" * 16 + b"\xff" + bytes(8),
                                 b"\x01\x01" + b"\x00" * 16 + b"\x07" + bytes(8)])
def test_malformed_messages_are_rejected(raw):
    with pytest.raises(HandoffError):
        handoff.decode(raw)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_worker_reads_what_its_channel_holds_and_no_further():
    # Everything that waits is taken; then a look (poll), not a read that meets EAGAIN, says nothing more does.
    from sockact.worker.channel import read_channel

    sup, wrk = handoff.channel_pair()
    wrk.setblocking(False)
    pairs = [socket.socketpair() for _ in range(3)]
    for i, (a, _) in enumerate(pairs):
        handoff.send(sup, handoff.Message(handoff.CONN, conn_id=i, family=socket.AF_UNIX, fd=a.fileno()))
    receiver = handoff.Receiver(wrk)
    reads = []
    recv = receiver.recv
    receiver.recv = lambda: reads.append(1) or recv()  # type: ignore[method-assign]
    adopted: list[handoff.Message] = []
    read_channel(receiver, wrk, adopted.append, lambda: None)
    assert [m.conn_id for m in adopted] == [0, 1, 2]
    assert len(reads) == 3
    for msg in adopted:
        os.close(msg.fd)
    for s in (sup, wrk, *(s for pair in pairs for s in pair)):
        s.close()


def test_fd_travels_and_nothing_leaks():
    sup, wrk = handoff.channel_pair()
    receiver = handoff.Receiver(wrk)
    before = fd_count()
    for i in range(2000):
        a, b = socket.socketpair()
        handoff.send(sup, handoff.Message(handoff.CONN, conn_id=i, family=socket.AF_UNIX, fd=a.fileno()))
        a.close()
        msg = receiver.recv()
        assert msg is not None and msg.kind == handoff.CONN and msg.conn_id == i and msg.fd >= 0
        got = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fileno=msg.fd)
        got.sendall(b"x")
        assert b.recv(1) == b"x"
        got.close()
        b.close()
    assert fd_count() == before
    sup.close()
    assert receiver.recv() is None  # EOF
    wrk.close()


def test_the_receiver_says_whether_a_message_or_the_end_waits_without_reading_it():
    sup, wrk = handoff.channel_pair()
    wrk.setblocking(False)
    receiver = handoff.Receiver(wrk)
    assert not receiver.waiting()
    handoff.send(sup, handoff.done([1]))
    handoff.send(sup, handoff.done([2]))
    assert receiver.waiting()
    assert handoff.done_ids(receiver.recv()) == (1,)  # type: ignore[arg-type]
    assert receiver.waiting()
    assert handoff.done_ids(receiver.recv()) == (2,)  # type: ignore[arg-type]
    assert not receiver.waiting()
    sup.close()
    assert receiver.waiting() and receiver.recv() is None  # the end is something to read too
    wrk.close()


def test_message_with_two_fds_is_refused_and_fds_closed():
    sup, wrk = handoff.channel_pair()
    a, b = socket.socketpair()
    before = fd_count()
    socket.send_fds(sup, [handoff.encode(handoff.Message(handoff.CONN))], [a.fileno(), b.fileno()])
    with pytest.raises(HandoffError):
        handoff.Receiver(wrk).recv()
    assert fd_count() == before
    for s in (a, b, sup, wrk):
        s.close()


def test_conn_without_fd_is_refused():
    sup, wrk = handoff.channel_pair()
    sup.send(handoff.encode(handoff.Message(handoff.CONN)))
    with pytest.raises(HandoffError):
        handoff.Receiver(wrk).recv()
    sup.close()
    wrk.close()


TOO_MANY = handoff.MAX_BATCH + 2  # fds: more than any message may carry


def send_too_many_fds(sup: socket.socket, conn_id: int = 0) -> list[tuple[socket.socket, socket.socket]]:
    """A CONN message carrying more fds than the receiver has room for."""
    conns = [socket.socketpair() for _ in range(TOO_MANY)]
    socket.send_fds(sup, [handoff.encode(handoff.Message(handoff.CONN, conn_id))], [a.fileno() for a, _ in conns])
    return conns


def test_kernel_cuts_an_oversized_fd_list_and_delivers_part_of_it():
    # What the next test relies on: with room for one fd, the kernel sets MSG_CTRUNC and still
    # installs the fds that fit (two: CMSG_SPACE pads one 4-byte fd to 8), closing only the rest.
    sup, wrk = handoff.channel_pair()
    conns = send_too_many_fds(sup)
    _, ancdata, flags, _ = wrk.recvmsg(handoff.MAX_MESSAGE, socket.CMSG_SPACE(array.array("i").itemsize))
    fds = [fd for _, _, data in ancdata for fd in array.array("i", data[: len(data) - len(data) % 4])]
    assert flags & socket.MSG_CTRUNC
    assert fds and all(os.fstat(fd) for fd in fds)
    for fd in fds:
        os.close(fd)
    for s in (sup, wrk, *(s for pair in conns for s in pair)):
        s.close()


def test_truncated_control_message_closes_what_arrived():
    sup, wrk = handoff.channel_pair()
    before = fd_count()
    conns = send_too_many_fds(sup)
    for a, _ in conns:
        a.close()  # in flight, the kernel holds them; only the receiver can leak them now
    with pytest.raises(HandoffError, match="truncated"):
        handoff.Receiver(wrk).recv()
    assert fd_count() == before + TOO_MANY  # the peers (b), and nothing that arrived
    for s in (sup, wrk, *(b for _, b in conns)):
        s.close()


def test_a_connection_whose_fd_is_lost_on_its_way_into_a_worker_is_reported_done():
    # The supervisor holds its own copy until a DONE (or a PARK) says the worker is through with it.
    from sockact.worker.channel import read_channel

    sup, wrk = handoff.channel_pair()
    conns = send_too_many_fds(sup, conn_id=9)  # MSG_CTRUNC in the worker: the message came, its fd did not
    wrk.setblocking(False)
    adopted: list[handoff.Message] = []
    read_channel(handoff.Receiver(wrk), wrk, adopted.append, lambda: None)
    assert adopted == []
    sup.setblocking(False)  # no DONE: BlockingIOError, not a wait for ever
    reported = handoff.Receiver(sup).recv()
    assert reported is not None and list(handoff.done_ids(reported)) == [9]
    for s in (sup, wrk, *(s for pair in conns for s in pair)):
        s.close()


def test_the_receiver_counts_each_message_before_it_is_looked_at():
    sup, worker = handoff.channel_pair()
    seen: list[int] = []
    receiver = handoff.Receiver(worker)
    receiver.count = seen.append
    with sup, worker:
        for conn_id in (7, 8):
            r, w = socket.socketpair()
            handoff.send(sup, handoff.Message(handoff.CONN, conn_id, fd=r.fileno()))
            r.close()
            w.close()
        sup.send(b"\xff" * 30)  # a malformed one counts too: it was taken from the channel
        first = receiver.recv()
        assert first is not None and seen == [1]
        os.close(first.fd)
        second = receiver.recv()
        assert second is not None and seen == [1, 2]
        os.close(second.fd)
        with pytest.raises(HandoffError):
            receiver.recv()
        assert seen == [1, 2, 3]
        sup.shutdown(socket.SHUT_WR)
        assert receiver.recv() is None and seen == [1, 2, 3]  # EOF is no message


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_a_message_cut_inside_its_proxy_client_is_refused_and_its_fd_closed(family):
    client = ("192.0.2.9", 4000) if family == socket.AF_INET else ("2001:db8::9", 4000)
    whole = handoff.encode(handoff.Message(handoff.CONN, conn_id=3, family=socket.AF_INET, peer=("192.0.2.7", 80),
                                           proxy=handoff.Header(client)))
    cut = whole[:-3]  # the peer address is whole; the PROXY client's address is not
    with pytest.raises(HandoffError, match="truncated"):
        handoff.decode(cut)
    sup, wrk = handoff.channel_pair()
    a, b = socket.socketpair()
    before = fd_count()
    socket.send_fds(sup, [cut], [a.fileno()])
    with pytest.raises(HandoffError):
        handoff.Receiver(wrk).recv()
    assert fd_count() == before  # the fd that came with it was closed, not leaked
    for s in (a, b, sup, wrk):
        s.close()


def test_a_turn_that_closes_more_than_a_done_holds_reports_every_id():
    from sockact.worker.wsgirunner import Closed

    sup, wrk = handoff.channel_pair()
    sup.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * handoff.MAX_MESSAGE)
    closed = Closed(wrk)
    ids = list(range(1, 2 * handoff.MAX_DONE + 3))  # two full messages and part of a third
    closed.ids.extend(ids)
    closed.report()
    sup.setblocking(False)
    receiver, reported = handoff.Receiver(sup), []
    with contextlib.suppress(BlockingIOError):
        while (msg := receiver.recv()) is not None:
            reported += handoff.done_ids(msg)
    assert reported == ids and closed.ids == []
    sup.close()
    wrk.close()


# -- several connections in one message (CONNS)


def conn_msgs(count: int, data: bytes = b"") -> list[handoff.Message]:
    return [handoff.Message(handoff.CONN, conn_id=100 + i, family=socket.AF_INET, peer=("192.0.2.7", 1000 + i),
                            hops=1, data=data) for i in range(count)]


def test_a_batch_round_trips_in_order_and_one_alone_is_a_plain_conn():
    msgs = conn_msgs(5, b"GET / HTTP/1.1\r\n")
    payload, count = handoff.encode_conns(msgs)
    assert count == 5 and payload[0] == handoff.CONNS
    back = handoff.decode_conns(payload, [10, 11, 12, 13, 14])
    assert [m.fd for m in back] == [10, 11, 12, 13, 14]
    for m in back:
        m.fd = -1
    assert back == msgs
    one, count = handoff.encode_conns(msgs[:1])
    assert count == 1 and handoff.decode(one) == msgs[0]


def test_a_batch_stops_at_max_batch_and_at_a_messages_room():
    assert handoff.encode_conns(conn_msgs(handoff.MAX_BATCH + 5))[1] == handoff.MAX_BATCH
    big = conn_msgs(3, b"x" * (handoff.MAX_DATA // 2))  # two of these fill a message
    payload, count = handoff.encode_conns(big)
    assert count == 1 and payload[0] == handoff.CONN  # the second would not fit with its framing
    small = conn_msgs(1, b"x" * 100) + big
    payload, count = handoff.encode_conns(small)
    assert count == 2 and len(payload) <= handoff.MAX_MESSAGE


@pytest.mark.parametrize(("cut", "says"), [("fds", "arrived with 2 fds"), ("cut", "cut short"),
                                           ("trailing", "after the last"), ("kind", "of kind 2"),
                                           ("count", "bad CONNS")])
def test_a_malformed_batch_raises_handoff_error(cut, says):
    payload, _ = handoff.encode_conns(conn_msgs(3))
    fds = [5, 6, 7]
    if cut == "fds":
        fds = [5, 6]  # its records say three
    elif cut == "cut":
        payload = payload[:-4]
    elif cut == "trailing":
        payload += b"\0"
    elif cut == "kind":  # a record that is not a CONN
        records = [handoff.encode(m) for m in conn_msgs(2)] + [handoff.encode(handoff.Message(handoff.PARK, 1))]
        payload = bytes([handoff.CONNS, 3]) + b"".join(len(r).to_bytes(4, "big") + r for r in records)
    elif cut == "count":
        payload = bytes([handoff.CONNS, handoff.MAX_BATCH + 1]) + payload[2:]
    with pytest.raises(HandoffError, match=says):
        handoff.decode_conns(payload, fds)


def pairs(count: int) -> list[tuple[socket.socket, socket.socket]]:
    return [socket.socketpair() for _ in range(count)]


def test_a_batch_travels_through_the_receiver_one_message_at_a_time_and_counts_each():
    sup, wrk = handoff.channel_pair()
    wrk.setblocking(False)
    receiver = handoff.Receiver(wrk)
    seen: list[int] = []
    receiver.count = seen.append
    socks = pairs(4)
    before = fd_count()
    msgs = conn_msgs(4)
    for msg, (a, _) in zip(msgs, socks, strict=True):
        msg.fd = a.fileno()
    assert handoff.send_conns(sup, msgs) == 4
    got = []
    while (msg := receiver.recv()) is not None:
        got.append(msg)
        if not receiver.pending:
            break
    assert [m.conn_id for m in got] == [m.conn_id for m in msgs] and seen == [4]  # counted on arrival, whole
    for msg, (_, b) in zip(got, socks, strict=True):  # each fd is the connection its record names
        os.write(msg.fd, b"%d" % msg.conn_id)
        assert b.recv(10) == b"%d" % msg.conn_id
        os.close(msg.fd)
    with pytest.raises(BlockingIOError):
        receiver.recv()
    assert fd_count() == before
    for s in (sup, wrk, *(s for pair in socks for s in pair)):
        s.close()


@pytest.mark.parametrize("fds", [2, 4])
def test_a_batch_whose_fds_disagree_with_its_records_closes_every_fd(fds):
    sup, wrk = handoff.channel_pair()
    socks = pairs(fds)
    payload, _ = handoff.encode_conns(conn_msgs(3))
    socket.send_fds(sup, [payload], [a.fileno() for a, _ in socks])
    for a, _ in socks:
        a.close()  # only the receiver's copies keep them open now
    before = fd_count()
    with pytest.raises(HandoffError, match="3 connections arrived with"):
        handoff.Receiver(wrk).recv()
    assert fd_count() == before  # none leaked
    for _, b in socks:
        assert b.recv(1) == b""  # closed: the peer sees the end
        b.close()
    sup.close()
    wrk.close()


def test_a_cut_batch_closes_every_fd():
    sup, wrk = handoff.channel_pair()
    socks = pairs(3)
    payload, _ = handoff.encode_conns(conn_msgs(3))
    socket.send_fds(sup, [payload[:-5]], [a.fileno() for a, _ in socks])
    for a, _ in socks:
        a.close()
    before = fd_count()
    with pytest.raises(HandoffError, match="cut short"):
        handoff.Receiver(wrk).recv()
    assert fd_count() == before
    for s in (sup, wrk, *(b for _, b in socks)):
        s.close()


def test_a_batch_whose_fds_are_cut_is_reported_done_whole():
    # MSG_CTRUNC: which fd is whose cannot be told, so every connection of the batch is lost (the
    # supervisor's own copies carry on), and the worker says so in one DONE.
    from sockact.worker.channel import read_channel

    sup, wrk = handoff.channel_pair()
    socks = pairs(3)
    payload, _ = handoff.encode_conns(conn_msgs(3))
    wrk.setblocking(False)
    sup.setblocking(False)
    socket.send_fds(sup, [payload], [a.fileno() for a, _ in socks])
    receiver = handoff.Receiver(wrk)
    before = fd_count()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(handoff, "_ANC_SPACE", socket.CMSG_SPACE(4))  # room for fewer fds than came
        adopted: list[handoff.Message] = []
        read_channel(receiver, wrk, adopted.append, lambda: None)
    assert adopted == [] and fd_count() == before
    reported = handoff.Receiver(sup).recv()
    assert reported is not None and list(handoff.done_ids(reported)) == [100, 101, 102]
    for s in (sup, wrk, *(s for pair in socks for s in pair)):
        s.close()


def test_read_channel_takes_the_rest_of_a_batch_past_its_own_bound(monkeypatch):
    # The channel does not wake the loop again for connections already received: read_channel
    # ends only at the end of a batch, whatever its own bound.
    from sockact.worker import channel

    monkeypatch.setattr(channel, "BATCH", 2)
    sup, wrk = handoff.channel_pair()
    wrk.setblocking(False)
    socks = pairs(5)
    msgs = conn_msgs(5)
    for msg, (a, _) in zip(msgs, socks, strict=True):
        msg.fd = a.fileno()
    handoff.send_conns(sup, msgs)
    adopted: list[handoff.Message] = []
    channel.read_channel(handoff.Receiver(wrk), wrk, adopted.append, lambda: None)
    assert [m.conn_id for m in adopted] == [100, 101, 102, 103, 104]
    for msg in adopted:
        os.close(msg.fd)
    for s in (sup, wrk, *(s for pair in socks for s in pair)):
        s.close()


@pytest.mark.parametrize("ids", [[7], [7, 8, 9], list(range(1, handoff.MAX_DONE + 1))])
def test_a_done_encoded_without_a_message_is_the_same_datagram(ids):
    assert handoff.encode_done(ids) == handoff.encode(handoff.done(ids))
    assert handoff.done_ids(handoff.decode(handoff.encode_done(ids))) == tuple(ids)
