"""A worker that dies or freezes, against the real sockact process: requests it never read go to
another worker, and a frozen worker is found out and replaced."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import pytest
from conftest import fd_count, parse_response, raw_exchange, read_to_close, steady, wait_until


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
