"""The same raw requests to gunicorn and to sockact, serving the same echo app: same environ.

sockact serves the echo app inside wsgiref's PEP 3333 validator; gunicorn serves it bare, so
that an environ the validator would refuse (gunicorn's PATH_INFO for ``OPTIONS *``) is still
compared rather than turned into a 500. Each deliberate difference is listed in DIFFERENCES
with its reason (and in docs/http.md).
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path

import pytest
from conftest import Server, base_env, free_port, parse_response, unavailable

REQUESTS = {
    "simple": b"GET /hello?name=world&x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "percent_path": b"GET /a%20b/%C3%A9/%2F?q=%20%C3%A9 HTTP/1.1\r\nHost: h\r\n\r\n",
    "empty_query": b"GET /p? HTTP/1.1\r\nHost: h\r\n\r\n",
    "double_slash": b"GET //double//slash HTTP/1.1\r\nHost: h\r\n\r\n",
    "absolute_form": b"GET http://example.com/abs/path?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "http10": b"GET /old HTTP/1.0\r\nHost: h\r\n\r\n",
    "duplicate_headers": b"GET / HTTP/1.1\r\nHost: h\r\nX-Multi: a\r\nX-Multi: b\r\nAccept: */*\r\n\r\n",
    "header_whitespace": b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad:    padded value   \r\n\r\n",
    "post_length": (b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                    b"Content-Length: 11\r\n\r\na=1&b=2&c=3"),
    "post_chunked": (b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    "post_chunked_ext": (b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5;name=value\r\nhello\r\n0\r\n\r\n"),
    "expect_continue": (b"PUT /put HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
                        b"data"),
    "latin1_header": b"GET / HTTP/1.1\r\nHost: h\r\nX-Latin: caf\xe9\r\n\r\n",
    "delete_method": b"DELETE /item/7 HTTP/1.1\r\nHost: h\r\n\r\n",
    "options_star": b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    "long_header": b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: " + b"v" * 4000 + b"\r\n\r\n",
    "binary_body": (b"POST /bin HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n\x00\xff\r\n"),
}

# name -> (keys that differ on purpose, sockact's values, why). Mirrored in docs/http.md.
DIFFERENCES: dict[str, tuple[set[str], dict, str]] = {
    "duplicate_headers": ({"headers"}, {"headers": {"HTTP_HOST": "h", "HTTP_X_MULTI": "a, b", "HTTP_ACCEPT": "*/*"}},
                          "repeated fields are joined with ', ' as RFC 9110 section 5.3 writes them; "
                          "gunicorn joins with ','"),
    "options_star": ({"path"}, {"path": ""},
                     "for the asterisk-form target gunicorn sets PATH_INFO to '*', which PEP 3333 forbids "
                     "(it must be empty or start with '/'; wsgiref.validate rejects '*'); sockact sets ''"),
}

# Headers each server adds or keeps for itself; neither is part of what the client sent.
IGNORED_HEADERS = {"HTTP_CONNECTION"}


def exchange(port: int, raw: bytes) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)  # the request is complete; servers answer then close
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    # Skip any interim 100 Continue.
    while data.startswith(b"HTTP/1.1 100"):
        data = data.split(b"\r\n\r\n", 1)[1]
    status, headers, body = parse_response(data)
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    assert status == 200, (status, body)
    seen = json.loads(body)
    seen["headers"] = {k: v for k, v in seen["headers"].items() if k not in IGNORED_HEADERS}
    return seen


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2:]
    return out


@pytest.fixture(scope="module")
def servers():
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent))
    if gunicorn is None:
        unavailable("gunicorn is not installed (make test installs it)")
    env = base_env()
    gport, sport = free_port(), free_port()
    g = Server([gunicorn, "--workers", "1", "--bind", f"127.0.0.1:{gport}", "testapps:echo_bare"], gport, env)
    s = Server([sys.executable, "-m", "sockact", "run", "testapps:echo", "--workers", "1",
                "--bind", f"127.0.0.1:{sport}"], sport, env)
    try:
        g.wait_ready()
        s.wait_ready()
        yield g, s
    finally:
        g.stop()
        s.stop()
        g.log.close()
        s.log.close()


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_same_environ_as_gunicorn(servers, name):
    g, s = servers
    skip, expected, _why = DIFFERENCES.get(name, (set(), {}, ""))
    ours, theirs = exchange(s.port, REQUESTS[name]), exchange(g.port, REQUESTS[name])
    for key in set(ours) | set(theirs):
        if key in skip:
            assert ours.get(key) == expected.get(key), f"{name}: sockact's {key} is not the documented one"
            assert theirs.get(key) != ours.get(key), f"{name}: {key} no longer differs; drop it from DIFFERENCES"
        else:
            assert ours.get(key) == theirs.get(key), f"{name}: {key} differs"
