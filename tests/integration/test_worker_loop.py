"""The worker's event loop with the real process: many connections per worker, app threads,
stall hand-back, slow clients. Bounds here are generous: they are the behaviour, not a speed."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import pytest
from conftest import KeepAliveClient, fd_count, http_get, parse_response, server_has_read, steady, wait_until

# An app of each interface whose "/?s=N" takes N seconds on its worker, blocking it meanwhile (WSGI:
# the app thread sleeps; ASGI: a sync sleep blocks the worker's loop), and answers with its pid.
SLOW_APPS = pytest.mark.parametrize("app", ["testapps:slow", "asgiapps:blocking"], ids=["wsgi", "asgi"])


def _two_on_one_worker(port: int) -> tuple[KeepAliveClient, KeepAliveClient, int, int]:
    """Two keep-alive clients held by one worker, and (that worker's pid, the other's)."""
    clients: dict[int, list[KeepAliveClient]] = {}
    while True:
        client = KeepAliveClient(port)
        clients.setdefault(_pid_of(client), []).append(client)
        for pid, held in clients.items():
            if len(held) == 2 and len(clients) == 2:
                other = next(p for p in clients if p != pid)
                return held[0], held[1], pid, other


def _on_one_worker(port: int, count: int) -> tuple[list[KeepAliveClient], int, int]:
    """``count`` keep-alive clients held by one worker (park_after must keep them there), that
    worker's pid and another's."""
    clients: dict[int, list[KeepAliveClient]] = {}
    while True:
        client = KeepAliveClient(port)
        pid = _pid_of(client)
        clients.setdefault(pid, []).append(client)
        if len(clients[pid]) == count and len(clients) >= 2:
            return clients[pid], pid, next(p for p in clients if p != pid)


def _pid_of(client: KeepAliveClient) -> int:
    status, _, body = client.request("/?s=0")
    assert status == 200
    return json.loads(body)["pid"]


@SLOW_APPS
def test_a_slow_request_does_not_hold_up_the_other_connections_of_its_worker(start_sockact, tmp_path, app):
    server = start_sockact(app, "--workers", "2", "--park-after", "30", workers=2)
    a, c, shared, other = _two_on_one_worker(server.port)
    inside, release = tmp_path / "inside", tmp_path / "release"
    slow = threading.Thread(target=a.request, args=(f"/?s=30&until={release}&started={inside}",))
    slow.start()
    try:
        wait_until(inside.exists, "a's worker inside the call")
        status, _, body = c.request("/?s=0")
        assert status == 200
        assert json.loads(body)["pid"] == other != shared  # handed back, and served by the other worker
        assert slow.is_alive()  # while a's call still runs
    finally:
        release.touch()
        slow.join(10)
    for client in (a, c):  # both go on serving afterwards
        assert client.request("/?s=0")[0] == 200
        client.close()


@SLOW_APPS
def test_a_partial_head_is_handed_back_with_its_bytes_and_answered_once(start_sockact, tmp_path, app):
    server = start_sockact(app, "--workers", "2", "--park-after", "30", workers=2)
    a, c_client, first, _ = _two_on_one_worker(server.port)
    c = c_client.sock  # its worker is a's; from here on, raw bytes
    holding = steady(lambda: fd_count(first), "the worker's fd count")
    c.sendall(b"GET /?s=0 HTTP/1.1\r\nHo")
    wait_until(lambda: server_has_read(c), "the worker to read the two lines")
    inside = tmp_path / "inside"
    slow = threading.Thread(target=a.request, args=(f"/?s=1.5&started={inside}",))
    slow.start()
    wait_until(inside.exists, "a's worker inside the call")
    # a's worker stalls, and c goes back with the two lines it had read: the worker holds one fd less.
    wait_until(lambda: fd_count(first) < holding, "c handed back")
    c.sendall(b"st: t\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    assert data.count(b"HTTP/1.1 200") == 1
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert body["pid"] != first  # answered once, by the worker it was handed on to
    slow.join(5)


def test_four_threads_run_four_slow_requests_at_once(start_sockact, tmp_path):
    server = start_sockact("testapps:slow", "--workers", "1", "--threads", "4", workers=1)
    results: list[int] = []
    release = tmp_path / "release"

    def one(i: int) -> None:
        results.append(http_get(server.port, f"/?s=30&until={release}&started={tmp_path / str(i)}", timeout=40)[0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        # Each call lasts until the release: one after the other, the second would never begin.
        wait_until(lambda: all((tmp_path / str(i)).exists() for i in range(4)), "four calls in the app at once")
    finally:
        release.touch()
        for t in threads:
            t.join(10)
    assert results == [200] * 4


@SLOW_APPS
def test_slow_heads_hold_no_worker_and_each_gets_its_408(start_sockact, app):
    server = start_sockact(app, "--workers", "2", "--header-timeout", "3", workers=2)
    trickling = []
    for _ in range(2000):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\n")
        trickling.append(s)
    opened = time.monotonic()
    for _ in range(5):  # a normal client on fresh connections is answered as without them
        t = time.monotonic()
        assert http_get(server.port, "/?s=0")[0] == 200
        assert time.monotonic() - t < 0.5
    for s in trickling:
        s.sendall(b"X-A: b\r\n")
    answered = 0
    for s in trickling:
        s.settimeout(max(0.1, opened + 3 + 2 - time.monotonic()))
        try:
            data = s.recv(4096)
        except TimeoutError:
            data = b"still open"
        except ConnectionResetError:
            data = b""
        answered += data.startswith(b"HTTP/1.1 408") or data == b""
        s.close()
    assert answered == len(trickling)
    assert time.monotonic() - opened < 3 + 2 + 1  # header_timeout plus a margin, for all of them


def test_thousands_of_parked_clients_hanging_up_at_once_leave_it_serving(start_sockact):
    # Each hang-up wakes the supervisor and goes to a worker; more than a channel holds at once.
    server = start_sockact("testapps:slow", "--workers", "2", "--park-after", "0.01", "--no-access-log", workers=2)
    idle = fd_count(server.pid)
    clients = [KeepAliveClient(server.port) for _ in range(5000)]
    for client in clients:
        client.sock.sendall(b"GET /?s=0 HTTP/1.1\r\nHost: t\r\n\r\n")
    for client in clients:
        assert client.read_response()[0] == 200
    for client in clients:
        client.close()
    assert http_get(server.port, "/?s=0", timeout=10)[0] == 200
    wait_until(lambda: fd_count(server.pid) <= idle + 1, "the supervisor to close what it held", timeout=20)


@pytest.mark.parametrize("app", ["testapps:pid", "asgiapps:echo"], ids=["wsgi", "asgi"])
def test_a_reload_retires_a_worker_without_closing_the_keepalive_connection_it_holds(start_sockact, app):
    # park_after 30: the idle client is still in its worker when the reload retires that worker, which
    # hands it back; its next request is served by the new generation on the same connection.
    server = start_sockact(app, "--workers", "1", "--park-after", "30", workers=1)
    [old] = server.workers()
    client = KeepAliveClient(server.port)
    first = json.loads(client.request("/")[2])
    assert first["pid"] == old
    server.send(signal.SIGHUP)
    server.wait_workers(1, without=old)
    wait_until(lambda: not os.path.exists(f"/proc/{old}"), "the old worker to exit")
    status, headers, body = client.request("/")
    assert status == 200 and "close" not in headers.get("connection", "")
    again = json.loads(body)
    assert again["pid"] != old and again["conn"] == first["conn"]  # the same connection, a new worker
    client.close()


def test_a_stalled_worker_hands_back_a_request_parsed_and_waiting(start_sockact, tmp_path):
    # Both app threads of one worker are in long calls; its third client's request arrives, is
    # parsed, and waits for a thread. Once the worker is stalled, that request goes back with its
    # bytes and the other worker answers it, while both calls still run. (handback_after is long
    # enough for the request to come before the stall, so it is parsed and waiting by then.)
    server = start_sockact("testapps:slow", "--workers", "2", "--threads", "2", "--park-after", "30",
                           "--handback-after", "1", workers=2)
    _a_stalled_worker_hands_back_a_request_parsed_and_waiting(server, tmp_path)


# A post_fork hook that makes each worker's monitor fail at its first start: a bug that cannot be caused
# from outside, planted in the real process.
FAILING_MONITOR = """
from sockact.worker.wsgirunner import EventLoop

