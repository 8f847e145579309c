"""The acceptor's batch against a real loopback listener: it takes no more than the fd budget allows."""

from __future__ import annotations

import os
import select
import socket

from sockact.acceptor import Acceptor
from sockact.activation import Listener
from sockact.parking import Conn


def test_an_accept_batch_stops_at_the_fd_budget_and_the_rest_wait_in_the_backlog():
    lsock = socket.create_server(("127.0.0.1", 0), backlog=16)
    lsock.setblocking(False)
    routed: list[Conn] = []
    watched: set[socket.socket] = set()
    acceptor = Acceptor([Listener(lsock, "http", owned=True)], routed.append,
                        lambda sock, _handler, _arg: watched.add(sock), watched.discard)
    acceptor.budget = 5
    clients = [socket.create_connection(lsock.getsockname(), timeout=5) for _ in range(8)]
    try:
        acceptor.set_accepting(True, held=2, now=0.0)
        assert watched == {lsock}
        select.select([lsock], [], [], 5)
        acceptor.accept(0)
        assert len(routed) == 3  # 2 held + 3 = the budget; the other 5 stay in the backlog
        assert acceptor.held == 5
        acceptor.set_accepting(True, held=5, now=0.0)
        assert not watched  # at the budget: not watching, so the loop does not spin on the listener
        acceptor.set_accepting(True, held=3, now=0.0)  # two closed: room for two more
        acceptor.accept(0)
        assert len(routed) == 5
    finally:
        for conn in routed:
            os.close(conn.fd)
        for client in clients:
            client.close()
        lsock.close()
