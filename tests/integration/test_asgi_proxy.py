"""An ASGI app behind a proxy, against the real sockact: PROXY headers, forwarded fields, the health
path under drain_delay, and the metrics counts, as test_proxy.py and test_metrics.py check them for WSGI."""

from __future__ import annotations

import signal
import socket

import pytest
from conftest import KeepAliveClient, http_get, wait_until
from test_metrics import request as metrics_request
from test_metrics import scrape, start, value
from test_proxy import V2_LOCAL, _get, parked_and_handed_back, request, v2_tcp4, v2_tcp6, whoami
from test_proxy import start_proxied as proxied


def start_proxied(start_sockact, *args: str, mode: str = "auto"):
    return proxied(start_sockact, *args, mode=mode, app="asgiapps:echo")


@pytest.mark.parametrize(("preface", "client"), [
    (b"PROXY TCP4 198.51.100.7 127.0.0.1 51234 8080\r\n", ["198.51.100.7", 51234]),
    (b"PROXY TCP6 2001:db8::7 ::1 443 8080\r\n", ["2001:db8::7", 443]),
    (b"PROXY UNKNOWN\r\n", None),
    (v2_tcp4("198.51.100.7", 51234), ["198.51.100.7", 51234]),
    (v2_tcp6("2001:db8::7", 443), ["2001:db8::7", 443]),
    (V2_LOCAL, None),
], ids=["v1-tcp4", "v1-tcp6", "v1-unknown", "v2-tcp4", "v2-tcp6", "v2-local"])
def test_a_proxy_header_gives_the_scope_client(start_sockact, preface, client):
    server = start_proxied(start_sockact)
    for piecewise in (False, True):
        scope = whoami(server.port, preface, piecewise=piecewise)
        if client is None:
            assert scope["client"][0] == "127.0.0.1" and scope["client"][1] != 8080  # the socket's own peer
        else:
            assert scope["client"] == client


def test_a_missing_malformed_or_unfinished_header_closes_the_connection(start_sockact):
    server = start_proxied(start_sockact, "--header-timeout", "0.5", mode="v2")
    assert request(server.port, b"") == b""  # plain HTTP: no header
    assert request(server.port, b"PROXY TCP4 198.51.100.7 127.0.0.1 1 2\r\n") == b""  # v1 on a v2 listener
    server.wait_for_log("no PROXY protocol v2 header")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(v2_tcp4("198.51.100.7", 9)[:8])
        assert sock.recv(100) == b""  # closed, no HTTP answer: no HTTP was spoken
    server.wait_for_log("no whole PROXY header within header_timeout")
    assert whoami(server.port, v2_tcp4("198.51.100.7", 9))["client"] == ["198.51.100.7", 9]  # still serving
    server.wait_for_log('198.51.100.7 - - [')  # the access log names the client too


def test_the_client_travels_when_parked_and_handed_back(start_sockact):
    server = start_proxied(start_sockact, "--workers", "2", "--park-after", "0.05")
    for scope in parked_and_handed_back(server, v2_tcp4("198.51.100.7", 4242)):
        assert scope["client"] == ["198.51.100.7", 4242]


FORWARDED = "X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: shop.example\r\n"


def test_a_trusted_proxy_sets_client_scheme_and_server(start_sockact):
    server = start_sockact("asgiapps:echo")
    scope = whoami(server.port, b"", headers=FORWARDED)
    assert (scope["client"], scope["scheme"], scope["server"]) == (["198.51.100.7", 0], "https", ["shop.example", 443])
    assert ["host", "shop.example"] in scope["headers"]
    server.wait_for_log('198.51.100.7 - - [')  # the access log names the client too
    rfc = whoami(server.port, b"", headers='Forwarded: for="198.51.100.8:4711";proto=https;host="a.test:8443"\r\n')
    assert (rfc["client"], rfc["server"]) == (["198.51.100.8", 4711], ["a.test", 8443])


