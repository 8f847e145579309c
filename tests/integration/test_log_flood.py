"""Lines a client can cause, against the real sockact: a flood of them is logged as its first few and a
count (sockact.logs.flood), and the server goes on serving meanwhile."""

from __future__ import annotations

import re
import signal
import time

from test_proxy import request, start_proxied, v2_tcp4, whoami

from sockact.logs.flood import BURST, INTERVAL, PROXY_REFUSED

BAD = 500
REFUSED = "; closing it"  # the end of each refused PROXY header's line


def test_a_flood_of_refused_proxy_headers_logs_a_few_and_a_count_and_serving_goes_on(start_sockact):
    server = start_proxied(start_sockact, "--workers", "1", mode="v2")
    began = time.monotonic()
    for n in range(BAD):
        assert request(server.port, b"") == b""  # plain HTTP on a v2 listener: refused, closed
        if n % 50 == 0:  # a well-formed client is served all along
            assert whoami(server.port, v2_tcp4("198.51.100.7", 9))["REMOTE_ADDR"] == "198.51.100.7"
    intervals = 1 + int((time.monotonic() - began) // INTERVAL)  # the flood's, each with its own few lines
    assert server.stop(signal.SIGTERM) == 0  # a worker says what it left out before it exits
    said = server.output()
    logged = said.count(REFUSED)
    counted = [int(n.replace(",", "")) for n in
               re.findall(re.escape(PROXY_REFUSED) + r": \.\.\. and ([\d,]+) more like this in the last", said)]
    assert counted, said[-3000:]
    assert logged <= BURST * intervals, said[-3000:]
    assert logged + sum(counted) == BAD, (logged, counted)


def test_the_count_comes_once_the_interval_is_over_though_no_such_line_comes_again(start_sockact):
    # Both runners, side by side: each takes what is due on its loop's timer tick.
    servers = [start_proxied(start_sockact, "--workers", "1", mode="v2", app=app)
               for app in ("testapps:whoami", "asgiapps:echo")]
    for server in servers:
        for _ in range(BURST + 5):
            assert request(server.port, b"") == b""
    for server in servers:
        said = server.wait_for_log(f"{PROXY_REFUSED}: ... and 5 more like this", timeout=INTERVAL + 10)
        assert said.count(REFUSED) == BURST, said[-3000:]
