"""Bytes that cannot begin an HTTP request are refused as they come, not at header_timeout.

The commonest case is a TLS ClientHello sent to the plain-HTTP port (an https:// URL for an http
listener): its first byte is no method's. docs/http.md answers a method that is not a token with a
400; the engine checks a method's bytes as they come, so such a client is answered at once instead
of being held until header_timeout.
"""

from __future__ import annotations

import socket
import time

import pytest
from conftest import read_to_close

CLIENT_HELLO = bytes.fromhex("160301020001000001fc0303") + bytes(40)  # the start of one, no CRLF anywhere


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
