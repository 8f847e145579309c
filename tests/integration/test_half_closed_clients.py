"""A client that half-closes (shutdown(SHUT_WR)) after its requests has only said it will send no
more: it still reads. Every request it sent gets its whole answer, from WSGI and ASGI alike.

The ASGI side once took the client's EOF for its leaving, so a response not yet sent when the EOF
was read was dropped (access log status 0), and of pipelined requests only the first was answered.
"""

from __future__ import annotations

import socket

import pytest
from conftest import parse_response, read_to_close

ECHO = {"wsgi": "testapps:echo", "asgi": "asgiapps:echo"}
INTERFACES = ["wsgi", "asgi"]


@pytest.mark.parametrize("interface", INTERFACES)
def test_a_request_with_a_body_then_a_half_close_gets_its_whole_answer(start_sockact, interface):
    server = start_sockact(ECHO[interface], "--workers", "1", workers=1)
    body = b"a" * 1_000_000  # more than one read takes: the EOF is seen while the call is on
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /half HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        sock.shutdown(socket.SHUT_WR)
        answer = read_to_close(sock)
    assert answer, "closed with no answer"
    status, headers, payload = parse_response(answer)
    assert status == 200
    assert len(payload) == int(headers["content-length"])


@pytest.mark.parametrize("count", [3, 1000])
@pytest.mark.parametrize("interface", INTERFACES)
def test_pipelined_requests_then_a_half_close_are_all_answered(start_sockact, interface, count):
    server = start_sockact(ECHO[interface], "--workers", "1", workers=1)
    requests = b"".join(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % n for n in range(count))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(requests)
        sock.shutdown(socket.SHUT_WR)
        answer = read_to_close(sock)
    assert answer.count(b"HTTP/1.1 200 ") == count, answer[:300]