original = EventLoop._monitor
failed = []


def failing_once(self):
    if not failed:
        failed.append(True)
        raise RuntimeError("planted: the monitor fails at its first start")
    return original(self)


def post_fork(server, worker):
    EventLoop._monitor = failing_once
"""


def test_a_monitor_that_fails_is_logged_and_starts_again_and_still_hands_back(start_sockact, tmp_path):
    (tmp_path / "plant.py").write_text(FAILING_MONITOR)
    config = tmp_path / "sockact.toml"
    config.write_text(f'pythonpath = ["{tmp_path}"]\n\n[hooks]\npost_fork = "plant:post_fork"\n')
    server = start_sockact("testapps:slow", "--config", str(config), "--workers", "2", "--threads", "2",
                           "--park-after", "30", "--handback-after", "1", workers=2)
    said = server.wait_for_log("RuntimeError: planted")
    assert "its monitor thread failed, and starts again in 1 s" in said and "Traceback" in said, said
    # The calls run 30 s: the waiting request is answered within the test's time only if a monitor runs again.
    _a_stalled_worker_hands_back_a_request_parsed_and_waiting(server, tmp_path)


def _a_stalled_worker_hands_back_a_request_parsed_and_waiting(server, tmp_path) -> None:
    (a, b, waiting), stalled, other = _on_one_worker(server.port, 3)
    release = tmp_path / "release"
    calls = []
    for i, client in enumerate((a, b)):
        started = tmp_path / f"started{i}"
        call = threading.Thread(target=client.request, args=(f"/?s=30&until={release}&started={started}",))
        call.start()
        calls.append(call)
        wait_until(started.exists, f"call {i} inside the app")
    try:
        status, _, body = waiting.request("/?s=0")
        assert status == 200 and json.loads(body)["pid"] == other != stalled
        assert all(call.is_alive() for call in calls)  # answered while both calls still run
    finally:
        release.touch()
        for call in calls:
            call.join(10)


def test_the_loop_threads_own_calls_serve_each_kind_of_request_in_turn(start_sockact):
    """One worker, one app thread: each request is read while the loop thread is free, so the plain
    ones take the fast path and the others (a body, chunked, Expect, HEAD, a pipeline of hundreds in
    one segment) fall back; every answer is the app's, in order, on one connection."""
    server = start_sockact("testapps:echo_bare", "--workers", "1", "--park-after", "30", workers=1)
    client = KeepAliveClient(server.port)
    sock = client.sock

    def ask(raw: bytes) -> dict:
        sock.sendall(raw)
        status, _, body = client.read_response()
        assert status == 200, body
        return json.loads(body)

    assert ask(b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")["query"] == "x=1"
    assert ask(b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")["body"] == "abc"
    assert ask(b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")["body"] == "hi"
    sock.sendall(b"POST /d HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert ask(b"ok")["body"] == "ok"
    sock.sendall(b"HEAD /e HTTP/1.1\r\nHost: h\r\n\r\n")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    sock.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(400)))
    assert [json.loads(client.read_response()[2])["path"] for _ in range(400)] == [f"/{i}" for i in range(400)]
    assert ask(b"GET /f HTTP/1.1\r\nHost: h\r\n\r\n")["path"] == "/f"
    client.close()


def _close_request(port: int, path: str, version: str = "1.1") -> bytes:
    """A request that asks for Connection: close, and all its client reads until the end of the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/{version}\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_burst_of_close_clients_each_gets_its_whole_response_and_the_end_and_no_fd_stays(start_sockact):
    # Many at once: the supervisor hands them over several to a message (CONNS), and the worker reports
    # them closed together (one DONE a turn); every client reads its response to the end of the connection.
    server = start_sockact("testapps:pid", "--workers", "1", workers=1)
    worker = server.workers()[0]
    before = steady(lambda: (fd_count(server.pid), fd_count(worker)), "the fd counts")
    for _ in range(3):
        results: list[bytes] = []

        def client(into: list[bytes] = results) -> None:
            into.append(_close_request(server.port, "/"))

        threads = [threading.Thread(target=client) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert len(results) == 40
        for data in results:
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
            assert json.loads(body)["pid"] == worker  # whole: its Content-Length's worth, then the end
    wait_until(lambda: (fd_count(server.pid), fd_count(worker)) == before, "the fd counts back where they were")


def _whole(data: bytes) -> bool:
    """Whether ``data`` holds a whole response, by its Content-Length."""
    if b"\r\n\r\n" not in data:
        return False
    _, headers, body = parse_response(data)
    return len(body) >= int(headers["content-length"])


def _read_with_the_supervisor_stopped(server, tmp_path, path: str, version: str, whole: Callable[[bytes], bool],
                                      ) -> tuple[bytes, socket.socket]:
    """A Connection: close request; once the worker's app call has it, the supervisor is stopped
    (SIGSTOP) while the client reads until ``whole`` says it has enough."""
    started = tmp_path / "started"
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(f"GET {path}&started={started} HTTP/{version}\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    wait_until(started.exists, "the request in its app call")
    os.kill(server.pid, signal.SIGSTOP)
    try:
        data = b""
        while not whole(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.kill(server.pid, signal.SIGCONT)
    return data, sock


def test_a_response_read_to_the_end_of_the_connection_gets_its_end_from_the_worker(start_sockact, tmp_path):
    # HTTP/1.0 and no Content-Length: the end of the connection is the end of the body. The worker
    # sends the FIN itself (shutdown), without waiting for the supervisor to close its copy.
    server = start_sockact("testapps:stream", "--workers", "1", workers=1)
    data, sock = _read_with_the_supervisor_stopped(server, tmp_path, "/?s=0.5", "1.0", lambda _: False)
    sock.close()  # the read above ended at the end of the connection, with the supervisor stopped
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length" not in head
    assert body == b"first part\nsecond part\n"


def test_a_close_client_gets_its_whole_framed_response_and_the_end_from_the_worker(start_sockact, tmp_path):
    # Content-Length and Connection: close: the FIN comes from the worker too (a FIN from the
    # supervisor's close of its copy would cost the one process every connection passes through).
    server = start_sockact("testapps:slow", "--workers", "1", workers=1)
    data, sock = _read_with_the_supervisor_stopped(server, tmp_path, "/?s=0.3", "1.1", lambda _: False)
    sock.close()  # the read above ended at the end of the connection, with the supervisor stopped
    assert _whole(data)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
    assert json.loads(body)["slept"] == 0.3
