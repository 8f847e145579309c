"""What the WSGI loop answers itself (a refused request, a 408, the health path) never waits for its client.

The loop thread serves every connection of the worker: a send that waited for room for one client's
answer held all the others. A client that has read none of what went before and left the kernel's
buffer full gets no such wait: its answer goes if it fits, and the connection is closed either way.
The socket is real (a socketpair) with its buffer filled, and the waits are long (send_timeout of an
hour), so an answer that waited would not come back within the test's patience.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from sockact.http import Limits, Site
from sockact.http.events import Request
from sockact.wsgi.server import HTTPConnection, Step

HOUR = 3600.0


@pytest.fixture
def full() -> Iterator[tuple[HTTPConnection, socket.socket]]:
    """A connection whose client has read nothing and whose kernel buffer toward it is full."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            ours.send(b"x" * 65536)
    ours.setblocking(True)
    site = Site(app=None, limits=Limits(), header_timeout=HOUR, io_timeout=HOUR, access_log=False, listener="http",
                health_path=b"/-/health", send_timeout=HOUR)
    yield HTTPConnection(ours, site, peer=None, conn_id=1), theirs
    theirs.close()  # a send still waiting (the bug) ends here: its client is gone
    ours.close()


def _refused(http: HTTPConnection) -> object:
    http.receive(b"NOT HTTP AT ALL\r\n\r\n")
    return http.next_request()


def _head_timed_out(http: HTTPConnection) -> object:
    http.receive(b"GET / HT")
    assert http.next_request() is Step.PARTIAL
    http.head_timed_out()
    return Step.CLOSE


def _health(http: HTTPConnection) -> object:
    http.receive(b"GET /-/health HTTP/1.1\r\nHost: t\r\n\r\n")
    request = http.next_request()
    assert isinstance(request, Request)
    return http.serve(request)


@pytest.mark.parametrize("answer", [_refused, _head_timed_out, _health], ids=["400", "408", "health"])
def test_an_answer_of_the_loops_own_never_waits_for_a_client_that_reads_nothing(full, answer: Callable[..., object]):
    http, _ = full
    outcome: list[object] = []
    loop = threading.Thread(target=lambda: outcome.append(answer(http)), daemon=True)
    loop.start()
    loop.join(10)
    assert outcome, "the loop waited for room in a client's buffer"
    assert outcome[0] in (Step.LINGER, Step.CLOSE, False)  # the connection goes: it is not served on
