"""The access log and the error records of the real sockact process: targets, fields, escaping."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest
from conftest import KeepAliveClient, base_env, free_port, http_get

# A path that decodes to CR, LF, ESC and NUL: a log line that quotes it must not break.
HOSTILE_PATH = "/hang%0d%0aFORGED%20CRITICAL%1b[31m%00"
FORGED = re.compile(r"[\r\x1b\x00]|\nFORGED")


def wait_for_text(read, pattern: str, timeout: float = 10.0) -> str:
    """Poll ``read()`` until ``pattern`` matches; returns the text."""
    deadline = time.monotonic() + timeout
    while True:
        text = read()
        if re.search(pattern, text):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not found in:\n{text}")
        time.sleep(0.05)


def raw_request(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_access_logfile_gets_gunicorns_format_with_the_client_fields(start_sockact, tmp_path: Path):
    path = tmp_path / "access.log"
    server = start_sockact("testapps:pid", "--access-logfile", str(path))
    raw_request(server.port, b"GET /x?y=1 HTTP/1.1\r\nHost: h.test\r\nUser-Agent: ua/1\r\nReferer: http://r/\r\n"
                             b"Connection: close\r\n\r\n")
    text = wait_for_text(path.read_text, r"GET /x\?y=1")
    line = next(ln for ln in text.splitlines() if "/x?y=1" in ln)
    assert re.fullmatch(r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:[\d:]{8} [+-]\d{4}\] "GET /x\?y=1 HTTP/1\.1" 200 \d+ '
                        r'"http://r/" "ua/1"', line), line
    assert "GET /x?y=1" not in server.output()  # the file only


def test_each_request_on_a_keepalive_connection_gets_its_own_access_line(start_sockact, tmp_path: Path):
    # The entry's text is kept while the request repeats: a request that differs must not get the last one's,
    # whether the app answers it or the worker does (the health path).
    path = tmp_path / "access.log"
    server = start_sockact("testapps:pid", "--workers", "1", "--access-logfile", str(path), "--health-path", "/hz")
    client = KeepAliveClient(server.port)
    try:
        for target in ("/a", "/a", "/hz", "/b?q=1", "/a"):
            assert client.request(target)[0] == 200
    finally:
        client.close()
    text = wait_for_text(path.read_text, r'GET /b\?q=1 HTTP/1\.1".*\n.*"GET /a HTTP')  # the last line is written
    targets = re.findall(r'"GET (\S+) HTTP/1\.1"', text)
    assert targets[-5:] == ["/a", "/a", "/hz", "/b?q=1", "/a"], text  # after the readiness probe's


@pytest.mark.parametrize("app", ["testapps:pid", "asgiapps:echo"])
def test_a_quick_stop_keeps_the_access_lines_of_the_requests_answered(start_sockact, tmp_path: Path, app: str):
    # Ctrl-C reaches every process of the group. A worker writes its lines once idle, or every 0.1 s while busy,
    # and its quick exit lost those of the requests it had just answered.
    path = tmp_path / "access.log"
    server = start_sockact(app, "--workers", "1", "--access-logfile", str(path))
    client = KeepAliveClient(server.port)
    try:
        for i in range(21):  # the last one's line may still be on its way when Ctrl-C comes: not counted
            assert client.request(f"/n{i}")[0] == 200
        os.killpg(server.pid, signal.SIGINT)
        assert server.proc.wait(15) == 0
    finally:
        client.close()
    assert re.findall(r'"GET /n(\d+) ', path.read_text())[:20] == [str(i) for i in range(20)]


def test_json_lines(start_sockact, tmp_path: Path):
    path = tmp_path / "access.json"
    server = start_sockact("testapps:pid", "--access-logfile", str(path), "--access-logformat", "json")
    http_get(server.port, "/j?k=v")
    text = wait_for_text(path.read_text, r'"path":"/j"')
    record = next(json.loads(ln) for ln in text.splitlines() if '"/j"' in ln)
    assert (record["method"], record["query"], record["status"], record["protocol"]) == ("GET", "k=v", 200, "HTTP/1.1")
    assert record["remote_addr"] == "127.0.0.1" and record["host"] == "test" and record["bytes"] > 0


def test_stderr_access_lines_have_a_timestamp(start_sockact):
    server = start_sockact("testapps:pid", "--access-logfile", "-")
    http_get(server.port, "/stamped")
    wait_for_text(server.output, r'\] "GET /stamped HTTP/1\.1" 200 ')
    # without a file and without a journal, access lines go to stderr the same way
    plain = start_sockact("testapps:pid")
    http_get(plain.port, "/stamped")
    wait_for_text(plain.output, r'127\.0\.0\.1 - - \[[^]]+\] "GET /stamped HTTP/1\.1" 200 ')


def test_a_unix_socket_peer_is_logged_with_its_credentials(start_sockact, tmp_path: Path):
    sock_path = str(tmp_path / "app.sock")
    log_path = tmp_path / "access.log"
    port = free_port()
    server = start_sockact("--bind", f"127.0.0.1:{port}", "--bind", f"unix:{sock_path}", "testapps:pid",
                           "--access-logfile", str(log_path), activation=False, wait=False)
    server.port = port
    server.wait_ready()
    assert http_get(0, "/via-unix", unix=sock_path)[0] == 200
    text = wait_for_text(log_path.read_text, "/via-unix")
    line = next(ln for ln in text.splitlines() if "/via-unix" in ln)
    assert line.startswith(f"unix:pid={os.getpid()},uid={os.getuid()} - - ["), line


def test_an_app_error_is_one_record_with_the_request_and_counts_its_error_page(start_sockact):
    server = start_sockact("testapps:boom", "--workers", "1", "--access-logfile", "-", wait=False)
    deadline = time.monotonic() + 10
    while True:
        try:
            status, _, body = http_get(server.port, "/broken")
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert status == 500
    out = wait_for_text(server.output, r'"GET /broken HTTP/1\.1" 500 ')
    assert f'"GET /broken HTTP/1.1" 500 {len(body)} ' in out  # the error page's bytes, not 0
    assert re.search(r"ERROR sockact\.http: conn \d+: application error on GET /broken HTTP/1\.1\n"
                     r"Traceback \(most recent call last\):", out), out


def test_wsgi_errors_writes_are_error_records(start_sockact):
    server = start_sockact("testapps:errlog", "--workers", "1")
    http_get(server.port, "/e")
    out = wait_for_text(server.output, r"ValueError: a handled bug")
    assert re.search(r"ERROR sockact\.app: Exception on /e \[GET\]\nTraceback", out), out


def test_no_line_that_quotes_a_request_can_be_forged(start_sockact, tmp_path: Path):
    path = tmp_path / "access.log"
    server = start_sockact("testapps:hang", "--workers", "2", "--timeout", "1", "--access-logfile", str(path),
                           "--access-logformat", '%(h)s "%(r)s" %(U)s', workers=2)
    # the access line: the decoded path (httptools refuses these bytes raw, in the head)
    http_get(server.port, f"/ok{HOSTILE_PATH[5:]}")
    text = wait_for_text(path.read_text, "/ok")
    assert not FORGED.search(text), text
    assert "/ok\\x0d\\x0aFORGED CRITICAL\\x1b[31m\\x00" in text
    # the timeout line: the worker is killed while on the hostile path
    with contextlib.suppress(OSError, IndexError, ValueError):
        http_get(server.port, HOSTILE_PATH, timeout=10)  # the killed worker's connection just closes
    out = wait_for_text(server.output, r"stuck for [\d.]+s on GET /hang")
    stuck = out[out.index("stuck for"):]
    assert stuck.startswith("stuck for") and "on GET /hang\\x0d\\x0aFORGED CRITICAL\\x1b[31m\\x00;" in stuck, stuck
    assert not FORGED.search(out), out


# Stands in for python-systemd's journal module: each record's fields, one JSON line per record.
FAKE_JOURNAL = """
import json, os