def test_an_untrusted_peer_cannot_forward(start_sockact):
    server = start_sockact("asgiapps:echo", "--forwarded-allow-ips", "10.1.2.3")
    scope = whoami(server.port, b"", headers=FORWARDED)
    assert scope["client"][0] == "127.0.0.1" and scope["scheme"] == "http"
    assert scope["server"] == ["127.0.0.1", server.port]
    assert ["x-forwarded-for", "198.51.100.7"] in scope["headers"]  # passed through untouched


def test_the_health_path_is_answered_without_the_app_and_says_503_while_draining(start_sockact):
    # The drain lasts long enough for every step below to come within it on a loaded machine
    server = start_sockact("asgiapps:boom_before", "--health-path", "/-/health", "--drain-delay", "5", workers=2)
    keep = KeepAliveClient(server.port)
    try:
        status, headers, body = keep.request("/-/health")
        assert (status, body, headers["cache-control"]) == (200, b"ok\n", "no-store")
        assert keep.request("/-/health?probe=1")[0] == 200  # the same connection, the query ignored
        assert http_get(server.port, "/-/healthz")[0] == 500  # only the exact path; the rest is the app's
        server.send(signal.SIGTERM)
        _status, headers, body = server.waiting(
            lambda: (answer := _get(server.port, "/-/health")) and answer[0] == 503 and answer, "health to say 503")
        assert headers["connection"] == "close" and body == b"stopping\n"
        assert http_get(server.port, "/-/healthz")[0] == 500  # the app still serves meanwhile
        wait_until(lambda: server.proc.poll() is not None, "the stop after the delay", timeout=15)
    finally:
        keep.close()
    assert "application error on GET /-/health " not in server.output()  # the health answers never called the app
    assert server.output().count("application error on GET /-/healthz") == 2


def test_the_metrics_count_asgi_requests_and_not_the_health_path(start_sockact):
    server, api, metrics = start(start_sockact, "--health-path", "/-/health", app="asgiapps:echo")
    for _ in range(3):
        assert metrics_request(api, "GET") == 200
    assert metrics_request(api, "POST", "/form") == 200
    assert metrics_request(api, "PROPFIND") == 200
    assert metrics_request(api, "GET", "/-/health") == 200
    samples = server.waiting(lambda: (s := scrape(metrics))
                             and value(s, "sockact_request_duration_seconds_count", listener="api") == 5 and s,
                             "the requests counted")
    assert value(samples, "sockact_requests_total", listener="api", method="GET", code="2xx") == 3
    assert value(samples, "sockact_requests_total", listener="api", method="POST", code="2xx") == 1
    assert value(samples, "sockact_requests_total", listener="api", method="other", code="2xx") == 1
    assert value(samples, "sockact_request_duration_seconds_bucket", listener="api", le="+Inf") == 5
    assert value(samples, "sockact_request_duration_seconds_sum", listener="api") > 0
    assert value(samples, "sockact_connections_accepted_total", listener="api") == 6


def test_the_access_log_names_each_requests_client_on_one_connection(start_sockact):
    # The connection's client is found once, and its lines reuse it: a trusted proxy's request in between
    # names its own client, and the next plain request the connection's again.
    server = start_sockact("asgiapps:echo")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        client = KeepAliveClient.__new__(KeepAliveClient)
        client.sock, client.buf = sock, b""
        for path, extra in (("/who-1", ""), ("/who-2", "X-Forwarded-For: 198.51.100.9\r\n"), ("/who-3", "")):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n".encode())
            assert client.read_response()[0] == 200
    log = server.wait_for_log('"GET /who-3 HTTP/1.1" 200')
    for path, remote in (("/who-1", "127.0.0.1"), ("/who-2", "198.51.100.9"), ("/who-3", "127.0.0.1")):
        [line] = [line for line in log.splitlines() if f'"GET {path} HTTP/1.1" 200' in line]
        assert line.startswith(f"{remote} - - [")
