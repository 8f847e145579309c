"""The Date and Server fields sockact adds to a response, and an app's own instead: one of each, never
two (a response has one Date, RFC 9110 6.6.1); against the real sockact process, WSGI and ASGI alike."""

from __future__ import annotations

import socket
import time
from email.utils import parsedate_to_datetime

import pytest
from conftest import KeepAliveClient, raw_exchange

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


STATUS_APPS = {"wsgi": "testapps:status_from_path", "asgi": "asgiapps:status_from_path"}


@pytest.mark.parametrize("interface", sorted(STATUS_APPS))
def test_an_interim_status_as_the_apps_answer_is_a_500(start_sockact, interface):
    # A 1xx is never a final response (RFC 9110 15.2): a client reads on for the real one, or, given a
    # 101, takes the connection for another protocol. The app's error: a 500, as for any invalid status.
    server = start_sockact(STATUS_APPS[interface], "--workers", "1")
    for code in (100, 101, 103, 199):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            answer = raw_exchange(sock, f"GET /{code} HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n"
                                  "Connection: close\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 500 ") and answer.count(b"HTTP/1.1 ") == 1, (code, answer)
        assert f"invalid status '{code} " in server.output(), server.output()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        answer = raw_exchange(sock, b"GET /204 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 204 "), answer


@pytest.mark.parametrize("interface", sorted(STATUS_APPS))
def test_a_204_names_no_content_length_even_where_the_app_does(start_sockact, interface):
    # RFC 9110 8.6: a server must not send Content-Length in a 204; the next request on the connection
    # is answered as usual (the engine sends no body for it either way).
    server = start_sockact(STATUS_APPS[interface], "--workers", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        answer = raw_exchange(sock, b"GET /204?length HTTP/1.1\r\nHost: t\r\n\r\nGET /200?length HTTP/1.1\r\n"
                              b"Host: t\r\nConnection: close\r\n\r\n")
    no_content, rest = answer.split(b"\r\n\r\n", 1)
    assert no_content.startswith(b"HTTP/1.1 204 ") and b"content-length" not in no_content.lower(), answer
    assert rest.startswith(b"HTTP/1.1 200 ") and rest.lower().count(b"content-length: 2\r\n") == 1, answer
    assert rest.endswith(b"\r\n\r\nok"), answer


def test_a_wsgi_status_of_its_code_alone_gets_the_usual_reason_phrase(start_sockact):
    # PEP 3333 asks for "200 OK"; gunicorn takes "200" too, and an app that relies on it is not an error.
    server = start_sockact(STATUS_APPS["wsgi"], "--workers", "1")
    for code, line in (("200", b"HTTP/1.1 200 OK\r\n"), ("404", b"HTTP/1.1 404 Not Found\r\n"),
                       ("299", b"HTTP/1.1 299 \r\n")):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            answer = raw_exchange(sock, f"GET /{code}?bare HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                                  .encode())
        assert answer.startswith(line) and answer.endswith(b"\r\n\r\nok"), answer
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        answer = raw_exchange(sock, b"GET /101?bare HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500 "), answer  # a 1xx stays an error, with or without its phrase


@pytest.mark.parametrize("interface", sorted(STATUS_APPS))
def test_the_date_is_the_seconds_on_one_connection(start_sockact, interface):
    # The Date's text is kept for its second: a keep-alive client's later answer has a later one.
    server = start_sockact(STATUS_APPS[interface], "--workers", "1")
    client = KeepAliveClient(server.port)
    try:
        before = time.time()
        first = client.request("/")[1]["date"]
        time.sleep(1.1)
        second = client.request("/")[1]["date"]
    finally:
        client.close()
    assert parsedate_to_datetime(first).timestamp() >= int(before)
    assert parsedate_to_datetime(second).timestamp() > parsedate_to_datetime(first).timestamp(), (first, second)


def test_the_date_of_each_response_on_a_keepalive_connection_is_its_own_second(start_sockact):
    # The Date's second is read inline while it lasts: a response in a later second must carry that second.
    server = start_sockact("sockact.apps.hello:app", "--workers", "1", "--no-access-log")
    client = KeepAliveClient(server.port)
    try:
        for _ in range(3):
            before = time.time()
            date = parsedate_to_datetime(client.request("/")[1]["date"]).timestamp()
            assert int(before) <= date <= time.time(), (before, date)
            time.sleep(1.1 - before % 1)  # into the next second
    finally:
        client.close()
