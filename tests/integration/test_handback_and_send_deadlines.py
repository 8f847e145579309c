"""Deadlines that must fire, against the real sockact process: header_timeout for a partial head
handed back from worker to worker under a load that stalls them all, and send_timeout for a client
that never reads its response."""

from __future__ import annotations

import os
import re
import signal
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



def _kernel_takes() -> int:
    """What the kernel takes of a response whose client reads none of it (a small receive buffer), on a loopback
    connection such as the tests': what a response must pass for its tail to wait in the outbox."""
    with socket.create_server(("127.0.0.1", 0)) as server, socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(server.getsockname())
        conn, _ = server.accept()
        with conn:
            conn.setblocking(False)
            taken, still = 0, 0
            while still < 3:  # the send buffer grows as the connection goes: until it takes nothing three times
                try:
                    taken += conn.send(b"x" * 65536)
                    still = 0
                except BlockingIOError:
                    still += 1
                    time.sleep(0.1)
            return taken


# A response this much past what the kernel takes leaves a tail in the outbox (up to 1 MiB).
TAIL = 512 * 1024


def _asks(port: int, target: str, fields: str = "") -> socket.socket:
    """A client that asks for ``target``, and reads only when the test says so (a small receive buffer: the kernel
    holds little of the answer on the client's side)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: test\r\n{fields}\r\n".encode())
    return sock


def _asks_and_reads_nothing(port: int, close: bool = False) -> socket.socket:
    """A client that asks for a response whose tail the kernel has no room for, and takes none of it."""
    return _asks(port, f"/?one=1&bytes={_kernel_takes() + TAIL}", "Connection: close\r\n" if close else "")


def _one_thread_and_a_slow_reader(start_sockact, send_timeout: float, close: bool = False):
    """One worker of one app thread serving testapps:big: (the server, its worker's pid, a client that asked for a
    response with a tail for the outbox and reads none of it)."""
    server = start_sockact("testapps:big", "--workers", "1", "--threads", "1", "--max-threads", "1", "--timeout", "60",
                           "--send-timeout", str(send_timeout), workers=1)
    [worker] = server.workers()
    return server, worker, _asks_and_reads_nothing(server.port, close)


def _read_response(sock: socket.socket, data: bytes = b"") -> tuple[bytes, bytes]:
    """One response with a Content-Length, after the ``data`` read of it already: (head, body)."""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(body)} of {length} bytes"
        body += chunk
    return head, body


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "close"])
def test_a_response_its_client_reads_slowly_holds_no_app_thread(start_sockact, close):
    # One app thread: its write waited for the client until send_timeout (30 s here), and every other request of
    # the worker waited behind it. Now the response's tail waits in the connection's outbox, which the worker's
    # loop writes as the client takes it, and the thread serves the next request.
    server, _, slow = _one_thread_and_a_slow_reader(start_sockact, send_timeout=30, close=close)
    try:
        time.sleep(0.5)  # its call is over, the kernel's buffers full
        status, _, body = http_get(server.port, "/?mb=0", timeout=10)
        assert status == 200 and body == b""
        head, body = _read_response(slow)  # all of it, at last
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"x" * len(body) and len(body) > TAIL
        if close:
            assert slow.recv(1) == b""
        else:  # the connection goes on
            slow.sendall(b"GET /?mb=0 HTTP/1.1\r\nHost: test\r\n\r\n")
            head, body = _read_response(slow)
            assert head.startswith(b"HTTP/1.1 200 ") and body == b""
    finally:
        slow.close()
    assert "(send_timeout)" not in server.output()


def test_a_response_tail_its_client_never_takes_is_dropped_after_send_timeout(start_sockact):
    # The worker's loop lets it go, as the app thread's write did, and meanwhile that thread serves others.
    server, worker, slow = _one_thread_and_a_slow_reader(start_sockact, send_timeout=3)
    try:
        time.sleep(0.5)
        assert http_get(server.port, "/?mb=0")[0] == 200
        assert "(send_timeout)" not in server.output()  # answered before the slow client was let go
        said = server.wait_for_log("(send_timeout): connection closed", timeout=15)
        assert re.search(r"took no bytes of the response to GET /\?one=1&bytes=\d+ HTTP/1.1 for 3s", said), said
        slow.settimeout(10)
        head, _, body = read_to_close(slow).partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert len(body) < length  # cut: it was closed, not served whole
    finally:
        slow.close()
    assert http_get(server.port, "/?mb=0")[0] == 200 and server.workers() == [worker]


def test_a_killed_worker_closes_a_response_tail_in_its_outbox_without_a_502(start_sockact):
    # Part of the response is out: a 502 would land inside it, and parking the client as idle would leave it
    # waiting for the rest. It is closed, a cut response, as one whose app thread was writing.
    server, worker, slow = _one_thread_and_a_slow_reader(start_sockact, send_timeout=30)
    try:
        time.sleep(0.5)
        os.kill(worker, signal.SIGKILL)
        server.wait_workers(1, without=worker)
        slow.settimeout(10)
        head, _, body = read_to_close(slow).partition(b"\r\n\r\n")
    finally:
        slow.close()
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert head.startswith(b"HTTP/1.1 200 ") and 0 < len(body) < length and body == b"x" * len(body)


def test_a_streamed_piece_is_not_held_in_the_outbox_while_its_call_goes_on(start_sockact):
    # A chunked stream (SSE, say) says each piece when it comes. Kept in the outbox, a piece's tail waited there for
    # the app's next piece, however fast its client read: only the loop writes the outbox, once the call is over.
    server = start_sockact("testapps:stream", "--workers", "1", "--threads", "1", "--max-threads", "1", workers=1)
    with _asks(server.port, f"/?pad={_kernel_takes() + TAIL}&s=8") as sock:
        time.sleep(1)  # the kernel's buffers fill
        began, data = time.monotonic(), b""
        while b"first part\n" not in data[-64:]:
            chunk = sock.recv(65536)
            assert chunk, "closed"
            data += chunk
        assert time.monotonic() - began < 4, "the first piece waited for the second"
        assert b"second part" not in data


def test_a_response_tail_its_client_reads_steadily_is_not_cut_at_send_timeout(start_sockact):
    # The worker's loop learns of its client's reads from room to write (EPOLLOUT), which the kernel gives only once a
    # third of its send buffer (megabytes, grown on a fast link) is free: a client reading tens of KiB a second was
    # let go after send_timeout as one that "took no bytes". Its pace is read from the kernel's queue instead.
    server, worker, slow = _one_thread_and_a_slow_reader(start_sockact, send_timeout=3)
    try:
        time.sleep(0.5)
        data, began = b"", time.monotonic()
        while time.monotonic() - began < 8:  # about 80 KiB a second, past twice send_timeout
            chunk = slow.recv(4096)
            assert chunk, f"closed after {len(data)} bytes, {time.monotonic() - began:.1f} s"
            data += chunk
            time.sleep(0.05)
        _read_response(slow, data)  # the rest, whole
    finally:
        slow.close()
    assert "(send_timeout)" not in server.output()
    assert server.workers() == [worker]


def test_a_body_written_in_parts_is_not_held_in_the_outbox_between_them(start_sockact):
    # Only a body's last piece may leave its tail in the outbox: an earlier one's tail would wait there for the app's
    # next write (or the end of its call), however fast its client read.
    server = start_sockact("testapps:big", "--workers", "1", "--threads", "1", "--max-threads", "1", workers=1)
    half = (_kernel_takes() + TAIL) // 65536 * 65536
    with _asks(server.port, f"/?bytes={2 * half}&at={half}&pause=5") as sock:
        time.sleep(0.5)  # the kernel's buffers fill
        started = time.monotonic()
        data = b""
        while len(data) < half:
            data += sock.recv(65536)
        took = time.monotonic() - started
    print(f"the first half ({half} bytes) in {took:.2f}s, the app's pause 5 s")
    assert took < 4, took  # before the app's pause is over
