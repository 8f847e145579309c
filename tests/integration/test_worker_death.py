"""A worker that dies or freezes, against the real sockact process: requests it never read go to
another worker, and a frozen worker is found out and replaced."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    KeepAliveClient,
    asleep,
    fd_count,
    http_get,
    parse_response,
    raw_exchange,
    read_to_close,
    served_after_its_worker_is_killed,
    server_has_read,
    steady,
    wait_until,
)


def test_requests_a_dead_worker_never_read_are_served_by_another(start_sockact):
    server = start_sockact("testapps:pid", "--workers", "1", workers=1)
    [stopped] = server.workers()
    held = steady(lambda: fd_count(server.pid), "the supervisor's fd count")
    os.kill(stopped, signal.SIGSTOP)
    clients = [socket.create_connection(("127.0.0.1", server.port), timeout=20) for _ in range(3)]
    for sock in clients:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    # Handed to the stopped worker: the supervisor keeps its own copy of each, and their requests
    # sit unread in the kernel.
    server.waiting(lambda: fd_count(server.pid) >= held + 3, "the 3 connections to be handed over")
    os.kill(stopped, signal.SIGKILL)
    answers = [read_to_close(sock) for sock in clients]
    for sock in clients:
        sock.close()
    for answer in answers:
        assert answer, "a client got EOF with no response"
        status, _, body = parse_response(answer)
        assert status == 200 and json.loads(body)["pid"] != stopped, answer
    said = server.wait_for_log("they go to other workers")
    assert f"worker {stopped} killed by SIGKILL before reading 3 requests" in said, said
    wait_until(lambda: not os.path.exists(f"/proc/{stopped}"), "the stopped worker to be gone")


@pytest.mark.parametrize(("app", "path"), [("testapps:slow", "/slow?s=0.3"), ("asgiapps:sleepy", "/?s=0.3")],
                         ids=["wsgi", "asgi"])
def test_a_stopped_worker_is_found_out_and_replaced_and_no_request_waits_for_it(start_sockact, app, path):
    timeout = 2.0
    server = start_sockact(app, "--workers", "2", "--timeout", str(timeout), workers=2)
    frozen, other = server.workers()
    os.kill(frozen, signal.SIGSTOP)
    stopped_at = time.monotonic()
    took: list[float] = []
    answers: list[bytes] = []

    request = f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode()

    def client() -> None:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            answers.append(raw_exchange(sock, request))
        took.append(time.monotonic() - started)

    # Four at once: while the live worker is busy with its first, the frozen one, which holds
    # fewer, gets some too.
    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    server.waiting(lambda: frozen not in server.workers() and len(server.workers()) == 2,
                   "the frozen worker to be replaced", timeout=timeout + 10)
    replaced = time.monotonic() - stopped_at
    for thread in clients:
        thread.join(20)
    statuses = [parse_response(answer)[0] if answer else None for answer in answers]
    print(f"frozen worker replaced {replaced:.2f}s after SIGSTOP; requests took {sorted(took)}")
    assert statuses == [200] * 4, server.output()
    assert replaced <= timeout + 2, replaced
    assert max(took) <= timeout + 2, took
    said = server.wait_for_log("killing it")
    # Frozen, as a rule; stuck when SIGSTOP caught the line of a call that was just ending.
    assert f"worker {frozen} frozen: its loop has not turned for" in said or f"worker {frozen} stuck" in said, said
    assert "they go to other workers" in said, said  # it had been handed some
    assert other in server.workers()


def _server_rx_queue(port: int, client_port: int) -> int | None:
    """Bytes the server side of the connection from ``client_port`` has not read (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == client_port:
            return int(fields[4].split(":")[1], 16)
    return None


def test_a_request_read_but_not_begun_gets_a_502_not_silence(start_sockact, tmp_path):
    # Two app threads, both in long calls, and a third request the loop has read: it waits for a
    # thread (never handed back: handback_after is long). When the worker dies, its request is lost
    # with it, and it cannot go elsewhere; its client must still hear so.
    server = start_sockact("testapps:slow", "--workers", "1", "--threads", "2", "--handback-after", "60", workers=1)
    [victim] = server.workers()
    clients = []
    for name in ("a", "b"):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        sock.sendall(f"GET /slow?s=60&started={tmp_path / name} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        clients.append(sock)
    wait_until(lambda: (tmp_path / "a").exists() and (tmp_path / "b").exists(), "both calls to start")
    waiting = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    waiting.sendall(b"GET /slow?s=0 HTTP/1.1\r\nHost: test\r\n\r\n")
    # Read, and then queued: the worker names a waiting request on the scoreboard just after reading
    # it, and asleep again, it has. (A kill between the read and that line closes the connection
    # without a 502; the test waits past that moment.)
    server.waiting(lambda: _server_rx_queue(server.port, waiting.getsockname()[1]) == 0 and asleep(victim),
                   "the worker to read the third request and queue it")
    os.kill(victim, signal.SIGKILL)
    for sock in (*clients, waiting):
        with sock:
            answer = read_to_close(sock)
        assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), answer
    # The supervisor writes each line after its 502 went out: wait for all three, not for the first.
    line = f"worker {victim} killed by SIGKILL before answering GET /slow: 502"
    server.waiting(lambda: server.output().count(line) == 3, "three 502 lines in the log")


@pytest.mark.parametrize("app", ["testapps:pid", "asgiapps:blocking"], ids=["wsgi", "asgi"])
@pytest.mark.parametrize("before", [False, True], ids=["first", "after-a-request"])
def test_a_head_the_worker_held_in_part_when_it_died_gets_a_408(start_sockact, app, before):
    # The worker marks a connection whose head it holds in part (nothing else unanswered) on the scoreboard.
    # That head is lost with the worker and never reached an app: the client gets a 408, which tells it that
    # its request was not complete and that it may send it again, on a new connection. Another connection
    # read after it makes no difference.
    server = start_sockact(app, "--workers", "1", "--park-after", "60", workers=1)
    [victim] = server.workers()
    client = KeepAliveClient(server.port, timeout=20)
    if before:
        assert client.request("/")[0] == 200
    client.sock.sendall(b"GET /partial HTTP/1.1\r\nHost: test\r\n")  # the blank line that ends the head never comes
    port = client.sock.getsockname()[1]
    server.waiting(lambda: _server_rx_queue(server.port, port) == 0 and asleep(victim),
                   "the worker to read the start of the head")
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as other:
        other.sendall(b"GET /other HTTP/1.1\r\nHost: te")  # read next
        server.waiting(lambda: _server_rx_queue(server.port, other.getsockname()[1]) == 0 and asleep(victim),
                       "the worker to read the other connection")
        os.kill(victim, signal.SIGKILL)
        for sock in (client.sock, other):
            answer = read_to_close(sock)
            assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    client.close()
    server.wait_for_log(f"worker {victim} killed by SIGKILL before answering a head it held in part: 408")


def test_a_request_whose_body_the_loop_was_buffering_gets_a_502_when_the_worker_dies(start_sockact):
    # Its head is read and its body is coming (body_buffer): it waits on a line of its own, so the 502
    # does not depend on which connection the loop read last.
    server = start_sockact("testapps:echo", "--workers", "1", workers=1)
    [victim] = server.workers()
    uploading = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    uploading.sendall(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n0123456789")
    server.waiting(lambda: _server_rx_queue(server.port, uploading.getsockname()[1]) == 0 and asleep(victim),
                   "the worker to read the head and the start of the body")
    other = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    other.sendall(b"GET /other HTTP/1.1\r\nHost: test\r\n")  # read next: the loop's read stamp moves to it
    server.waiting(lambda: _server_rx_queue(server.port, other.getsockname()[1]) == 0 and asleep(victim),
                   "the worker to read the other connection")
    os.kill(victim, signal.SIGKILL)
    for sock, status in ((uploading, b"502 Bad Gateway"), (other, b"408 Request Timeout")):  # other: a head in part
        with sock:
            answer = read_to_close(sock)
        assert answer.startswith(b"HTTP/1.1 " + status + b"\r\n"), answer
    server.wait_for_log(f"worker {victim} killed by SIGKILL before answering POST /upload: 502")


def test_workers_stopped_along_with_the_supervisor_are_not_taken_for_frozen(start_sockact):
    # A terminal's Ctrl-Z stops the whole process group, then fg resumes it: every heartbeat stood
    # still, but so did the supervisor, and nobody was frozen on their own.
    server = start_sockact("testapps:pid", "--workers", "2", "--timeout", "1", workers=2)
    workers = sorted(server.workers())
    os.killpg(server.pid, signal.SIGSTOP)
    time.sleep(2.5)  # the stop itself: longer than timeout
    os.killpg(server.pid, signal.SIGCONT)
    until = time.monotonic() + 2.0  # a few of the supervisor's ticks
    while time.monotonic() < until:
        assert http_get(server.port, "/")[0] == 200
    assert sorted(server.workers()) == workers and "frozen" not in server.output(), server.output()


def test_a_call_in_progress_across_a_stop_of_the_whole_group_is_not_killed(start_sockact, tmp_path):
    # The same Ctrl-Z while a call runs: its clock stood still with everything else, so the call
    # that ends as soon as it resumes is answered, not killed for the time the group was stopped.
    server = start_sockact("testapps:slow", "--workers", "1", "--timeout", "1", workers=1)
    [worker] = server.workers()
    started, release = tmp_path / "started", tmp_path / "release"
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(f"GET /?s=30&started={started}&until={release} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        wait_until(started.exists, "the call to start")
        os.killpg(server.pid, signal.SIGSTOP)
        release.touch()  # the call ends as soon as its thread runs again
        time.sleep(2.5)  # the stop itself: longer than timeout
        os.killpg(server.pid, signal.SIGCONT)
        status, _, _ = parse_response(sock.recv(65536))
    assert status == 200
    assert server.workers() == [worker] and "killing it" not in server.output(), server.output()


def _server_inode(port: int, client_port: int) -> int | None:
    """The inode of the server side of the connection from ``client_port`` (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and int(fields[2].split(":")[1], 16) == client_port:
            return int(fields[9])
    return None


def _holds(pid: int, inode: int | None) -> bool:
    """Whether process ``pid`` has the socket ``inode`` open."""
    with contextlib.suppress(FileNotFoundError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(FileNotFoundError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return True
    return False


def test_a_request_after_one_a_hand_back_brought_goes_to_another_worker_when_the_worker_dies(
        start_sockact, tmp_path):
    # A connection handed back by a stalled ASGI worker carries the head it had read to the next
    # worker, which answers it there and goes on serving the connection. Its client's next request
    # waits unread when that worker dies: it must go to another worker, not meet EOF.
    server = start_sockact("asgiapps:blocking", "--workers", "2", "--handback-after", "0.3",
                           "--park-after", "60", workers=2)
    clients = [KeepAliveClient(server.port, timeout=20) for _ in range(3)]
    held: dict[int, list[KeepAliveClient]] = {}
    for client in clients:
        status, _, body = client.request("/?s=0")
        assert status == 200, body
        held.setdefault(json.loads(body)["pid"], []).append(client)
    stalled = next(pid for pid, on in held.items() if len(on) >= 2)  # 3 connections, 2 workers
    [victim] = [pid for pid in server.workers() if pid != stalled]
    moved, blocker = held[stalled][:2]
    port = moved.sock.getsockname()[1]
    moved.sock.sendall(b"GET /?s=0 HTTP/1.1\r\nHost: test\r\n")  # the start of a head: read, then handed back
    server.waiting(lambda: _server_rx_queue(server.port, port) == 0 and asleep(stalled),
                   "the worker to read the start of the head")
    release = tmp_path / "release"
    blocker.sock.sendall(f"GET /?s=60&until={release} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    inode = _server_inode(server.port, port)
    server.waiting(lambda: _holds(victim, inode), "the stalled worker's hand-back to reach the other worker")
    moved.sock.sendall(b"\r\n")
    status, _, body = moved.read_response()
    assert status == 200 and json.loads(body)["pid"] == victim, body  # served where the hand-back went
    # Its call over (the scoreboard line cleared after the response's last byte): the connection is idle.
    server.waiting(lambda: asleep(victim), "the worker to end the call")
    _killed_with_the_next_request_unread(server, moved, victim, "/?s=0", release)
    assert blocker.read_response()[0] == 200
    for client in clients:
        client.sock.close()


def test_a_request_after_a_whole_asgi_response_goes_to_another_worker_when_the_worker_dies_in_the_call(
        start_sockact, tmp_path):
    # An ASGI call has sent its whole response and goes on (the app's own work after it): its worker is
    # killed before the call ends. Its client has the whole response, and its next request waits
    # unread: the kernel's count of bytes written against the call's line tells the supervisor so, and
    # that request goes to another worker, not to EOF.
    server = start_sockact("asgiapps:answers_then_waits", "--workers", "2", "--handback-after", "60",
                           workers=2)
    client = KeepAliveClient(server.port, timeout=20)
    status, _, body = client.request("/")  # a response before: the line counts the bytes written before its own
    assert status == 200, body
    victim = json.loads(body)["pid"]
    release = tmp_path / "release"
    status, _, body = client.request(f"/?until={release}")
    assert status == 200 and json.loads(body)["pid"] == victim, body
    # The whole response is here, and the call goes on, waiting for the release file.
    server.waiting(lambda: asleep(victim), "the call to wait after its response")
    _killed_with_the_next_request_unread(server, client, victim, "/", release)
    client.close()


def _killed_with_the_next_request_unread(server, client: KeepAliveClient, victim: int, path: str,
                                         release: Path) -> None:
    """Stop ``victim``, send ``client``'s next request, and kill the worker once that request waits
    unread (then ``release`` the calls waiting for it): another worker must answer it."""
    os.kill(victim, signal.SIGSTOP)
    port = client.sock.getsockname()[1]
    client.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
    server.waiting(lambda: _server_rx_queue(server.port, port), "the next request to wait unread")
    os.kill(victim, signal.SIGKILL)
    release.touch()
    answer = client.buf + read_to_close(client.sock)
    assert answer, "the client got EOF with no response"
    status, _, body = parse_response(answer)
    assert status == 200 and json.loads(body)["pid"] != victim, answer
    server.wait_for_log(f"worker {victim} killed by SIGKILL before reading 1 requests: they go to other workers")


@pytest.mark.parametrize("app", ["testapps:pid", "asgiapps:blocking"], ids=["wsgi", "asgi"])
@pytest.mark.parametrize("requests", [1, 3], ids=["one-request", "three-requests"])
def test_an_idle_keep_alive_client_of_a_dead_worker_is_served_after(start_sockact, app, requests):
    # Answered, and idle in its worker (park_after is long: not parked yet) when the worker is killed.
    # Nothing it sent waits for an answer: it survives as an idle client survives a restart, and its
    # next request, sent once the supervisor has dealt with the dead worker, is served by another.
    # After its first request a connection waits in the worker's poller, and later calls end another way.
    server = start_sockact(app, "--workers", "2", "--park-after", "60", workers=2)
    client = KeepAliveClient(server.port, timeout=20)
    for _ in range(requests):
        status, _, body = client.request("/")
        assert status == 200, body
    served_after_its_worker_is_killed(server, client, json.loads(body)["pid"])
    client.close()


@pytest.mark.parametrize(("second", "status"), [(b"GET /?s=0 HTTP/1.1\r\nHost: test\r\n\r\n", b"502 Bad Gateway"),
                                               (b"GET /?s=0 HTTP/1.1\r\nHost: te", b"408 Request Timeout")],
                         ids=["whole", "in-part"])
def test_a_request_an_asgi_worker_read_behind_a_call_past_its_response_is_not_dropped(start_sockact, tmp_path,
                                                                                      second, status):
    # Pipelined: the second request came with the first, and waits in the worker's memory while the first
    # call goes on past its whole response (the app's own work after it). When the worker dies, the second
    # is lost with it and cannot go elsewhere; its client must hear so: a 502 for a request read whole, a
    # 408 for a head read in part, after the whole first response.
    server = start_sockact("asgiapps:answers_then_waits", "--workers", "1", "--park-after", "60", workers=1)
    [victim] = server.workers()
    client = KeepAliveClient(server.port, timeout=20)
    release = tmp_path / "release"
    client.sock.sendall(f"GET /?until={release} HTTP/1.1\r\nHost: test\r\n\r\n".encode() + second)
    status_1, _, body = client.read_response()
    assert status_1 == 200 and json.loads(body)["pid"] == victim, body
    server.waiting(lambda: asleep(victim), "the call to wait after its response")
    os.kill(victim, signal.SIGKILL)
    release.touch()
    try:
        answer = client.buf + read_to_close(client.sock)
    except TimeoutError:
        answer = b"(nothing, and no close)"
    client.close()
    assert answer.startswith(b"HTTP/1.1 " + status + b"\r\n"), (answer, server.output())


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie no one reaped yet counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_a_worker_whose_supervisor_was_killed_does_not_spin_on_as_an_orphan(start_sockact):
    # Run by hand, not under systemd: nobody cleans up a killed supervisor's workers. A call stuck for
    # good is given graceful_timeout, as at a stop, then its worker ends.
    server = start_sockact("testapps:hang", "--workers", "1", "--graceful-timeout", "1", workers=1)
    (worker,) = server.workers()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
        server.waiting(lambda: server_has_read(sock), "the worker to read the request")
        os.kill(server.pid, signal.SIGKILL)
        server.waiting(lambda: gone(worker), "the orphaned worker to exit")
    assert "is gone, and its calls still run after graceful_timeout" in server.output()
