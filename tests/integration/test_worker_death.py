"""A worker that dies or freezes, against the real sockact process: requests it never read go to
another worker, and a frozen worker is found out and replaced."""

from __future__ import annotations

import json
import os
import signal
import socket

from conftest import fd_count, parse_response, read_to_close, steady, wait_until


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
