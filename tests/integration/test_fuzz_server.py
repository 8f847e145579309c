"""The running server fuzzed over real sockets: no worker dies, no 5xx, no connection left hanging.

SOCKACT_FUZZ_CASES sets the number of cases (20,000 in CI) and SOCKACT_FUZZ_SEED the seed;
tools/soak.py runs the longer version documented in docs/robustness.md.
"""

from __future__ import annotations

import os

from conftest import http_get
from netfuzz import cases, throw

CASES = int(os.environ.get("SOCKACT_FUZZ_CASES", "20000"))
SEED = int(os.environ.get("SOCKACT_FUZZ_SEED", "20261126"))


def test_fuzzed_requests_kill_no_worker_and_get_no_5xx(start_sockact):
    # A client that stops inside a body holds an app thread until --timeout: threads and short
    # timeouts keep the few that do from holding up the rest.
    server = start_sockact("testapps:echo", "--workers", "2", "--threads", "4", "--header-timeout", "2",
                           "--keepalive", "2", "--timeout", "2", "--no-access-log", workers=2)
    workers = sorted(server.workers())
    tally = throw(server.port, CASES, cases(SEED))
    print(tally.summary())
    assert tally.cases == CASES
    assert (tally.hangs, tally.server_errors) == (0, 0), (tally.summary(), tally.examples[:5])
    assert sum(n for code, n in tally.statuses.items() if 200 <= code < 300) > CASES // 20  # the valid ones served
    assert sorted(server.workers()) == workers
    assert server.proc.poll() is None
    assert http_get(server.port, "/")[0] == 200
    assert "Traceback" not in server.output()
