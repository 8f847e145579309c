"""A worker's outbox: connections its full channel cannot take yet go out later, in the order given."""

from __future__ import annotations

import socket

from sockact.ipc import handoff
from sockact.policy.parking import Conn
from sockact.supervisor.workers import WorkerProcess


def test_a_new_connection_waits_behind_those_queued_for_room():
    sup, wrk = handoff.channel_pair()
    sup.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # a channel that fills after a few messages
    w = WorkerProcess(pid=0, chan=sup, slot=0, generation=0, threads=1)
    a, b = socket.socketpair()
    receiver = handoff.Receiver(wrk)
    given = 0

    def give() -> bool:
        nonlocal given
        given += 1
        return w.give(Conn(given, a.fileno(), 0, socket.AF_UNIX, None, data=b"x" * 500))

    received: list[int] = []

    def take(count: int) -> None:
        for _ in range(count):
            msg = receiver.recv()
            assert msg is not None
            socket.close(msg.fd)
            received.append(msg.conn_id)

    try:
        while give():
            assert given < 10000, "the channel never filled"
        assert len(w.outbox) == 1
        take(3)  # the worker reads: the channel has room again, the outbox not yet flushed
        assert not give()  # the newcomer queues behind the one already waiting, though it would fit
        assert [c.id for c in w.outbox] == [given - 1, given]
        assert w.flush()
        wrk.setblocking(False)
        while True:
            try:
                take(1)
            except BlockingIOError:
                break
        assert received == list(range(1, given + 1))  # every one, in the order given
    finally:
        w.take_holding(received=0)
        for s in (a, b, sup, wrk):
            s.close()
