"""Behind a proxy, against the real sockact: forwarded fields, PROXY protocol headers, the health path."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import struct
import time

import pytest
from conftest import KeepAliveClient, free_port, http_get, parse_response, raw_exchange, wait_until

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_tcp4(client: str, port: int, tlvs: bytes = b"") -> bytes:
    body = socket.inet_aton(client) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 8080) + tlvs
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body


def v2_tcp6(client: str, port: int) -> bytes:
    body = (socket.inet_pton(socket.AF_INET6, client) + socket.inet_pton(socket.AF_INET6, "::1")
            + struct.pack("!HH", port, 8080))
    return V2_SIGNATURE + b"\x21\x21" + struct.pack("!H", len(body)) + body


V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"


def request(port: int, preface: bytes, path: str = "/", headers: str = "", piecewise: bool = False) -> bytes:
    """One request after ``preface`` on a new connection; the raw answer, b"" if the server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        data = preface + f"GET {path} HTTP/1.1\r\nHost: app.test\r\n{headers}Connection: close\r\n\r\n".encode()
        if piecewise:
            for i in range(len(preface)):
                sock.sendall(data[i:i + 1])
                time.sleep(0.001)  # separate segments, so the server reads the header in pieces
            data = data[len(preface):]
        return raw_exchange(sock, data)


def whoami(port: int, preface: bytes, **kwargs: object) -> dict:
    status, _, body = parse_response(request(port, preface, **kwargs))  # type: ignore[arg-type]
    assert status == 200, body
    return json.loads(body)


def start_proxied(start_sockact, *args: str, mode: str = "auto", app: str = "testapps:whoami"):
    server = start_sockact(app, "--proxy-protocol", mode, *args, wait=False)
    server.waiting(lambda: _answer(server.port, V2_LOCAL).startswith(b"HTTP/1.1 200"), "sockact to serve")
    return server


def _answer(port: int, preface: bytes) -> bytes:
    with contextlib.suppress(OSError):
        return request(port, preface)
    return b""


def test_trusted_proxy_sets_client_scheme_and_host(start_sockact):
    server = start_sockact("testapps:whoami")
    status, _, body = parse_response(request(server.port, b"", headers=(
        "X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: shop.example\r\n")))
    seen = json.loads(body)
    assert status == 200
    assert (seen["REMOTE_ADDR"], seen["scheme"], seen["HTTP_HOST"], seen["SERVER_PORT"]) == (
        "198.51.100.7", "https", "shop.example", "443")
    server.wait_for_log('198.51.100.7 - - [')  # the access log names the client too


def test_an_untrusted_peer_cannot_forward(start_sockact):
    server = start_sockact("testapps:whoami", "--forwarded-allow-ips", "10.1.2.3")
    seen = json.loads(parse_response(request(server.port, b"", headers=(
        "X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: https\r\nX_Forwarded_For: 6.6.6.6\r\n")))[2])
    assert seen["REMOTE_ADDR"] == "127.0.0.1" and seen["scheme"] == "http"
    assert seen["HTTP_X_FORWARDED_FOR"] == "198.51.100.7"  # passed through untouched


@pytest.mark.parametrize(("preface", "client"), [
    (b"PROXY TCP4 198.51.100.7 127.0.0.1 51234 8080\r\n", ("198.51.100.7", "51234")),
    (b"PROXY TCP6 2001:db8::7 ::1 443 8080\r\n", ("2001:db8::7", "443")),
    (b"PROXY UNKNOWN\r\n", ("127.0.0.1", None)),
    (v2_tcp4("198.51.100.7", 51234), ("198.51.100.7", "51234")),
    (v2_tcp4("198.51.100.8", 1, tlvs=b"\x01\x00\x02h2\x04\x00\x03abc"), ("198.51.100.8", "1")),
    (v2_tcp6("2001:db8::7", 443), ("2001:db8::7", "443")),
    (V2_LOCAL, ("127.0.0.1", None)),
], ids=["v1-tcp4", "v1-tcp6", "v1-unknown", "v2-tcp4", "v2-tlvs", "v2-tcp6", "v2-local"])
def test_proxy_header_gives_remote_addr(start_sockact, preface, client):
    server = start_proxied(start_sockact)
    for piecewise in (False, True):
        seen = whoami(server.port, preface, piecewise=piecewise)
        assert seen["REMOTE_ADDR"] == client[0]
        if client[1] is not None:
            assert seen["REMOTE_PORT"] == client[1]
        else:
            assert seen["REMOTE_PORT"] != "8080"  # the socket's own peer port


