"""core.Selector.ready(): what the supervisor's loop acts on, from the selector it shares with the metrics server."""

from __future__ import annotations

import selectors
import socket

from sockact.supervisor.core import Selector


def test_ready_gives_the_handler_and_argument_of_each_ready_fd_and_only_those():
    selector = Selector()
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        for index, (ours, _) in enumerate(pairs):
            selector.register(ours, selectors.EVENT_READ, (print, index))
        assert selector.ready(0) == []
        pairs[0][1].send(b"x")
        pairs[2][1].send(b"x")
        assert sorted(arg for _, arg in selector.ready(1.0)) == [0, 2]
        selector.unregister(pairs[0][0])
        assert selector.ready(0) == [(print, 2)]
        # writable too: a channel watched for room is handed to its handler like a readable one
        selector.modify(pairs[1][0], selectors.EVENT_READ | selectors.EVENT_WRITE, (print, 1))
        assert sorted(arg for _, arg in selector.ready(0)) == [1, 2]
    finally:
        selector.close()
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
