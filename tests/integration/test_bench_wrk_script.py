"""The benchmark's wrk script (bench/wrk_report.lua) against the real sockact: what `make bench` reads from
it in mixed mode, where wrk runs a thread per connection."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from bench import load, report


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_mixed_mode_times_each_request_and_sums_each_connections_rate_over_its_own_span(start_sockact):
    server = start_sockact("bench.apps:app", "--workers", "2", "--max-threads", "4", activation=False)
    mixed = next(s for s in load.scenarios() if s.key == "mixed")
    result = load.run_wrk(dataclasses.replace(mixed, threads=4, connections=4), server.port, 1.0)
    assert "error" not in result, result
    timed = len(result["fast_us"]) + len(result["slow_us"])
    assert timed == result["requests"] > 0
    assert 0 < len(result["slow_us"]) <= timed // load.SLOW_EVERY + 4  # every tenth on each connection
    # Every connection's span lies within wrk's duration, give or take its thread's start, so the sum
    # of their rates is no lower than requests / duration; and the report takes it.
    naive = result["requests"] / (result["duration_us"] / 1e6)
    assert result["span_req_s"] >= 0.98 * naive
    assert report.throughput(result) == result["span_req_s"]
