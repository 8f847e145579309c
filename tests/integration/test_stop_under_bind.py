"""A graceful stop of a sockact that binds its own listener (--bind, no systemd): the clients waiting in
the listener's backlog are answered, and the listener closes when the stop begins.

Under systemd the socket unit keeps the listener and its backlog across the stop; with --bind the
listener is sockact's, and closing it resets every client the kernel holds in its backlog."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from pathlib import Path

from conftest import Server, parse_response, read_to_close, wait_until

WAITING = 4  # clients left in the backlog while the only worker is busy and the queue full


def accept_queue(port: int) -> int:
    """How many connections wait in the accept queue of the listener on ``port`` (/proc/net/tcp: a
    listening socket's rx_queue is its accept queue's length)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
            return int(fields[4].split(":")[1], 16)
    return -1


def test_term_answers_the_clients_in_the_backlog_and_closes_the_listener(start_sockact, tmp_path):
    server: Server = start_sockact("testapps:slow", "--workers", "1", "--queue-size", "1", "--graceful-timeout", "20",
                                   activation=False, workers=1)
    started, release = tmp_path / "started", tmp_path / "release"
    answers: dict[str, bytes] = {}

    def ask(name: str, sock: socket.socket, path: str) -> None:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        answers[name] = read_to_close(sock)

    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=20)]
    threads = [threading.Thread(target=ask, args=("slow", socks[0], f"/?s=20&started={started}&until={release}"))]
    try:
        threads[0].start()
        wait_until(started.exists, "the slow request to reach the app")
        # The worker stalls in the slow call: the clients that come then wait in the supervisor's queue
        # (queue_size 1), and once it is full, in the kernel's backlog, their requests sent.
        while accept_queue(server.port) < WAITING:
            assert len(socks) < 50, server.output()
            socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=20))
            threads.append(threading.Thread(target=ask, args=(f"waiting {len(socks)}", socks[-1], "/?s=0")))
            threads[-1].start()
            with contextlib.suppress(AssertionError):
                wait_until(lambda: accept_queue(server.port) >= WAITING, "the backlog", timeout=0.2)
        server.send(signal.SIGTERM)
        server.wait_for_log("stopping: draining")
        # The listener is closed as the stop begins: a new client is refused, not left in a backlog nobody reads.
        try:
            socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            late = "connected"
        except ConnectionRefusedError:
            late = "refused"
        release.touch()
        for thread in threads:
            thread.join(20)
    finally:
        for sock in socks:
            sock.close()
    for name, answer in answers.items():
        assert answer, f"{name}: reset without an answer\n{server.output()}"
        status, headers, _ = parse_response(answer)
        assert status == 200 and headers.get("connection") == "close", (name, answer)
    assert late == "refused"
    assert len(answers) == len(socks)
    assert server.proc.wait(10) == 0
