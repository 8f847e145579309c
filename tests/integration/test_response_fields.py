"""The Date and Server fields sockact adds to a response, and an app's own instead: one of each, never
two (a response has one Date, RFC 9110 6.6.1); against the real sockact process, WSGI and ASGI alike."""

from __future__ import annotations

import socket

import pytest
from conftest import raw_exchange

APPS = {"wsgi": "testapps:own_date_and_server", "asgi": "asgiapps:own_date_and_server"}
APP_DATE = "Mon, 01 Jan 2024 00:00:00 GMT"


def fields(port: int, path: str) -> list[tuple[str, str]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # Twice on one connection: the second answer comes from the engine's kept heads, if any.
        answer = raw_exchange(sock, f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\nGET {path} HTTP/1.1\r\nHost: t\r\n"
                              "Connection: close\r\n\r\n".encode())
    heads = [part.split(b"\r\n\r\n")[0] for part in answer.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert len(heads) == 2, answer
    assert heads[0].replace(b"Connection: close\r\n", b"") == heads[1].replace(b"\r\nConnection: close", b""), heads
    return [tuple(line.decode().split(": ", 1)) for line in heads[1].split(b"\r\n")]  # type: ignore[misc]


@pytest.mark.parametrize("interface", sorted(APPS))
def test_the_apps_own_date_and_server_stand_instead_of_sockacts(start_sockact, interface):
    server = start_sockact(APPS[interface], "--workers", "1")
    for path, date, name in (("/both", APP_DATE, "myapp/1"), ("/date", APP_DATE, "sockact"),
                             ("/server", None, "myapp/1")):
        got = fields(server.port, path)
        dates = [value for key, value in got if key.lower() == "date"]
        servers = [value for key, value in got if key.lower() == "server"]
        assert len(dates) == 1 and (date is None or dates[0] == date), (path, got)
        assert servers == [name], (path, got)
