"""The metrics listener of the real sockact, scraped and read with prometheus_client's own parser."""

from __future__ import annotations

import os
import signal
import socket

from conftest import base_env, free_port, http_get, need_module, parse_response, raw_exchange

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    # Imported here, not at the top: the test of a missing prometheus_client must run without it.
    parser = need_module("prometheus_client.parser")
    status, headers, body = http_get(port, "/metrics")
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain; version=")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in parser.text_string_to_metric_families(body.decode()) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def request(port: int, method: str, path: str = "/") -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        raw = f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        return parse_response(raw_exchange(sock, raw.encode()))[0]


def start(start_sockact, *args: str, env: dict[str, str] | None = None, workers: int = 2, app: str = "testapps:echo"):
    """sockact with listeners http (the readiness checks'), api (the tests' requests alone) and metrics."""
    port, api, metrics = free_port(), free_port(), free_port()
    server = start_sockact(app, "--workers", str(workers), "--bind", f"http=127.0.0.1:{port}",
                           "--bind", f"api=127.0.0.1:{api}", "--bind", f"metrics=127.0.0.1:{metrics}", *args,
                           activation=False, wait=False, env=env)
    server.port = port
    server.wait_ready(workers)
    return server, api, metrics


def test_a_scrape_counts_the_requests_sent(start_sockact):
    server, api, metrics = start(start_sockact)
    before = scrape(metrics)
    for _ in range(5):
        assert request(api, "GET") == 200
    for _ in range(2):
        assert request(api, "POST", "/form") == 200
    assert request(api, "PROPFIND") == 200  # a method outside the fixed set counts as "other"
    # The workers publish their counts every few milliseconds.
    after = server.waiting(lambda: (s := scrape(metrics))
                           and value(s, "sockact_request_duration_seconds_count", listener="api") == 8 and s,
                           "the requests counted")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(after, "sockact_requests_total", listener="api", method="GET", code="2xx") == 5
    assert value(after, "sockact_requests_total", listener="api", method="POST", code="2xx") == 2
    assert value(after, "sockact_requests_total", listener="api", method="other", code="2xx") == 1
    assert value(after, "sockact_request_duration_seconds_bucket", listener="api", le="+Inf") == 8
    assert value(after, "sockact_request_duration_seconds_sum", listener="api") > 0
    assert delta("sockact_connections_accepted_total", listener="api") == 8
    assert delta("sockact_connections_accepted_total", listener="http") == 0
    assert delta("sockact_connections_handed_off_total") == 8
    assert delta("sockact_handoff_latency_seconds_count") == 8
    assert value(after, "sockact_workers", state="ready") == 2
    assert value(after, "sockact_requests_in_flight") == 0
    # The scrapes themselves are the supervisor's, not the app's: no label names the metrics listener.
    assert not any(("listener", "metrics") in labels for _, labels in after)
    assert value(after, "sockact_start_time_seconds") > 0


def test_counters_survive_killed_workers(start_sockact):
    # Two deaths, one after the other: each dead worker's counts add to those of the ones before.
    server, api, metrics = start(start_sockact)

    def get_count(samples: Samples) -> float:
        return value(samples, "sockact_requests_total", listener="api", method="GET", code="2xx")

    served = 0
    for death in (1, 2):
        for _ in range(3):
            assert request(api, "GET") == 200
        served += 3
        before = server.waiting(lambda n=served: (s := scrape(metrics)) and get_count(s) == n and s,
                                "the requests counted")
        victim = server.workers()[0]
        os.kill(victim, signal.SIGKILL)
        server.wait_workers(2, without=victim)
        after = server.waiting(lambda: (s := scrape(metrics)) and value(s, "sockact_workers", state="ready") == 2
                               and s, "a replacement worker ready")
        for key, count in before.items():
            if ("listener", "api") in key[1]:
                assert after.get(key) == count, key  # the dead workers' requests are still counted
        assert value(after, "sockact_worker_restarts_total", reason="exit") == death
    assert request(api, "GET") == 200
    server.waiting(lambda: get_count(scrape(metrics)) == served + 1, "the new worker's request added to the old counts")


def test_restarts_by_max_requests_and_reload_and_the_reloads(start_sockact):
    server, api, metrics = start(start_sockact, "--max-requests", "3", workers=1)
    for _ in range(4):
        assert request(api, "GET") == 200
    server.waiting(lambda: value(scrape(metrics), "sockact_worker_restarts_total", reason="max-requests") >= 1,
                   "a restart for max-requests")
    server.send(signal.SIGHUP)
    server.wait_for_log("reload done")
    samples = server.waiting(
        lambda: (s := scrape(metrics)) and value(s, "sockact_worker_restarts_total", reason="reload") == 1 and s,
        "the old generation's worker counted as restarted by the reload")
    assert value(samples, "sockact_reloads_total", result="succeeded") == 1
    assert value(samples, "sockact_reloads_total", result="failed") == 0
    assert value(samples, "sockact_worker_restarts_total", reason="exit") == 0


