"""ASGI apps served by the real sockact: the http scope, message order, failures, lifespan, the pool."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
from conftest import (
    SOCKACT,
    KeepAliveClient,
    Server,
    base_env,
    fd_count,
    free_port,
    held_by,
    http_get,
    parse_response,
    raw_exchange,
    read_to_close,
    server_has_read,
    steady,
    tcp_queues,
    wait_until,
)
from test_supervisor import _kill_mid_request

from sockact.ipc.scoreboard import MAX_THREADS
from sockact.supervisor.core import WORKER_CAPACITY


def request(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        return raw_exchange(sock, data)


def echo(port: int, data: bytes) -> dict:
    status, _, body = parse_response(request(port, data))
    assert status == 200, body
    return json.loads(body)


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*SOCKACT, *args], env=base_env(), capture_output=True, text=True, timeout=timeout)


def serving(start_sockact, app: str, *args: str):
    """A sockact serving ``app`` whose "/" need not answer 200: ready once its log says so."""
    server = start_sockact(app, "--workers", "1", *args, activation=False, wait=False)
    server.waiting(lambda: "ready:" in server.output(), "ready")
    return server


def test_an_asgi_app_is_detected_and_gets_the_http_scope(start_sockact):
    server = start_sockact("asgiapps:echo", "--workers", "1", workers=1)
    seen = echo(server.port, b"GET /a%20b/c?x=1&y HTTP/1.1\r\nHost: test\r\nX-Thing: one\r\nConnection: close\r\n\r\n")
    assert "serves asgiapps:echo as ASGI (detected)" in server.output()
    assert seen["type"] == "http" and seen["asgi"]["version"] == "3.0"
    assert (seen["method"], seen["http_version"], seen["scheme"]) == ("GET", "1.1", "http")
    assert (seen["path"], seen["raw_path"], seen["query_string"]) == ("/a b/c", "/a%20b/c", "x=1&y")
    assert seen["root_path"] == ""
    assert ["x-thing", "one"] in seen["headers"] and ["host", "test"] in seen["headers"]
    assert seen["client"][0] == "127.0.0.1" and seen["server"] == ["127.0.0.1", server.port]
    assert seen["messages"] == [["http.request", 0, False]]
    # The lifespan startup ran in this very worker, and its state reaches the request.
    assert seen["state"] == {"started_by": seen["pid"]}


def test_a_streamed_body_comes_in_order_and_ends_once(start_sockact):
    server = start_sockact("asgiapps:echo", "--workers", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for piece in (b"first", b"second", b"third"):
            sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
            wait_until(lambda: server_has_read(sock), "the piece read")  # separate reads, so separate messages
        answer = raw_exchange(sock, b"0\r\n\r\n")
    seen = json.loads(parse_response(answer)[2])
    assert seen["body"] == "firstsecondthird"
    kinds = seen["messages"]
    assert all(kind == "http.request" for kind, _, _ in kinds)
    assert [more for _, _, more in kinds][-1] is False and all(more for _, _, more in kinds[:-1])
    # A large body with a length, read with backpressure, arrives whole.
    big = b"x" * (3 * 1024 * 1024)
    seen = echo(server.port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%b"
                % (len(big), big))
    assert len(seen["body"]) == len(big) and seen["messages"][-1][2] is False


def test_root_path_is_the_mount_prefix(start_sockact):
    server = start_sockact("asgiapps:echo", "--workers", "1", "--root-path", "/app")
    inside = echo(server.port, b"GET /app/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert (inside["root_path"], inside["path"]) == ("/app", "/app/x")
    outside = echo(server.port, b"GET /application HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert (outside["root_path"], outside["path"]) == ("", "/application")


def test_a_streaming_response_is_chunked_and_the_connection_persists(start_sockact):
    server = start_sockact("asgiapps:stream", "--workers", "1")
    client = KeepAliveClient(server.port)
    try:
        client.sock.sendall(b"GET /?n=3 HTTP/1.1\r\nHost: t\r\n\r\n")
        while not client.buf.endswith(b"0\r\n\r\n"):
            client._fill()
        head, _, body = client.buf.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in head
        assert body == b"8\r\npiece 0\n\r\n8\r\npiece 1\n\r\n8\r\npiece 2\n\r\n0\r\n\r\n"
        client.buf = b""
        client.sock.sendall(b"HEAD /?n=1 HTTP/1.1\r\nHost: t\r\n\r\n")
        while b"\r\n\r\n" not in client.buf:
            client._fill()
        assert client.buf.startswith(b"HTTP/1.1 200")
    finally:
        client.close()


def test_app_errors_before_the_response_are_500s_and_after_it_cut_the_connection(start_sockact):
    server = serving(start_sockact, "asgiapps:boom_before")
    assert http_get(server.port, "/")[0] == 500
    assert "failed before the response" in server.wait_for_log("RuntimeError")
    for app, status in (("asgiapps:no_response", 500), ("asgiapps:trailers", 500)):
        other = serving(start_sockact, app)
        assert http_get(other.port, "/")[0] == status
    assert "trailers" in other.wait_for_log("trailers")
    after = serving(start_sockact, "asgiapps:boom_after")
    answer = request(after.port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    # The head and the first piece went out; the chunked body never ends: the client sees it cut short.
    assert answer.startswith(b"HTTP/1.1 200") and b"the start of it" in answer
    assert not answer.endswith(b"0\r\n\r\n")
    assert http_get(after.port, "/")[0] == 200  # the worker lives on


def test_a_call_that_raises_cancelled_error_is_an_app_error_a_500_and_a_logged_line(start_sockact):
    # sockact never cancels a call: a CancelledError out of one is the app's own (a cancel of its own task, a
    # timeout gone astray). Like any other exception, it gets a 500 and a traceback, never a silent close.
    server = start_sockact("asgiapps:cancels_itself", "--workers", "1", "--access-logfile", "-")
    answer = request(server.port, b"GET /cancel HTTP/1.1\r\nHost: t\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500 "), answer
    assert "CancelledError" in server.wait_for_log("application error on GET /cancel")
    server.wait_for_log('"GET /cancel HTTP/1.1" 500 ')
    assert http_get(server.port, "/")[0] == 200  # the worker lives on


def test_an_app_that_returns_in_the_middle_of_its_body_cuts_the_connection_and_is_logged(start_sockact):
    server = serving(start_sockact, "asgiapps:stops_midway")
    answer = request(server.port, b"GET /midway HTTP/1.1\r\nHost: t\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and b"the start of it" in answer
    assert not answer.endswith(b"0\r\n\r\n")  # cut short: the truth
    server.wait_for_log("GET /midway HTTP/1.1")  # its access line
    # The operator is told, as for an app that returns without any response, naming the request.
    assert re.search(r"ERROR sockact\.http: .*GET /midway HTTP/1\.1", server.output()), server.output()


def test_a_client_leaving_mid_body_is_an_http_disconnect(start_sockact):
    server = serving(start_sockact, "asgiapps:watch_disconnect")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"y" * 1000)
        wait_until(lambda: server_has_read(sock), "the head and the 1000 bytes read")
    server.wait_for_log("DISCONNECT after 1000 bytes")
    # After a complete response, the next receive() is the client leaving.
    answer = request(server.port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
    assert json.loads(parse_response(answer)[2]) == {"got": 3}
    server.wait_for_log("AFTER RESPONSE http.disconnect")


def test_the_same_engine_refuses_what_it_refuses_for_wsgi(start_sockact):
    server = start_sockact("asgiapps:echo", "--workers", "1")
    smuggle = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert parse_response(request(server.port, smuggle))[0] == 400
    assert parse_response(request(server.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"))[0] == 414


def test_lifespan_startup_failure_halts_like_an_app_that_cannot_import():
    result = run_cli("run", "asgiapps:startup_fails", "--workers", "2", "--bind", f"127.0.0.1:{free_port()}")
    assert result.returncode == 5, result.stderr
    assert "lifespan startup failed: the database is not there" in result.stderr
    result = run_cli("run", "asgiapps:startup_raises", "--lifespan", "on", "--bind", f"127.0.0.1:{free_port()}")
    assert result.returncode == 5, result.stderr
    assert "lifespan startup failed: ConnectionError: the database is not there" in result.stderr


def test_lifespan_auto_goes_on_without_an_app_that_does_not_do_it_and_on_requires_it(start_sockact):
    server = start_sockact("asgiapps:no_lifespan", "--workers", "1")
    assert json.loads(http_get(server.port, "/")[2]) == {"state": {}}
    assert "does not do lifespan" in server.output()
    result = run_cli("run", "asgiapps:no_lifespan", "--lifespan", "on", "--bind", f"127.0.0.1:{free_port()}")
    assert result.returncode == 5 and "lifespan startup failed" in result.stderr


def test_lifespan_auto_serves_past_a_startup_that_raised_and_shows_its_traceback(start_sockact):
    # As the ASGI spec asks of 'auto', it serves; the startup's failure is an error with its traceback.
    server = start_sockact("asgiapps:startup_raises", "--workers", "1")
    assert http_get(server.port, "/")[0] == 200
    output = server.output()
    assert "lifespan startup failed: ConnectionError: the database is not there; going on without" in output
    assert "Traceback (most recent call last)" in output and "does not do lifespan" not in output


def test_lifespan_shutdown_runs_on_term_and_on_recycling(start_sockact):
    server = start_sockact("asgiapps:echo", "--workers", "1", "--max-requests", "3", workers=1)
    pids = {echo(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")["pid"] for _ in range(7)}
    assert len(pids) >= 2  # recycled after 3 requests
    first = min(pids)
    server.wait_for_log(f"LIFESPAN SHUTDOWN {first}")
    workers = server.workers()
    assert server.stop(signal.SIGTERM) == 0
    for pid in workers:
        assert f"LIFESPAN SHUTDOWN {pid}" in server.output()


def test_one_worker_serves_many_requests_at_once(start_sockact):
    server = start_sockact("asgiapps:sleepy", "--workers", "1")
    results: list[int] = []

    def one() -> None:
        results.append(http_get(server.port, "/?s=1")[0])

    started = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == [200] * 20
    assert time.monotonic() - started < 10  # one after another would take 20 s


def test_a_blocked_loop_stalls_its_worker_and_the_others_serve(start_sockact, tmp_path):
    server = start_sockact("asgiapps:blocking", "--workers", "2", workers=2)
    box: dict = {}
    inside, release = tmp_path / "inside", tmp_path / "release"
    blocked = threading.Thread(
        target=lambda: box.update(answer=http_get(server.port, f"/?s=30&until={release}&started={inside}", timeout=40)))
    blocked.start()
    try:
        wait_until(inside.exists, "its worker in time.sleep")
        for _ in range(10):
            assert http_get(server.port, "/")[0] == 200
        assert blocked.is_alive()  # all ten answered while the loop is still blocked
    finally:
        release.touch()
        blocked.join(10)
    assert box["answer"][0] == 200


def test_a_killed_worker_answers_each_call_that_had_not_begun_with_a_502(start_sockact, tmp_path):
    # One loop, three calls at once; the third has sent part of its response, so it is cut, not replaced.
    server = start_sockact("asgiapps:hang", "--workers", "1", workers=1)
    calls = {"a": "", "b": "", "c": "&head=1"}
    answers: dict[str, bytes] = {}

    def exchange(name: str) -> None:
        target = f"/{name}?started={tmp_path / name}{calls[name]}"
        answers[name] = request(server.port, f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode(), timeout=20)

    threads = [threading.Thread(target=exchange, args=(name,)) for name in calls]
    for thread in threads:
        thread.start()
    wait_until(lambda: all((tmp_path / name).exists() for name in calls), "the three calls to reach the app")
    [victim] = server.workers()
    os.kill(victim, signal.SIGKILL)
    for thread in threads:
        thread.join(20)
    for name in "ab":
        status, headers, body = parse_response(answers[name])
        assert (status, headers["connection"], body) == (502, "close", b"502 Bad Gateway\n"), answers[name]
    assert answers["c"].startswith(b"HTTP/1.1 200 OK\r\n") and b"first part" in answers["c"], answers["c"]
    assert b"502" not in answers["c"]
    # The supervisor logs the three in any order: wait for each line, not for the one it wrote last.
    server.wait_for_log(f"worker {victim} killed by SIGKILL before answering GET /a: 502 Bad Gateway sent")
    server.wait_for_log(f"worker {victim} killed by SIGKILL before answering GET /b: 502 Bad Gateway sent")
    server.wait_for_log(f"worker {victim} killed by SIGKILL in the middle of the response to GET /c")


def test_a_killed_worker_sends_no_502_into_the_last_response_of_a_pipelined_connection(start_sockact, tmp_path):
    # The first response is one big message: the app's call has sent it all while most of it waits in
    # the loop's buffer. The pipelined second call does not begin until it is out (the output bound),
    # so when the worker dies, the client has part of the first response: only a close tells the
    # truth, a 502 would land in the middle of that body.
    server = start_sockact("asgiapps:whole_or_hang", "--workers", "1", workers=1)
    started = tmp_path / "second"
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.settimeout(20)
        sock.sendall(b"GET /whole?bytes=8000000 HTTP/1.1\r\nHost: t\r\n\r\n"
                     + f"GET /hang?started={started} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        first = sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n"), first[:200]
        [victim] = server.workers()
        os.kill(victim, signal.SIGKILL)
        answer = first + b"".join(iter(lambda: sock.recv(1 << 20), b""))
    assert not started.exists(), "the second call began before the first response was out"
    # Most runs cut the body short. Rarely the worker has put all of it in the kernel before the kill
    # lands: then it arrives whole. Either way nothing follows the first response's own bytes.
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-length: 8000000" in head and 0 < len(body) <= 8_000_000 and body.strip(b"w") == b""
    assert "in the middle of the response to GET /whole" in server.wait_for_log("in the middle of the response")


def test_a_killed_worker_answers_a_call_that_sent_only_100_continue_with_a_502(start_sockact):
    server = start_sockact("asgiapps:echo", "--workers", "1", workers=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        [victim] = server.workers()
        os.kill(victim, signal.SIGKILL)
        status, headers, _ = parse_response(b"".join(iter(lambda: sock.recv(65536), b"")))
    assert (status, headers["connection"]) == (502, "close")


def test_a_request_behind_a_stuck_one_in_the_same_loop_turn_is_handed_back_not_lost(start_sockact):
    # Both requests are there when the worker adopts both connections, so both calls are created in
    # one turn of its loop; the stuck one runs first. The other, not begun, must go back to the
    # supervisor and be served by the stuck worker's replacement, not die with it.
    # timeout is also the boot deadline: 2 s, as an ASGI worker's start on a loaded machine came near 1 s
    server = start_sockact("asgiapps:blocking", "--workers", "1", "--timeout", "2")
    for attempt in range(3):
        stuck = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        other = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        stuck.sendall(b"GET /stuck?s=60 HTTP/1.1\r\nHost: t\r\n\r\n")
        other.sendall(b"GET /other HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        with stuck, other:
            status, _, _ = parse_response(raw_exchange(other, b""))
            assert status == 200, f"attempt {attempt}"


def test_a_call_that_blocks_the_loop_after_the_same_request_is_seen_stuck_and_named(start_sockact, tmp_path):
    # The loop's scoreboard line is left as it is for a request line it shows already (stamped by a call
    # begun since its last beat): a call that then blocks the loop is still seen stuck, named, and its
    # client answered 504 by the supervisor.
    release = tmp_path / "go"
    release.touch()
    server = start_sockact("asgiapps:blocking", "--workers", "1", "--timeout", "2")
    path = f"/hang?s=60&until={release}"
    client = KeepAliveClient(server.port, timeout=20)
    try:
        for _ in range(3):
            assert client.request(path)[0] == 200  # released: answered at once
        release.unlink()
        status, _, _ = client.request(path)  # the same request line, which now blocks the loop
    finally:
        client.close()
    assert status == 504
    out = server.wait_for_log("stuck for")
    assert re.search(r"stuck for [\d.]+s on GET /hang; killing it", out), out


def test_a_websocket_echoes_is_never_parked_and_ends_with_the_clients_close(start_sockact, ws_library):
    from websockets.sync.client import connect

    server = start_sockact("asgiapps:ws_echo", "--workers", "2", "--park-after", "0.05", "--ws", ws_library,
                           workers=2)
    with connect(f"ws://127.0.0.1:{server.port}/", subprotocols=["chat"]) as ws:
        assert ws.subprotocol == "chat"
        ws.send("hello")
        assert ws.recv() == "hello"
        # Idle far past park_after (the other connections' parking shows the time has passed),
        # a WebSocket stays with its worker.
        probe = KeepAliveClient(server.port)
        assert probe.request("/")[0] == 200
        wait_until(lambda: not any(held_by(w, probe.sock) for w in server.workers()), "the probe parked")
        probe.close()
        assert any(held_by(w, ws.socket) for w in server.workers())
        ws.send(b"\x00\x01" * 40000)
        assert ws.recv() == b"\x00\x01" * 40000
    server.wait_for_log("WS DISCONNECT 1000")
    assert http_get(server.port, "/")[2] == b"plain http"


def test_a_websocket_closed_before_accept_is_a_403(start_sockact, ws_library):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    server = start_sockact("asgiapps:ws_echo", "--workers", "1", "--ws", ws_library)
    try:
        connect(f"ws://127.0.0.1:{server.port}/reject")
        raise AssertionError("the handshake was accepted")
    except InvalidStatus as exc:
        assert exc.response.status_code == 403


# Upgrade requests RFC 6455 forbids (4.1: the handshake is an HTTP/1.1 GET), by path.
FORBIDDEN_HANDSHAKES = {
    "/body": ("HTTP/1.1", b"Content-Length: 5\r\n", b"hello"),
    "/chunked": ("HTTP/1.1", b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    "/old": ("HTTP/1.0", b"", b""),
}


def test_a_websocket_handshake_with_a_body_or_over_http_1_0_is_a_400_with_either_library(start_sockact,
                                                                                        ws_library):
    from websockets.sync.client import connect

    server = start_sockact("asgiapps:ws_echo", "--workers", "1", "--ws", ws_library, "--access-logfile", "-",
                           workers=1)
    for path, (version, field, body) in FORBIDDEN_HANDSHAKES.items():
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            answer = raw_exchange(sock, f"GET {path} {version}\r\n".encode() + b"Host: t\r\nUpgrade: websocket\r\n"
                                  b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  b"Sec-WebSocket-Version: 13\r\n" + field + b"\r\n" + body)
        status, headers, _ = parse_response(answer)
        assert (status, headers["connection"]) == (400, "close"), (path, answer)
    # A chunked one is refused as its head is parsed, with no request line for the log; the others, once read.
    server.wait_for_log('"GET /old HTTP/1.0" 400 16 ')
    said = server.wait_for_log('"GET /body HTTP/1.1" 400 16 ')
    # None reached the app as a WebSocket: its disconnect would be printed, and its access line end in one.
    assert "WS DISCONNECT" not in said and "websocket close=" not in said, said
    with connect(f"ws://127.0.0.1:{server.port}/", open_timeout=10) as ws:  # and a good one opens
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi"


def test_an_app_error_on_an_accepted_websocket_closes_it_with_1011(start_sockact, ws_library):
    from websockets.exceptions import ConnectionClosedError
    from websockets.sync.client import connect

    server = start_sockact("asgiapps:ws_echo", "--workers", "1", "--ws", ws_library, workers=1)
    with connect(f"ws://127.0.0.1:{server.port}/") as ws:
        ws.send("raise")
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011  # RFC 6455: an unexpected condition
    server.wait_for_log("application error on websocket")
    assert http_get(server.port, "/")[2] == b"plain http"  # the worker lives on


def test_a_websocket_call_that_raises_cancelled_error_is_an_app_error(start_sockact, ws_library):
    # As for an HTTP call: before the accept a 500, after it a close with 1011, and a logged traceback.
    from websockets.exceptions import ConnectionClosedError, InvalidStatus
    from websockets.sync.client import connect

    server = start_sockact("asgiapps:cancels_itself", "--workers", "1", "--ws", ws_library, workers=1)
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{server.port}/", open_timeout=10)
    assert refused.value.response.status_code == 500
    with connect(f"ws://127.0.0.1:{server.port}/accepted") as ws, pytest.raises(ConnectionClosedError) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert "CancelledError" in server.wait_for_log("application error on websocket '/accepted'")
    assert http_get(server.port, "/")[0] == 200  # the worker lives on


def test_a_drain_closes_websockets_with_1001(start_sockact, ws_library):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    server = start_sockact("asgiapps:ws_echo", "--workers", "1", "--graceful-timeout", "2", "--ws", ws_library)
    with connect(f"ws://127.0.0.1:{server.port}/") as ws:
        ws.send("before")
        assert ws.recv() == "before"
        server.send(signal.SIGTERM)
        try:
            while True:
                ws.recv(timeout=10)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None and exc.rcvd.code == 1001
    server.wait_for_log("WS DISCONNECT 1001")
    assert server.proc.wait(10) == 0


def test_asgi_requests_are_in_the_access_log(start_sockact):
    server = start_sockact("asgiapps:echo", "--workers", "1", "--access-logfile", "-")
    http_get(server.port, "/logged?x=1")
    line = server.wait_for_log('"GET /logged?x=1 HTTP/1.1" 200')
    assert "127.0.0.1 - - [" in line
    request(server.port, b"GET /bad\x01 HTTP/1.1\r\nHost: t\r\n\r\n")
    server.wait_for_log('" 400 ')


def test_fd_counts_stay_flat_over_every_way_a_connection_ends(start_sockact):
    from websockets.sync.client import connect

    server = start_sockact("asgiapps:ws_echo", "--workers", "2", "--no-access-log", workers=2)
    procs = [server.pid, *server.workers()]

    def every_way(times: int) -> None:
        for i in range(times):
            one_way(i)

    def one_way(i: int) -> None:
        kind = i % 5
        if kind == 0:
            assert http_get(server.port, "/")[0] == 200
        elif kind == 1:
            client = KeepAliveClient(server.port)
            client.request("/")
            client.request("/")
            client.close()
        elif kind == 2:
            request(server.port, b"GET /\x01 HTTP/1.1\r\n\r\n")  # refused by the engine
        elif kind == 3:
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\nshort")
        elif i % 25 == 4:
            with connect(f"ws://127.0.0.1:{server.port}/") as ws:
                ws.send("x")
                assert ws.recv() == "x"

    every_way(50)
    # After a round of every kind: the loop's lazily made fds (first WebSocket, first 400) are in it.
    before = steady(lambda: {p: fd_count(p) for p in procs}, "fd counts to settle")
    every_way(600)
    counts: dict[int, int] = {}

    def flat() -> bool:
        counts.update({p: fd_count(p) for p in procs})
        return counts == before

    with contextlib.suppress(AssertionError):
        wait_until(flat, "fd counts back to where they started")
    assert counts == before


def test_pathsend_sends_the_file_with_its_length(start_sockact, tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 4000)
    server = serving(start_sockact, "asgiapps:pathsend")
    client = KeepAliveClient(server.port)
    try:
        for _ in range(2):  # the connection persists after it
            status, headers, body = client.request(f"/?path={blob}")
            assert status == 200 and int(headers["content-length"]) == 1_024_000
            assert body == blob.read_bytes()
    finally:
        client.close()
    assert http_get(server.port, f"/?path={tmp_path}/missing")[0] == 500



def test_a_large_response_to_a_slow_reader_arrives_whole(start_sockact):
    server = start_sockact("asgiapps:big", "--workers", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(b"GET /?mb=16 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        # The server fills every buffer and waits for the client: its bytes queue up unacknowledged.
        wait_until(lambda: tcp_queues(sock).get("server_tx", 0) > 0, "the server blocked on the slow reader")
        received = 0
        while chunk := sock.recv(65536):
            received += len(chunk)
    assert received > 16 * 1024 * 1024  # the head, then every byte of the body


def test_expect_100_continue_is_answered_when_the_app_reads_the_body(start_sockact):
    server = start_sockact("asgiapps:echo", "--workers", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                     b"Connection: close\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        answer = raw_exchange(sock, b"hello")
    assert json.loads(parse_response(answer)[2])["body"] == "hello"


def test_check_says_which_interface_each_app_is_served_with():
    result = run_cli("check", "asgiapps:echo")
    assert result.returncode == 0, result.stderr
    assert "# app asgiapps:echo: imports and is callable; served as ASGI" in result.stdout
    result = run_cli("check", "testapps:echo")
    assert "served as WSGI" in result.stdout
    assert "served as ASGI" in run_cli("check", "testapps:echo", "--interface", "asgi").stdout


def test_threads_given_to_an_asgi_app_are_said_to_be_ignored_by_check_and_at_start(start_sockact):
    # A gunicorn config with UvicornWorker and threads = 8, carried over by sockact convert, says threads.
    said = "threads: ignored for an ASGI app, which runs on its worker's event loop"
    result = run_cli("check", "asgiapps:echo", "--threads", "8")
    assert result.returncode == 0, result.stderr
    assert f"sockact: warning: app asgiapps:echo: {said}" in result.stderr, result.stderr
    assert "ignored" not in run_cli("check", "asgiapps:echo").stderr
    assert "ignored" not in run_cli("check", "testapps:echo", "--threads", "8").stderr  # WSGI: threads apply
    server = start_sockact("asgiapps:echo", "--threads", "8", "--max-threads", "16")
    assert "threads and max_threads: ignored for an ASGI app" in server.wait_for_log("ignored for an ASGI app")


def test_an_endless_stream_stops_when_its_client_leaves(start_sockact):
    server = serving(start_sockact, "asgiapps:endless")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert b"tick" in sock.recv(65536)
    server.wait_for_log("ENDLESS STOPPED: ClientDisconnected")
    assert "application error" not in server.output()  # a client leaving is no error of the app's


def test_a_client_that_stops_sending_its_body_is_let_go_after_the_io_timeout(start_sockact):
    server = serving(start_sockact, "asgiapps:watch_disconnect", "--timeout", "2")  # also the boot deadline
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"y" * 1000)
        server.wait_for_log("DISCONNECT after 1000 bytes")  # the socket is still open: the silence did it
        answer = b""
        while chunk := sock.recv(4096):  # a 408 (the body was not whole within timeout), then the close
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 "), answer


def test_a_reload_retires_the_old_workers_through_their_lifespan_shutdown(start_sockact):
    server = start_sockact("asgiapps:echo", "--workers", "1", workers=1)
    [old] = server.workers()
    server.send(signal.SIGHUP)
    server.wait_workers(1, without=old)
    server.wait_for_log(f"LIFESPAN SHUTDOWN {old}")
    assert echo(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")["pid"] != old


def test_a_websocket_handshake_the_library_refuses_is_a_400(start_sockact, ws_library):
    server = start_sockact("asgiapps:ws_echo", "--workers", "1", "--ws", ws_library)
    answer = request(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert http_get(server.port, "/")[2] == b"plain http"


def test_a_websocket_handshake_with_a_body_is_answered_and_logged(start_sockact, ws_library):
    # websockets refuses a handshake request with a body and closes its side at once; its refusal then
    # failed inside the library (an AssertionError that nothing logged): no answer, no line.
    server = start_sockact("asgiapps:ws_echo", "--workers", "1", "--ws", ws_library)
    head = (b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 5\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + b"hello")
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 "), answer
    server.wait_for_log('"GET /ws HTTP/1.1"')


def test_an_app_that_fails_before_accepting_an_upgrade_followed_by_garbage_answers_500(start_sockact, ws_library):
    # The bytes after the handshake request are no frame: a library that parsed them before the app's
    # answer failed the connection, and the app's 500 never went out.
    server = start_sockact("asgiapps:boom_before", "--workers", "1", "--ws", ws_library)
    head = (b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    for after in (b"", b"\x81\x85no frame at all\xff\xff"):
        answer = request(server.port, head + after)
        assert answer.startswith(b"HTTP/1.1 500"), (after, answer)


def test_listeners_mixing_wsgi_and_asgi_apps_halt_with_one_line(tmp_path):
    cfg = tmp_path / "sockact.toml"
    cfg.write_text('app = "testapps:echo"\n\n[listeners.api]\napp = "asgiapps:echo"\n')
    web, api = free_port(), free_port()
    env = base_env()
    cmd = ["systemd-socket-activate", "-l", f"127.0.0.1:{web}", "-l", f"127.0.0.1:{api}", "--fdname=http:api",
           *[f"-E{k}" for k in env], *SOCKACT, "run", "--config", str(cfg)]
    server = Server(cmd, web, env)
    try:
        def connected() -> bool:  # the first connection starts it, once the activator listens
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", web), timeout=5):
                return True
            return False

        wait_until(connected, "the socket activator to listen")
        assert server.proc.wait(20) == 5, server.output()
        assert "the listeners mix WSGI and ASGI apps (http (wsgi), api (asgi))" in server.output()
    finally:
        server.stop()
        server.log.close()


def test_empty_body_messages_are_no_chunks(start_sockact):
    server = serving(start_sockact, "asgiapps:empty_pieces")
    answer = request(server.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert answer.endswith(b"\r\n\r\n1\r\na\r\n1\r\nb\r\n0\r\n\r\n"), answer


def test_pipelined_requests_are_answered_in_order(start_sockact):
    server = start_sockact("asgiapps:echo", "--workers", "1")
    requests = b"".join(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(5))
    answer = request(server.port, requests + b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    paths = [json.loads(body)["path"] for body in
             (part.split(b"\r\n\r\n", 1)[1] for part in answer.split(b"HTTP/1.1 200 OK\r\n")[1:])]
    assert paths == ["/0", "/1", "/2", "/3", "/4", "/last"]


def test_many_pipelined_requests_are_all_answered_in_order(start_sockact):
    # Calls that end without waiting are served one after the other in the same turn of the loop.
    server = start_sockact("asgiapps:context", "--workers", "1")
    count = 3000
    requests = b"".join(b"GET /%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(count))
    answer = request(server.port, requests + b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 30)
    paths = [json.loads(part.split(b"\r\n\r\n", 1)[1])["path"] for part in answer.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert paths == [f"/{i}" for i in range(count)] + ["/last"]


def test_an_app_runs_in_a_task_from_its_first_step(start_sockact):
    # FastAPI's plain ``def`` endpoints go through anyio.to_thread, which asks sniffio for the async
    # library, which asks asyncio for the current task: a first step run outside a task answers 500.
    server = start_sockact("asgiapps:in_a_task", "--workers", "1")
    client = KeepAliveClient(server.port)
    try:
        for _ in range(3):
            status, _, body = client.request("/")
            assert (status, json.loads(body)) == (200, {"task": True, "library": "asyncio", "thread": "ran"}), body
    finally:
        client.close()


@pytest.mark.parametrize("query", ["", "?wait"])
def test_a_context_variable_an_app_sets_is_its_requests_alone(start_sockact, query):
    server = start_sockact("asgiapps:context", "--workers", "1")
    client = KeepAliveClient(server.port)
    try:
        for path in ("/one", "/two", "/three"):
            status, _, body = client.request(path + query)
            assert status == 200
            assert json.loads(body) == {"path": path, "before": None, "now": path}
    finally:
        client.close()
    pipelined = b"".join(b"GET /%d%s HTTP/1.1\r\nHost: t\r\n\r\n" % (i, query.encode()) for i in range(3))
    answer = request(server.port, pipelined + b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    seen = [json.loads(part.split(b"\r\n\r\n", 1)[1]) for part in answer.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert [s["before"] for s in seen] == [None] * 4


def test_a_websocket_request_without_a_library_says_once_what_to_install(start_sockact, tmp_path):
    # Neither library importable: stand-ins earlier on the path that refuse to import.
    for name in ("websockets", "wsproto"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('no {name} here')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), base_env()["PYTHONPATH"]])}
    server = start_sockact("asgiapps:ws_echo", "--workers", "1", env=env, workers=1)
    upgrade = b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" \
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    for _ in range(3):
        status, _, body = parse_response(request(server.port, upgrade))
        assert (status, body) == (200, b"plain http")  # the app's answer to a plain request
    # The library by name: 'sockact[asgi]' would send pip to PyPI, whatever tree sockact came from.
    said = server.wait_for_log("install one with: pip install wsproto (a virtualenv)")
    assert said.count("no WebSocket library is installed") == 1, said


def test_what_an_app_adds_to_a_scope_stays_out_of_the_next_requests_scope(start_sockact):
    # Each request's scope starts as a copy of its connection's keys, or, when the head repeats, of the one
    # made for it when it came a second time (a new head's scope goes to the app as made): the dicts an app or
    # a middleware may add to (extensions, asgi, state) must be copies too, at every one of those steps.
    server = start_sockact("asgiapps:meddle", "--workers", "1", workers=1)
    client = KeepAliveClient(server.port)
    try:
        first = client.request("/a")
        seen = [json.loads(client.request(path)[2]) for path in ("/a", "/a?other", "/b", "/b", "/b", "/a")]
    finally:
        client.close()
    assert first[0] == 200
    clean = json.loads(first[2])
    assert "meddled" not in clean["extensions"] and "meddled" not in clean["asgi"]
    for scope in seen:
        assert scope == clean


@pytest.mark.parametrize(("kept", "path", "stray"), [("receive", "/leave", "http.disconnect"),
                                                     ("send", "/leave-send", "InvalidResponse")])
def test_a_receive_or_send_an_app_kept_past_its_call_does_not_reach_the_next_request(start_sockact, kept, path,
                                                                                      stray):
    # A connection's calls share one cycle, each call a generation of it: a task that kept the last call's
    # receive() and calls it during the next request is told http.disconnect, and one that kept its send()
    # is refused. The next request's body and response are its own call's, and the connection goes on.
    server = start_sockact("asgiapps:stray_receive", "--workers", "1")
    client = KeepAliveClient(server.port)
    try:
        assert client.request(path)[2] == b"left"
        client.sock.sendall(b"POST /body HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello")
        status, _, body = client.read_response()
        assert client.request("/")[::2] == (200, b"ok")  # its responses in order, nothing stray between
    finally:
        client.close()
    assert status == 200 and json.loads(body) == {"body": "hello", "stray": stray}, kept


def test_a_body_the_app_never_reads_is_dropped_and_the_next_request_is_served(start_sockact):
    # The app answers without reading the request's body: the body is not taken as read (the response's
    # end looks at the engine, not at the call), so it is drained, and the next request is parsed after it.
    server = start_sockact("asgiapps:status_from_path", "--workers", "1")
    client = KeepAliveClient(server.port)
    try:
        client.sock.sendall(b"POST /200 HTTP/1.1\r\nHost: test\r\nContent-Length: 19\r\n\r\nGET /404 HTTP/1.1\r\n")
        assert client.read_response()[::2] == (200, b"ok")
        assert client.request("/201")[::2] == (201, b"ok")
    finally:
        client.close()


def test_a_killed_worker_answers_a_call_after_many_with_a_502(start_sockact, tmp_path):
    # Each call takes a scoreboard line and gives it back at its end: more calls than a slot has lines (its
    # worker makes more as calls at once outnumber them, up to a line a connection), one after another,
    # leave one for the next, whose client a dead worker's supervisor then answers. Pipelined, in batches.
    calls, batch = MAX_THREADS + WORKER_CAPACITY + 2, 500
    request = b"GET /whole?bytes=10 HTTP/1.1\r\nHost: test\r\n\r\n"

    def many_calls(server) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            for start in range(0, calls, batch):
                count = min(batch, calls - start)
                sock.sendall(request * count)
                got = b""
                while got.count(b"HTTP/1.1 200 ") < count or not got.endswith(b"w" * 10):
                    chunk = sock.recv(1 << 20)
                    assert chunk, f"closed after {start + got.count(b'HTTP/1.1 200 ')} calls"
                    got += chunk

    _, _, answer = _kill_mid_request(start_sockact, tmp_path, "asgiapps:whole_or_hang", "/hang?x=1", many_calls)
    assert parse_response(answer)[0] == 502, answer


def test_a_killed_worker_answers_each_of_a_hundred_calls_at_once_with_a_502(start_sockact, tmp_path):
    # Each HTTP call holds a scoreboard line while it runs: past the slot's first MAX_THREADS lines the worker
    # makes more, and the supervisor reads them all. (handback_after is long: no client waits in the supervisor.)
    calls = 100
    server = start_sockact("asgiapps:hang", "--workers", "1", "--handback-after", "60", workers=1)
    [victim] = server.workers()
    clients = []
    try:
        for i in range(calls):
            clients.append(socket.create_connection(("127.0.0.1", server.port), timeout=20))
            clients[-1].sendall(f"GET /slow?started={tmp_path / str(i)} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        server.waiting(lambda: all((tmp_path / str(i)).exists() for i in range(calls)), "every call to reach the app")
        os.kill(victim, signal.SIGKILL)
        answers = [read_to_close(sock) for sock in clients]
    finally:
        for sock in clients:
            sock.close()
    assert [parse_response(answer)[0] for answer in answers] == [502] * calls, answers
    server.waiting(lambda: server.output().count("502 Bad Gateway sent") == calls, "a log line for each 502")
