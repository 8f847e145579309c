"""A response that ends short of its Content-Length: its client, which waits for the rest, gets a
closed connection, and the operator a line naming the request; one that goes past it is cut there, and
said so too; against the real sockact process, WSGI and ASGI alike."""

from __future__ import annotations

import socket

import pytest
from conftest import raw_exchange

APPS = {"wsgi": "testapps:short_body", "asgi": "asgiapps:short_body"}
# By path: the body the client gets, and what the log says of it (short_body's)
MISSED = {
    "/whole": (b"only this", "the application sent 9 of the 100 body bytes its Content-Length promised"),
    "/pieces": (b"only this", "the application sent 9 of the 100 body bytes its Content-Length promised"),
    "/past": (b"only", "the application gave 5 body bytes more than the 4 its Content-Length promised, dropped"),
    "/past-pieces": (b"only", "the application gave 5 body bytes more than the 4 its Content-Length promised, "
                              "dropped"),
}


@pytest.mark.parametrize("path", sorted(MISSED))
@pytest.mark.parametrize("interface", sorted(APPS))
def test_a_response_short_of_its_content_length_or_past_it_closes_and_is_logged(start_sockact, interface, path):
    body, line = MISSED[path]
    server = start_sockact(APPS[interface], "--workers", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        # Keep-alive asked for, and a second request behind it: neither may be read as the missing bytes, nor
        # bytes past the length as its response.
        answer = raw_exchange(sock, f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\nGET /next HTTP/1.1\r\nHost: t\r\n\r\n"
                              .encode())
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\n" + body), answer
    server.wait_for_log(f"{line}, to GET {path} HTTP/1.1")


@pytest.mark.parametrize("interface", sorted(APPS))
def test_a_head_request_with_the_same_content_length_is_no_short_response(start_sockact, interface):
    server = start_sockact(APPS[interface], "--workers", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        answer = raw_exchange(sock, b"HEAD /whole HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and b"content-length: 100" in answer.lower(), answer
    server.wait_for_log('"HEAD /whole HTTP/1.1"')
    assert "promised, to HEAD" not in server.output()  # (the readiness check's GET / is short, and said)