def test_close_clients_with_one_head_each_see_and_log_their_own_client(start_sockact):
    """`Connection: close` clients that send the same request after different PROXY headers, one cut mid-head
    between them, on one worker: each app call and each access line names its own client, none the last one's."""
    server = start_proxied(start_sockact, "--workers", "1")
    clients = [("198.51.100.7", 1111), ("203.0.113.8", 2222), ("198.51.100.7", 3333), ("192.0.2.9", 4444)]
    seen = []
    for i, (client, port) in enumerate(clients):
        if i == 2:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(v2_tcp4("192.0.2.66", 6666) + b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Cut")
        seen.append(whoami(server.port, v2_tcp4(client, port)))
    assert [(s["REMOTE_ADDR"], s["REMOTE_PORT"], s["HTTP_HOST"]) for s in seen] == [
        (client, str(port), "app.test") for client, port in clients]
    assert len({s["pid"] for s in seen}) == 1  # one worker served them all
    server.wait_for_log("192.0.2.9 - - [")
    lines = [line for line in server.output().splitlines() if '"GET / HTTP/1.1" 200' in line]
    named = [line.split(" - - [")[0].rsplit(None, 1)[-1] for line in lines]
    assert named[-4:] == [client for client, _ in clients]


def test_a_repeated_head_after_a_chunked_request_is_logged_with_its_own_forwarded_client(start_sockact):
    """A keep-alive client through a trusted proxy: a head that came twice (its environ kept), a chunked
    request for another client (never kept, so the engine's last head stays the first), then the first head
    again: each access line names its own request's client, none the one before."""
    server = start_sockact("testapps:whoami", "--workers", "1", "--access-logfile", "-", workers=1)
    repeated = b"GET /again HTTP/1.1\r\nHost: test\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n"
    chunked = (b"POST /chunked HTTP/1.1\r\nHost: test\r\nX-Forwarded-For: 203.0.113.8\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    client = KeepAliveClient(server.port)
    try:
        for head in (repeated, repeated, chunked, repeated):
            client.sock.sendall(head)
            assert client.read_response()[0] == 200
    finally:
        client.close()
    server.waiting(lambda: server.output().count('"GET /again HTTP/1.1" 200') == 3, "the access lines")
    lines = [line for line in server.output().splitlines() if "/again HTTP/1.1" in line or "/chunked" in line]
    named = [line.split(" - - [")[0].rsplit(None, 1)[-1] for line in lines]
    assert named == ["198.51.100.7", "198.51.100.7", "203.0.113.8", "198.51.100.7"], lines


def test_a_missing_or_malformed_header_closes_with_one_log_line(start_sockact):
    server = start_proxied(start_sockact, mode="v2")
    assert request(server.port, b"") == b""  # plain HTTP: no header
    assert request(server.port, b"PROXY TCP4 198.51.100.7 127.0.0.1 1 2\r\n") == b""  # v1 on a v2 listener
    server.wait_for_log("no PROXY protocol v2 header")
    assert server.output().count("PROXY protocol") == 2
    assert whoami(server.port, v2_tcp4("198.51.100.7", 9))["REMOTE_ADDR"] == "198.51.100.7"  # still serving
    server.wait_for_log('198.51.100.7 - - [')  # the access log names the client too


def test_a_header_that_never_completes_is_dropped_at_header_timeout(start_sockact):
    server = start_proxied(start_sockact, "--header-timeout", "0.5")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(V2_SIGNATURE[:8])
        assert sock.recv(100) == b""  # closed, no HTTP answer: no HTTP was spoken
    server.wait_for_log("no whole PROXY header within header_timeout")


def parked_and_handed_back(server, preface: bytes) -> list[dict]:
    """The app's JSON for three requests on one connection after ``preface``: the first, one after
    the connection was parked (park_after well below 0.5 s), one after a reload handed it back."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(preface)
        client = KeepAliveClient.__new__(KeepAliveClient)
        client.sock, client.buf = sock, b""
        first = json.loads(client.request("/")[2])
        server.wait_parked(sock)  # the idle connection goes back to the supervisor
        second = json.loads(client.request("/")[2])
        assert second["hops"] > first["hops"]  # it came back from the parking lot
        old = set(server.workers())
        server.send(signal.SIGHUP)  # a new generation: the old workers hand back what they hold
        server.waiting(lambda: not old & set(server.workers()), "the old generation to exit", timeout=20)
        third = json.loads(client.request("/")[2])
        assert third["pid"] not in old
        return [first, second, third]


def test_the_client_travels_when_parked_and_handed_back(start_sockact):
    server = start_proxied(start_sockact, "--workers", "2", "--park-after", "0.05")
    for seen in parked_and_handed_back(server, v2_tcp4("198.51.100.7", 4242)):
        assert (seen["REMOTE_ADDR"], seen["REMOTE_PORT"]) == ("198.51.100.7", "4242")


def test_health_path_is_answered_without_the_app(start_sockact):
    server = start_sockact("testapps:boom", "--health-path", "/-/health", wait=False)
    status, _headers, body = server.waiting(lambda: _get(server.port, "/-/health"), "the health answer")
    assert (status, body) == (200, b"ok\n")
    assert http_get(server.port, "/-/health?x=1")[0] == 200  # the query does not matter
    assert http_get(server.port, "/-/healthz")[0] == 500  # only the exact path; the rest is the app's
    server.wait_for_log("application error on GET /-/healthz")
    assert server.output().count("application error") == 1  # the health answers never called the app


def _get(port: int, path: str, unix: str | None = None):
    """A GET's answer, or None while the server is not there yet."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        return http_get(port, path, timeout=2, unix=unix)
    return None


def test_health_turns_503_during_drain_delay_then_the_server_stops(start_sockact):
    # The drain lasts long enough for every step below to come within it on a loaded machine
    server = start_sockact("testapps:whoami", "--health-path", "/-/health", "--drain-delay", "5", workers=2)
    keep = KeepAliveClient(server.port)
    assert keep.request("/-/health")[0] == 200
    server.send(signal.SIGTERM)
    _status, headers, _ = server.waiting(
        lambda: (answer := _get(server.port, "/-/health")) and answer[0] == 503 and answer, "health to say 503")
    assert headers["connection"] == "close"
    assert http_get(server.port, "/")[0] == 200  # still serving meanwhile
    server.send(signal.SIGHUP)  # a reload in the middle of the drain is refused, and says so
    server.wait_for_log("reload ignored: stopping")
    wait_until(lambda: server.proc.poll() is not None, "the stop after the delay", timeout=15)
    keep.close()


def unix_request(path: str, headers: str) -> dict:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        answer = raw_exchange(sock, f"GET / HTTP/1.1\r\nHost: app.test\r\n{headers}Connection: close\r\n\r\n".encode())
    status, _, body = parse_response(answer)
    assert status == 200, body
    return json.loads(body)


def test_unix_socket_peers_are_trusted_unless_a_listener_says_otherwise(start_sockact, tmp_path):
    conf = tmp_path / "sockact.toml"
    conf.write_text('[listeners.strict]\nforwarded_allow_ips = "127.0.0.1,::1"\n')
    trusting, strict = str(tmp_path / "trusting.sock"), str(tmp_path / "strict.sock")
    server = start_sockact("testapps:whoami", "--config", str(conf), "--bind", f"127.0.0.1:{free_port()}",
                           "--bind", f"trusting=unix:{trusting}", "--bind", f"strict=unix:{strict}",
                           activation=False, wait=False)
    server.waiting(lambda: _get(0, "/", unix=strict), "sockact to serve")
    forwarded = "X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: https\r\n"
    seen = unix_request(trusting, forwarded)
    assert (seen["REMOTE_ADDR"], seen["scheme"]) == ("198.51.100.7", "https")
    seen = unix_request(strict, forwarded)
    assert seen["REMOTE_ADDR"].startswith("unix:pid=") and seen["scheme"] == "http"  # the socket's own peer
    assert seen["HTTP_X_FORWARDED_FOR"] == "198.51.100.7"


def test_a_health_check_with_a_body_on_its_way_never_holds_the_loop(start_sockact):
    server = start_sockact("testapps:whoami", "--health-path", "/-/health", "--threads", "1", "--workers", "1",
                           workers=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as slow:
        slow.sendall(b"GET /-/health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab")  # 998 bytes never come
        status, headers, body = parse_response(raw_exchange(slow, b""))
        assert (status, headers["connection"], body) == (200, "close", b"ok\n")
    assert http_get(server.port, "/")[0] == 200
