"""Bytes that cannot begin an HTTP request are refused as they come, not at header_timeout.

The commonest case is a TLS ClientHello sent to the plain-HTTP port (an https:// URL for an http
listener): its first byte is no method's. docs/http.md answers "a method httptools does not know"
with a 400, and httptools refuses such bytes at the first one. Today the engine waits for the end
of a head that will never come, and answers 408 after header_timeout (10 s by default), holding
the connection meanwhile; a request line of garbage ended by CRLF CRLF is refused at once.

Fails today (strict xfail); remove the mark once fixed.
"""

from __future__ import annotations

import socket
import time

import pytest
from conftest import read_to_close

CLIENT_HELLO = bytes.fromhex("160301020001000001fc0303") + bytes(40)  # the start of one, no CRLF anywhere


@pytest.mark.xfail(strict=True, reason="the head is parsed only once it is whole, so garbage waits for header_timeout")
@pytest.mark.parametrize("interface", ["testapps:echo", "asgiapps:echo"])
def test_a_tls_client_hello_on_the_http_port_gets_a_400_at_once(start_sockact, interface):
    server = start_sockact(interface, "--workers", "1", "--header-timeout", "5", workers=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(CLIENT_HELLO)
        started = time.monotonic()
        answer = read_to_close(sock)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:60]
    assert waited < 2.5, f"answered after {waited:.1f}s"
