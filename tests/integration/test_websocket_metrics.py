"""WebSocket sessions in the metrics of the real sockact, opened and ended by the ``websockets`` client and
by raw sockets, and scraped: the sessions open now, and the sessions ended by how they ended."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest
from test_asgi_limits import ws_handshake
from test_metrics import Samples, scrape, start, value


def ended(samples: Samples, close: str) -> float:
    return value(samples, "sockact_websockets_ended_total", listener="api", close=close)


def opened(samples: Samples) -> float:
    return value(samples, "sockact_websockets_open", listener="api")


def test_open_sessions_and_how_each_ended(start_sockact):
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    server, api, metrics = start(start_sockact, workers=1, app="asgiapps:ws_echo")
    before = scrape(metrics)
    assert opened(before) == 0  # every app listener, before any session
    assert value(before, "sockact_websockets_open", listener="http") == 0
    url = f"ws://127.0.0.1:{api}"
    with contextlib.ExitStack() as stack:
        first, second, third = (stack.enter_context(connect(f"{url}/")) for _ in range(3))
        server.waiting(lambda: opened(scrape(metrics)) == 3, "three sessions open")
        first.close()  # the client's close: 1000
        second.send("close 4001")  # the app's close, with a code of its own
        with pytest.raises(ConnectionClosed):
            second.recv(timeout=10)
        third.send("raise")  # the app fails: 1011
        with pytest.raises(ConnectionClosed):
            third.recv(timeout=10)
    for path in ("/reject", "/deny"):
        with pytest.raises(InvalidStatus):
            connect(f"{url}{path}", open_timeout=10)
    with ws_handshake(api) as vanishing:  # accepted, then gone without a close frame: 1006
        assert vanishing.recv(4096).startswith(b"HTTP/1.1 101 ")
        server.waiting(lambda: opened(scrape(metrics)) == 1, "the raw session open")
    after = server.waiting(lambda: (s := scrape(metrics)) and ended(s, "1006") == 1 and s, "the vanished one ended")
    assert opened(after) == 0
    assert ended(after, "1000") == 1
    assert ended(after, "app") == 1
    assert ended(after, "1011") == 1
    assert ended(after, "rejected") == 1
    assert ended(after, "denied") == 1
    assert ended(after, "lost") == 0
    ends = {labels for name, labels in after if name == "sockact_websockets_ended_total"}
    assert len(ends) == 6  # no label set for what did not happen
    # The durations: of the four sessions that opened.
    assert value(after, "sockact_websocket_duration_seconds_count", listener="api") == 4
    assert value(after, "sockact_websocket_duration_seconds_bucket", listener="api", le="+Inf") == 4
    assert value(after, "sockact_websocket_duration_seconds_sum", listener="api") > 0
    # Not requests: the handshakes are counted as sessions alone.
    assert value(after, "sockact_requests_total", listener="api", method="GET", code="4xx") == 0


def test_a_killed_workers_open_sessions_leave_the_gauge_as_lost(start_sockact):
    from websockets.sync.client import connect

    server, api, metrics = start(start_sockact, workers=1, app="asgiapps:ws_echo")
    with contextlib.ExitStack() as stack:
        for _ in range(2):
            stack.enter_context(connect(f"ws://127.0.0.1:{api}/"))
        server.waiting(lambda: opened(scrape(metrics)) == 2, "two sessions open")
        victim = server.workers()[0]
        os.kill(victim, signal.SIGKILL)
        server.wait_workers(1, without=victim)
        after = server.waiting(lambda: (s := scrape(metrics)) and value(s, "sockact_workers", state="ready") == 1
                               and s, "a replacement worker ready")
        assert opened(after) == 0
        assert ended(after, "lost") == 2
    # The new worker counts its own sessions from there.
    with connect(f"ws://127.0.0.1:{api}/"):
        server.waiting(lambda: opened(scrape(metrics)) == 1, "the new worker's session open")
    final = server.waiting(lambda: (s := scrape(metrics)) and ended(s, "1000") == 1 and s, "its end counted")
    assert opened(final) == 0 and ended(final, "lost") == 2


def test_sessions_a_reload_closes_count_as_1001_not_lost(start_sockact):
    # The old generation's worker closes its sessions with 1001 and counts them before it exits.
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    server, api, metrics = start(start_sockact, "--graceful-timeout", "2", workers=1, app="asgiapps:ws_echo")
    with connect(f"ws://127.0.0.1:{api}/") as ws:
        server.waiting(lambda: opened(scrape(metrics)) == 1, "the session open")
        server.send(signal.SIGHUP)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    server.wait_for_log("reload done")
    after = server.waiting(lambda: (s := scrape(metrics)) and ended(s, "1001") == 1 and s, "the session's end")
    assert opened(after) == 0 and ended(after, "lost") == 0
