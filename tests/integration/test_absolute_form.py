"""A request in absolute form names its host in the target: RFC 9112 3.2.2 says the server MUST ignore
the Host field then and use the target's authority. WSGI, ASGI and the access log all see that host."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

from conftest import parse_response, raw_exchange
from test_logging import wait_for_text

ABSOLUTE = b"GET http://a.example/x?y=1 HTTP/1.1\r\nHost: b.example\r\n\r\n"
# The same fields after an origin-form line: the Host field counts again.
ORIGIN = b"GET /x?y=1 HTTP/1.1\r\nHost: b.example\r\n\r\n"


def exchange(port: int, *heads: bytes) -> list[dict]:
    """Each head on one keep-alive connection, one at a time: the JSON bodies of their answers."""
    seen = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for head in heads:
            sock.sendall(head)
            data = b""
            while True:
                data += sock.recv(65536)
                status, fields, body = parse_response(data)
                if b"\r\n\r\n" in data and len(body) >= int(fields.get("content-length", 0)):
                    break
            assert status == 200, data
            seen.append(json.loads(body))
    return seen


def test_wsgi_takes_the_host_from_an_absolute_target(start_sockact, tmp_path: Path):
    log = tmp_path / "access.json"
    server = start_sockact("testapps:whoami", "--workers", "1", "--access-logfile", str(log),
                           "--access-logformat", "json")
    absolute, origin, with_port, userinfo = exchange(
        server.port, ABSOLUTE, ORIGIN, b"GET http://a.example:8080/ HTTP/1.1\r\nHost: b.example:81\r\n\r\n",
        b"GET http://user:pw@[::1]:8081/ HTTP/1.1\r\nHost: b.example\r\n\r\n")
    assert (absolute["HTTP_HOST"], absolute["SERVER_NAME"], absolute["SERVER_PORT"]) == ("a.example", "a.example", "80")
    assert (origin["HTTP_HOST"], origin["SERVER_NAME"]) == ("b.example", "b.example")
    assert (with_port["HTTP_HOST"], with_port["SERVER_NAME"], with_port["SERVER_PORT"]) == \
        ("a.example:8080", "a.example", "8080")
    assert (userinfo["HTTP_HOST"], userinfo["SERVER_NAME"], userinfo["SERVER_PORT"]) == ("[::1]:8081", "[::1]", "8081")
    text = wait_for_text(log.read_text, r'"host":"\[::1\]:8081"')
    hosts = [json.loads(line)["host"] for line in text.splitlines()][-4:]  # after the readiness probe's
    assert hosts == ["a.example", "b.example", "a.example:8080", "[::1]:8081"]


def test_wsgi_absolute_target_without_a_host_field(start_sockact):
    server = start_sockact("testapps:whoami", "--workers", "1")
    (seen,) = exchange(server.port, b"GET http://a.example/ HTTP/1.0\r\n\r\n")
    assert (seen["HTTP_HOST"], seen["SERVER_NAME"]) == ("a.example", "a.example")


def test_an_absolute_target_with_an_empty_authority_is_refused(start_sockact):
    server = start_sockact("testapps:whoami", "--workers", "1")
    for target in (b"http:///x", b"http://user@/x"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            answer = raw_exchange(sock, b"GET " + target + b" HTTP/1.1\r\nHost: b.example\r\n\r\n")
        assert re.match(rb"HTTP/1\.1 400 ", answer), (target, answer)


def test_asgi_sees_the_targets_host(start_sockact, tmp_path: Path):
    log = tmp_path / "access.log"
    server = start_sockact("asgiapps:echo", "--workers", "1", "--access-logfile", str(log),
                           "--access-logformat", "%(h)s %({host}i)s %(r)s")
    absolute, origin = exchange(server.port, ABSOLUTE, ORIGIN)
    assert ["host", "a.example"] in absolute["headers"] and ["host", "b.example"] not in absolute["headers"]
    assert (absolute["path"], absolute["query_string"]) == ("/x", "y=1")
    assert absolute["server"] == ["127.0.0.1", server.port]  # the socket's, as for any request
    assert ["host", "b.example"] in origin["headers"]
    text = wait_for_text(log.read_text, r"b\.example GET /x")
    assert "127.0.0.1 a.example GET http://a.example/x?y=1 HTTP/1.1" in text.splitlines()
