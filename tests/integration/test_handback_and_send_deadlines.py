"""Deadlines that must fire, against the real sockact process: header_timeout for a partial head
handed back from worker to worker under a load that stalls them all, and send_timeout for a client
that never reads its response."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from conftest import http_get, read_to_close, steady, tcp_queues


def test_a_partial_head_handed_back_under_a_stalling_load_gets_its_408_on_time(start_sockact):
    header_timeout = 2.0
    server = start_sockact("testapps:slow", "--workers", "2", "--threads", "1", "--header-timeout",
                           str(header_timeout), workers=2)
    done = threading.Event()

    def load() -> None:
        # Both workers' one app thread sits in a call most of the time, so each worker stalls and
        # hands its waiting connections back, over and over.
        while not done.is_set():
            http_get(server.port, "/slow?s=0.2", timeout=30)

    loaders = [threading.Thread(target=load) for _ in range(4)]
    for thread in loaders:
        thread.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            started = time.monotonic()
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n")  # and never the blank line
            answer = read_to_close(sock)
            took = time.monotonic() - started
    finally:
        done.set()
        for thread in loaders:
            thread.join(30)
    print(f"408 after {took:.2f}s (header_timeout {header_timeout}s)")
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    # Twice the timeout at most (2.62 s seen on a loaded machine): a deadline that each hand-back
    # restarted would not fire while the load goes on, and the client would time out after 30 s.
    assert took <= 2 * header_timeout, took


def test_a_client_that_never_reads_is_dropped_after_send_timeout_and_the_worker_lives(start_sockact):
    # One worker with one app thread, and a timeout well above send_timeout: before send_timeout
    # was its own setting, the write waited for timeout, and the worker was killed with it.
    server = start_sockact("testapps:big", "--workers", "1", "--timeout", "30", "--send-timeout", "1", workers=1)
    [worker] = server.workers()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /?mb=64 HTTP/1.1\r\nHost: test\r\n\r\n")  # and never reads
        said = server.wait_for_log("(send_timeout): connection closed", timeout=15)
    assert "the client took no bytes of the response to GET /?mb=64 HTTP/1.1 for 1s (send_timeout)" in said, said
    status, _, body = http_get(server.port, "/?mb=1")
    assert status == 200 and len(body) == 1 << 20
    assert server.workers() == [worker] and "stuck" not in server.output()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_client_that_pipelines_and_never_reads_holds_no_app_thread(start_sockact, workers):
    """A client pipelines 20,000 small requests and reads none of the answers, to workers of one app thread each.
    Its answers fill the kernel's buffers; its next request then waits in the worker's loop until the client takes
    some, not in the app thread's write, and the client is let go after send_timeout. Before, the call's write held
    the worker's only thread for send_timeout, and a client that asked meanwhile waited as long (one worker) or
    until its request was handed back (two)."""
    send_timeout = 6.0  # wide enough for a loaded machine to see the answers stop going out well within it
    server = start_sockact("testapps:pid", "--workers", str(workers), "--threads", "1", "--max-threads", "1",
                           "--send-timeout", str(send_timeout), "--no-access-log", workers=workers)
    pids = sorted(server.workers())
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as greedy:
        greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        pipeline = threading.Thread(target=greedy.sendall, args=(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 20000,))
        pipeline.start()
        # Its answers wait in the server's send queue, which has stopped growing: the client takes none.
        steady(lambda: tcp_queues(greedy).get("server_tx", 0), "the answers to stop going out", calm=0.5, timeout=20)
        assert tcp_queues(greedy)["server_tx"] > 0
        started = time.monotonic()
        waits = []
        while time.monotonic() - started < send_timeout / 3:  # well within it, on a loaded machine too
            asked = time.monotonic()
            assert http_get(server.port, "/", timeout=30)[0] == 200
            waits.append(time.monotonic() - asked)
        print(f"{len(waits)} requests while the client reads nothing; the longest waited {max(waits):.3f}s")
        assert max(waits) < 1.0, max(waits)
        server.wait_for_log("(send_timeout): connection closed", timeout=send_timeout + 10)
        pipeline.join(30)
    assert sorted(server.workers()) == pids