def sendv(*fields):
    pairs = (f.decode("utf-8", "replace") if isinstance(f, bytes) else f for f in fields)
    line = json.dumps(dict(p.split("=", 1) for p in pairs)) + "\\n"
    fd = os.open(os.environ["FAKE_JOURNAL"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, line.encode())
    os.close(fd)
"""


def test_the_timeout_records_journal_field_is_escaped(start_sockact, tmp_path: Path):
    from sockact.logs.journal import MESSAGE_IDS

    (tmp_path / "systemd").mkdir()
    # The real package's other modules (daemon: socket activation) stay in reach.
    (tmp_path / "systemd" / "__init__.py").write_text(
        "import pkgutil\n__path__ = pkgutil.extend_path(__path__, __name__)\n")
    (tmp_path / "systemd" / "journal.py").write_text(FAKE_JOURNAL)
    records = tmp_path / "journal.jsonl"
    records.touch()
    env = {"PYTHONPATH": f"{tmp_path}:{base_env()['PYTHONPATH']}", "FAKE_JOURNAL": str(records)}
    server = start_sockact("testapps:hang", "--workers", "1", "--timeout", "1", "--log-target", "journal",
                           env=env)  # its "ready:" line goes to the journal, not to the output
    with contextlib.suppress(OSError, IndexError, ValueError):
        http_get(server.port, HOSTILE_PATH, timeout=10)  # the killed worker's client gets its 504
    wait_for_text(records.read_text, MESSAGE_IDS["worker_timeout"])
    (record,) = [r for line in records.read_text().splitlines()
                 if (r := json.loads(line)).get("MESSAGE_ID") == MESSAGE_IDS["worker_timeout"]]
    assert record["HTTP_REQUEST"] == "GET /hang\\x0d\\x0aFORGED CRITICAL\\x1b[31m\\x00"
    assert record["SOCKACT_WORKER_PID"]


def test_a_unix_socket_peer_is_known_to_the_app_by_its_credentials(start_sockact, tmp_path: Path):
    sock_path = str(tmp_path / "app.sock")
    port = free_port()
    server = start_sockact("--bind", f"127.0.0.1:{port}", "--bind", f"unix:{sock_path}", "sockact.apps.demo:app",
                           "--no-access-log", activation=False, wait=False)
    server.port = port
    server.wait_ready()
    status, _, body = http_get(0, "/json", unix=sock_path)
    assert status == 200
    # gunicorn gives "" here; the app sees who connected, as the access log and the journal do
    assert json.loads(body)["client"] == f"unix:pid={os.getpid()},uid={os.getuid()}"


def test_an_access_log_on_a_full_disk_is_told_once_and_serving_goes_on(start_sockact):
    server = start_sockact("testapps:pid", "--access-logfile", "/dev/full", "--workers", "1")
    (worker,) = server.workers()
    client = KeepAliveClient(server.port)
    assert client.request("/")[0] == 200
    told = "access log /dev/full: cannot write (No space left on device); its lines are lost until it can"
    server.wait_for_log(told)
    for _ in range(10):  # each answer's line is written (and fails) as the worker goes idle
        assert client.request("/")[0] == 200
        time.sleep(0.02)
    client.close()
    assert http_get(server.port)[0] == 200
    assert server.output().count("access log /dev/full") == 1, server.output()
    assert server.workers() == [worker]


def test_a_websocket_sessions_line_has_its_101_responses_fields_and_its_requests(start_sockact, ws_library):
    # The {name}o atoms of a 101 are the handshake response's fields, the library's and the app's own, as any
    # response's are; the {name}i atoms and the rest, the upgrade request's, as any request's are.
    from websockets.sync.client import connect

    server = start_sockact("asgiapps:ws_echo", "--workers", "1", "--ws", ws_library, "--access-logfile", "-",
                           "--access-logformat", '"%(r)s" %(s)s %(b)s %(a)s %({upgrade}o)s %({sec-websocket-accept}o)s '
                           "%({sec-websocket-protocol}o)s %({x-app}o)s %({sec-websocket-version}i)s %({upgrade}i)s",
                           workers=1)
    with connect(f"ws://127.0.0.1:{server.port}/own-field", subprotocols=["chat"], user_agent_header="ua/1",
                 open_timeout=10) as ws:
        accept = ws.response.headers["Sec-WebSocket-Accept"]
        assert ws.response.headers["X-App"] == "echo"
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
    line = server.wait_for_log("websocket close=").split("websocket close=")[0].splitlines()[-1]
    assert line.endswith(f'"GET /own-field HTTP/1.1" 101 5 ua/1 websocket {accept} chat echo 13 websocket '), line
