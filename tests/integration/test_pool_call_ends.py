"""Calls that end on a WSGI worker's pool threads (--max-threads, slow calls common, so the loop hands calls
off). A pool thread whose call leaves its connection idle, with nothing read behind the request, puts it back
in the poller itself, and the loop takes the call's end at its next turn; any other end (a close, a request
pipelined behind) goes to the loop, which is woken for it. Whichever way a call ends, and however the client
leaves after it, the client gets every answer and its end, and the worker goes on serving."""

from __future__ import annotations

import json
import socket
import threading
import time

from conftest import KeepAliveClient, hand_off, http_get, read_to_close, served_after_its_worker_is_killed

LOAD_SECONDS = 6.0  # how long the clients go on: each round is a few requests, the load thousands of them


def _round(port: int, client: int, n: int) -> None:
    """One client's round ``n``, on a new connection: each path is new, so the worker hands its call to a pool
    thread (a path not seen is judged slow); the rounds take turns at the ways a call can end."""
    path = f"/c{client}/r{n}"
    keep = KeepAliveClient(port, timeout=5)
    with keep.sock as sock:
        kind = n % 3
        if kind == 0:  # the call closes its connection
            sock.sendall(f"GET {path}?s=0 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            answer = read_to_close(sock)
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 ") == 1, answer
        elif kind == 1:  # a request pipelined behind the call
            sock.sendall(f"GET {path}?s=0.002 HTTP/1.1\r\nHost: t\r\n\r\n"
                         f"GET {path}/next?s=0 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            answer = read_to_close(sock)
            assert answer.count(b"HTTP/1.1 200 ") == 2, answer
        else:  # idle after each call: put back by its pool thread; then the client leaves
            for k in range(3):
                assert keep.request(f"{path}/{k}?s={0.002 if k == 1 else 0}")[0] == 200
            if n % 2:
                sock.shutdown(socket.SHUT_WR)


def test_every_call_that_ends_on_a_pool_thread_ends_for_its_client(start_sockact):
    """Many clients at once, each call on a pool thread, in a worker whose threads switch as often as they
    can: a call's end that the loop lost would leave its client waiting for an answer or for the end."""
    server = start_sockact("testapps:slow_switching", "--workers", "1", "--max-threads", "16", workers=1)
    client = KeepAliveClient(server.port)
    hand_off(client)
    [worker] = server.workers()
    failures: list[str] = []
    stop = time.monotonic() + LOAD_SECONDS

    def one(i: int) -> None:
        n = 0
        while time.monotonic() < stop and not failures:
            try:
                _round(server.port, i, n)
            except (OSError, AssertionError) as exc:
                failures.append(f"client {i}, round {n} ({('close', 'pipelined', 'idle')[n % 3]}): {exc!r}")
            n += 1

    clients = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(30)
    assert not failures, failures
    status, _, body = http_get(server.port, "/?s=0")
    assert status == 200 and json.loads(body)["pid"] == worker
    client.close()


def test_an_idle_client_whose_last_call_ran_on_a_pool_thread_is_served_after_its_worker_dies(start_sockact):
    """The pool thread marks its connection idle on the scoreboard as it puts it back, and the loop, taking the
    call's end later, leaves the mark as it is: killed, the worker's idle client is parked, not closed, and the
    other worker answers its next request."""
    server = start_sockact("testapps:slow", "--workers", "2", "--max-threads", "16", "--park-after", "60", workers=2)
    client = KeepAliveClient(server.port, timeout=20)
    hand_off(client)  # its last call ran on a pool thread
    status, _, body = client.request("/?s=0")  # the loop's call, or a pool thread's: either way idle after it
    victim = json.loads(body)["pid"]
    status, _, body = client.request("/last?s=0.002")  # a path not seen, judged slow: a pool thread's call
    assert status == 200 and json.loads(body)["thread"].startswith("sockact-app-"), body
    served_after_its_worker_is_killed(server, client, victim, "/?s=0")
    client.close()