def test_the_metrics_listener_answers_get_metrics_only(start_sockact):
    _, _, metrics = start(start_sockact, workers=1)
    assert http_get(metrics, "/other")[0] == 404
    assert request(metrics, "POST", "/metrics") == 405
    status, _, body = http_get(metrics, "/")
    assert status == 200 and b"sockact_requests_total" in body
    with socket.create_connection(("127.0.0.1", metrics), timeout=10) as sock:
        assert parse_response(raw_exchange(sock, b"GET /metrics HTTP/1.1\r\nHost: \x01\r\n\r\n"))[0] == 400


def test_without_prometheus_client_the_listener_says_what_to_install(start_sockact, tmp_path):
    shadow = tmp_path / "prometheus_client"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('not installed here')\n")
    env = {"PYTHONPATH": f"{tmp_path}:{base_env()['PYTHONPATH']}"}
    server, api, metrics = start(start_sockact, env=env, workers=1)
    status, _, body = http_get(metrics, "/metrics")
    assert status == 503
    assert b"python3-prometheus-client" in body
    assert "python3-prometheus-client" in server.output()
    assert request(api, "GET") == 200  # the app is served all the same


def test_a_scrape_is_answered_while_every_worker_is_busy(start_sockact, tmp_path):
    server, api, metrics = start(start_sockact, workers=1, app="testapps:slow")
    started, release = tmp_path / "started", tmp_path / "release"
    with socket.create_connection(("127.0.0.1", api), timeout=10) as slow:
        slow.sendall(f"GET /?s=30&until={release}&started={started} HTTP/1.1\r\nHost: t\r\n"
                     "Connection: close\r\n\r\n".encode())
        try:
            server.waiting(started.exists, "the slow request inside the app")
            samples = scrape(metrics)  # the supervisor answers; the only worker is in the app until the release
            assert value(samples, "sockact_requests_in_flight") == 1
            assert value(samples, "sockact_connections", state="worker") == 1
        finally:
            release.touch()


def test_metrics_on_a_unix_socket(start_sockact, tmp_path):
    port, path = free_port(), str(tmp_path / "metrics.sock")
    server = start_sockact("testapps:echo", "--bind", f"http=127.0.0.1:{port}", "--bind", f"metrics=unix:{path}",
                           activation=False, wait=False)
    server.port = port
    server.wait_ready()
    status, _, body = http_get(0, "/metrics", unix=path)
    assert status == 200 and b"sockact_workers" in body


def test_silent_clients_holding_every_slot_do_not_keep_a_scrape_waiting(start_sockact):
    from sockact.supervisor.metricserver import CLIENT_TIMEOUT, MAX_CLIENTS

    _, api, metrics = start(start_sockact, workers=1)
    silent = [socket.create_connection(("127.0.0.1", metrics), timeout=10) for _ in range(MAX_CLIENTS + 4)]
    try:
        # the scrape must not wait for the silent ones' timeout: it takes the place of the oldest
        with socket.create_connection(("127.0.0.1", metrics), timeout=CLIENT_TIMEOUT / 2) as late:
            late.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            status, _, body = parse_response(raw_exchange(late, b""))
        assert status == 200 and b"sockact_workers" in body
        assert silent[0].recv(1) == b""  # the oldest silent one was closed to make room
        assert request(api, "GET") == 200  # and the app was served throughout
    finally:
        for sock in silent:
            sock.close()


def test_answers_never_read_do_not_hold_the_slots(start_sockact):
    from sockact.supervisor.metricserver import MAX_CLIENTS

    _, _, metrics = start(start_sockact, workers=1)
    unread = []
    for _ in range(MAX_CLIENTS * 2):
        sock = socket.create_connection(("127.0.0.1", metrics), timeout=10)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n" * 3)  # pipelined, and never read
        unread.append(sock)
    try:
        status, _, body = http_get(metrics, "/metrics")
        assert status == 200 and b"sockact_workers" in body
    finally:
        for sock in unread:
            sock.close()


def test_the_health_path_is_not_counted_as_the_apps(start_sockact):
    server, api, metrics = start(start_sockact, "--health-path", "/-/health", workers=1)
    assert request(api, "GET", "/-/health") == 200
    assert request(api, "GET", "/") == 200
    samples = server.waiting(lambda: (s := scrape(metrics)) and value(
        s, "sockact_request_duration_seconds_count", listener="api") >= 1 and s, "the app's request counted")
    assert value(samples, "sockact_requests_total", listener="api", method="GET", code="2xx") == 1
    assert value(samples, "sockact_connections_accepted_total", listener="api") == 2


def test_a_memory_recycle_is_counted_by_its_reason(start_sockact):
    server, api, metrics = start(start_sockact, "--max-worker-memory", "100M", workers=1, app="testapps:leak")
    (victim,) = server.workers()
    assert request(api, "GET", "/leak?mb=150") == 200
    server.wait_workers(1, without=victim)
    server.waiting(lambda: value(scrape(metrics), "sockact_worker_restarts_total", reason="memory") == 1,
                   "the recycle counted")
    assert value(scrape(metrics), "sockact_worker_restarts_total", reason="exit") == 0
