"""Nothing a client sends may kill a worker or the supervisor, or lose another client's request."""

from __future__ import annotations

import contextlib
import os
import random
import select
import socket
import struct
import threading
import time

import pytest
from conftest import (
    TESTS,
    KeepAliveClient,
    base_env,
    fd_count,
    http_get,
    parse_response,
    raw_exchange,
    read_to_close,
    server_has_read,
    steady,
    wait_until,
)

VALID = b"POST /p?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"


def blobs(rng: random.Random) -> list[bytes]:
    out = [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 600))) for _ in range(60)]
    for base in (VALID, CHUNKED):
        out += [base[:cut] for cut in range(1, len(base), 7)]  # cut off anywhere, then hang up
        for _ in range(40):  # one byte flipped anywhere
            i = rng.randrange(len(base))
            out.append(base[:i] + bytes([rng.getrandbits(8)]) + base[i + 1:])
    out += [b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n",
            b"\r\n" * 100, b"GET / HTTP/9.9\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"]
    return out


def throw(port: int, data: bytes) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
    except OSError:
        pass  # the server may reset a connection it refused; that is its right


def test_garbage_kills_no_worker_and_loses_no_request(start_sockact):
    server = start_sockact("testapps:echo", "--workers", "2", "--header-timeout", "1", workers=2)
    workers = sorted(server.workers())
    rng = random.Random(20261124)
    failures: list[object] = []
    stop = threading.Event()

    def good_client():
        client = KeepAliveClient(server.port)
        while not stop.is_set():
            try:
                status, _, _ = client.request("/fine")
                if status != 200:
                    failures.append(status)
            except OSError as exc:
                failures.append(exc)
                client = KeepAliveClient(server.port)

    good = threading.Thread(target=good_client)
    good.start()
    try:
        for data in blobs(rng):
            throw(server.port, data)
        # slowloris: heads that never finish are cut off by the header timeout
        stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
        for sock in stalled:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: ")
        for sock in stalled:
            sock.settimeout(10)  # the 408 comes after --header-timeout (1 s); no need to sleep first
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            sock.close()
    finally:
        stop.set()
        good.join(10)
    assert failures == []
    assert sorted(server.workers()) == workers
    assert server.proc.poll() is None
    assert http_get(server.port, "/")[0] == 200
    assert "Traceback" not in server.output()


def test_clients_that_keep_sending_after_their_400_do_not_hold_up_the_loop(start_sockact):
    # The worker reads and drops what a refused client still sends (so its kernel does not reset
    # the connection before the client reads its 400), without waiting for it on the loop: with
    # one worker of one thread, 10 such clients would otherwise hold everyone up for 10 s.
    server = start_sockact("testapps:echo", "--workers", "1", "--threads", "1", workers=1)
    refused = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(10)]
    for sock in refused:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.1):
            for sock in refused:
                with contextlib.suppress(OSError):
                    sock.send(b"x")

    trickler = threading.Thread(target=trickle)
    trickler.start()
    try:
        # The first 400 is out: from here a loop that waited on each refused client's input, 1 s
        # apiece, would hold these requests up for the other nine, 9 s at least.
        assert select.select(refused, [], [], 10)[0], "no 400"
        started = time.monotonic()
        for _ in range(5):
            assert http_get(server.port, "/", timeout=10)[0] == 200
        assert time.monotonic() - started < 5
    finally:
        stop.set()
        trickler.join()
    for sock in refused:
        with sock:
            answer = read_to_close(sock)
        assert answer.startswith(b"HTTP/1.1 400 "), answer


ECHO = {"wsgi": "testapps:echo", "asgi": "asgiapps:echo"}


@pytest.mark.parametrize("interface", sorted(ECHO))
def test_a_client_that_sends_nothing_is_closed_at_header_timeout(start_sockact, interface):
    # Not parked after park_after and then kept for keepalive (75 s): it never asked anything.
    server = start_sockact(ECHO[interface], "--workers", "1", "--header-timeout", "1", "--park-after", "0.05",
                           workers=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as silent:
        started = time.monotonic()
        assert read_to_close(silent) == b""  # closed, with no 408: no request was begun
        assert time.monotonic() - started < 5  # header_timeout plus a generous margin
    # A keep-alive connection idle after a request is parked, not closed at header_timeout.
    client = KeepAliveClient(server.port)
    assert client.request("/a")[0] == 200
    time.sleep(1.5)  # idle past header_timeout on purpose: nothing may close it meanwhile
    assert client.request("/b")[0] == 200
    client.close()


def test_a_body_trickled_in_gets_its_408_at_the_timeout_in_total(start_sockact):
    # Each byte comes well within the timeout, but the whole body does not: the loop that buffers it
    # (body_buffer) answers 408 once the timeout has passed since the head, not since the last byte.
    server = start_sockact("testapps:echo", "--workers", "1", "--timeout", "2", workers=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\n\r\n")
        started = time.monotonic()
        answer = b""
        sock.settimeout(0.5)
        for _ in range(40):
            try:
                sock.sendall(b"x")
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            break
        sock.settimeout(10)
        answer += read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - started < 2 + 2  # the timeout, plus a margin; trickling all 40 bytes takes 20 s


def test_a_refused_request_is_answered_and_the_rest_of_its_input_dropped(start_sockact):
    # The 400 goes out while more of the client's input waits unread: closing then would make the
    # kernel reset the connection, and a client still sending its request would fail on the reset
    # and never read the 400. The loop reads and drops that input first, then closes cleanly.
    server = start_sockact("testapps:echo", "--workers", "1", workers=1)
    idle = steady(lambda: fd_count(server.pid), "the supervisor's idle fd count")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n" + b"x" * 200_000)  # more than one read takes
        # Read nothing until the server has answered and let go of the connection (the supervisor's
        # copy too): a reset, if one comes, has come by then.
        assert select.select([sock], [], [], 10)[0], "no answer"
        wait_until(lambda: fd_count(server.pid) <= idle, "the server to close the connection")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0  # EPIPE or ECONNRESET: a reset came
    status, headers, body = parse_response(answer)
    assert status == 400 and len(body) == int(headers["content-length"])
    assert http_get(server.port, "/")[0] == 200


@pytest.mark.parametrize("app", ["testapps:echo", "asgiapps:echo"], ids=["wsgi", "asgi"])
def test_bytes_past_the_content_length_of_a_close_request_are_dropped_after_its_answer(start_sockact, app):
    # RFC 9112 9.6: a client that sent "close" sends no further request, and a server "MUST NOT process any
    # further requests received on that connection". The request is whole and valid: it is answered, as its
    # Content-Length says, and what follows it is read and dropped, neither served nor a reset.
    import json

    server = start_sockact(app, "--workers", "1", workers=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(b"POST /once HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"
                     b"GET /smuggled HTTP/1.1\r\nHost: test\r\n\r\n")
        answer = read_to_close(sock)
    status, headers, body = parse_response(answer)
    assert status == 200 and headers["connection"] == "close", answer
    assert json.loads(body)["body"] == "hello", body
    assert answer.count(b"HTTP/1.1 ") == 1 and "/smuggled" not in server.output(), server.output()


@pytest.mark.parametrize("app", ["testapps:pid", "asgiapps:blocking"], ids=["wsgi", "asgi"])
def test_a_host_field_that_is_not_host_and_port_gets_400_and_the_next_client_is_served(start_sockact, app):
    # RFC 9112 3.2: 400 for "a Host header field with an invalid field value", which would otherwise reach
    # the app as SERVER_NAME, the scope's host, and the URLs the app builds from them.
    server = start_sockact(app, "--workers", "1", workers=1)
    for host in (b"a b", b"user@example.com", b"example.com/x", b"x:y"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            assert parse_response(read_to_close(sock))[0] == 400, host
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n")
        assert parse_response(read_to_close(sock))[0] == 200


@pytest.mark.parametrize("app", ["testapps:pid", "asgiapps:blocking"], ids=["wsgi", "asgi"])
def test_a_listener_answers_an_http_1_1_request_without_host_400(start_sockact, app):
    # RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without a Host field; HTTP/1.0 has no such rule.
    server = start_sockact(app, "--workers", "1", workers=1)
    for head, status in ((b"GET / HTTP/1.1\r\n\r\n", 400), (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
                         (b"GET / HTTP/1.0\r\n\r\n", 200)):
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.sendall(head)
            assert parse_response(read_to_close(sock))[0] == status, head


def test_one_clients_pipelined_requests_do_not_hold_the_worker_from_another_client(start_sockact, tmp_path):
    """A client pipelines 300 calls of 10 ms in one segment to a worker of one app thread; another client that
    asks once the first call has begun is served among them, not after all of them (before, the loop served a
    connection's pipelined requests one after the other, seconds of them, before it read any other): its line
    in the access log comes before the pipeline's last."""
    server = start_sockact("testapps:slow", "--workers", "1", "--access-logfile", "-", workers=1)
    started = tmp_path / "started"
    count = 300
    pipeline = b"".join(b"GET /?s=0.01&started=%s&n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % (bytes(started), n)
                        for n in range(count))
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as flood:
        flood.sendall(pipeline + b"GET /?s=0&n=last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        wait_until(started.exists, "the pipeline's first call")
        assert http_get(server.port, "/?s=0&other=1", timeout=30)[0] == 200
        answers = read_to_close(flood)
    assert answers.count(b"HTTP/1.1 200 OK") == count + 1
    log = server.wait_for_log('"GET /?s=0&n=last HTTP/1.1" 200')
    assert log.index('"GET /?s=0&other=1 HTTP/1.1" 200') < log.index('"GET /?s=0&n=last HTTP/1.1" 200')


@pytest.mark.parametrize("interface", sorted(ECHO))
def test_thousands_of_pipelined_health_checks_are_all_answered_by_the_same_worker(start_sockact, interface):
    """5,000 health checks pipelined on one connection, answered on the worker's loop one after another: each gets
    its 200, and the worker lives on (the WSGI loop answered each from the last one's answer, and the
    RecursionError a few hundred deep ended the worker with every client it held)."""
    server = start_sockact(ECHO[interface], "--workers", "1", "--health-path", "/-/health", workers=1)
    (worker,) = server.workers()
    count = 5000
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
        answers = raw_exchange(client, b"GET /-/health HTTP/1.1\r\nHost: t\r\n\r\n" * count
                               + b"GET /-/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert answers.count(b"HTTP/1.1 200 OK") == count + 1
    assert http_get(server.port, "/")[0] == 200
    assert server.workers() == [worker]


@pytest.mark.parametrize("interface", sorted(ECHO))
def test_a_client_that_pipelines_health_checks_and_reads_no_answer_is_let_go_holding_up_no_one(start_sockact,
                                                                                               interface):
    """Health checks pipelined without end by a client that reads no answer: the loop that answers them never waits
    for it (WSGI's blocked in its send for send_timeout, every other client with it), nor buffers their answers
    without bound (ASGI's grew by 25 MB a second): the connection is closed, with a line in the log, and another
    client is served meanwhile."""
    server = start_sockact(ECHO[interface], "--workers", "1", "--health-path", "/-/health", "--send-timeout", "60",
                           workers=1)
    (worker,) = server.workers()
    checks = b"GET /-/health HTTP/1.1\r\nHost: t\r\n\r\n" * 1000
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as greedy:
        greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        greedy.setblocking(False)
        left = [b""]

        def let_go() -> bool:
            with contextlib.suppress(BlockingIOError, ConnectionError):
                pending = left[0] or checks
                left[0] = pending[greedy.send(pending):]  # whole requests: what one send leaves goes first next
            return "the client has not read its answers" in server.output()

        server.waiting(let_go, "the client that reads nothing to be let go", timeout=30)
        assert http_get(server.port, "/")[0] == 200
    assert server.workers() == [worker]


@pytest.mark.parametrize("interface", sorted(ECHO))
def test_a_refused_client_that_sends_on_has_no_more_than_linger_bytes_read(start_sockact, interface):
    """A client refused with a 400 that sends on as fast as it can: the worker reads and drops what comes for a
    while (so that a client still sending reads its 400 before a reset), LINGER_BYTES (256 KiB) at most, then reads
    no more until the close. ASGI's linger read on at the client's pace until its deadline: 2.3 GB in its second on
    loopback, for a worker's CPU; one whose answer waited for the client, until io_timeout."""
    server = start_sockact(ECHO[interface], "--workers", "1", workers=1)
    flood, taken = b"x" * 65536, 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        with contextlib.suppress(OSError):  # the close's reset, or a send that waits on a worker that reads no more
            while taken < 1024 * 1024 * 1024:
                sock.sendall(flood)
                taken += len(flood)
    assert taken < 64 * 1024 * 1024, f"the worker took {taken >> 20} MiB after its 400"
    assert http_get(server.port, "/")[0] == 200


def on_loop(loop: str) -> dict[str, str]:
    """A server's environment for an ASGI worker on ``loop``: "asyncio" (uvloop hidden by tests/without_uvloop),
    else uvloop (installed: the worker's choice); their reports of a client's reset differ."""
    if loop != "asyncio":
        return {}
    return {"PYTHONPATH": os.pathsep.join([str(TESTS / "without_uvloop"), base_env()["PYTHONPATH"]])}


def runs_on(worker: int, loop: str) -> bool:
    """Whether ``worker`` runs on ``loop``, as far as its memory shows: uvloop's library mapped, or not."""
    with open(f"/proc/{worker}/maps") as fh:
        return loop != "asyncio" or "uvloop" not in fh.read()


@pytest.mark.parametrize(("interface", "loop"), [pytest.param("wsgi", "", id="wsgi"),
                                                 pytest.param("asgi", "uvloop", id="asgi"),
                                                 pytest.param("asgi", "asyncio", id="asgi-on-asyncio")])
def test_a_client_that_resets_right_after_part_of_its_next_head_is_let_go_at_once(start_sockact, interface, loop):
    """A keep-alive client reads its answer, sends part of its next head and resets the connection at once, so
    that the bytes and the reset reach the worker together. The worker closes its end then, not at header_timeout:
    under uvloop, a reset that came with the bytes the loop read was never reported to the connection's reader,
    which held the connection's fd (and the supervisor's copy) until the head's deadline. asyncio's loop reports
    it, with no new watch of the connection (a cost of two epoll_ctl per read that only uvloop needs)."""
    server = start_sockact(ECHO[interface], "--workers", "1", "--header-timeout", "60", workers=1,
                           env=on_loop(loop))
    (worker,) = server.workers()
    assert runs_on(worker, loop)
    at_rest = steady(lambda: (fd_count(server.pid), fd_count(worker)), "the fd counts at rest")
    for _ in range(5):
        client = KeepAliveClient(server.port)
        assert client.request("/")[0] == 200
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() resets
        client.sock.send(b"GET / HT")
        client.close()
    server.waiting(lambda: (fd_count(server.pid), fd_count(worker)) == at_rest, "every reset connection closed",
                   timeout=5)
    assert http_get(server.port, "/")[0] == 200


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("behind", [b"x", b"GET /next HT"], ids=["a-byte", "part-of-a-head"])
def test_a_long_poll_whose_client_sends_a_byte_and_resets_hears_it_leave(start_sockact, behind, loop):
    """An ASGI long poll waits for http.disconnect; its client sends a few bytes behind the request and resets the
    connection at once. The app hears the client leave and the connection closes: under uvloop the reset came with
    bytes the loop read, was never reported to the reader, and the poll, its task and its fds stayed for good.
    asyncio's loop reports it without a new watch."""
    server = start_sockact("asgiapps:long_poll", "--workers", "1", activation=False, wait=False,  # it answers no check
                           env=on_loop(loop))
    server.wait_for_log("ready:")
    (worker,) = server.workers()
    assert runs_on(worker, loop)
    at_rest = steady(lambda: (fd_count(server.pid), fd_count(worker)), "the fd counts at rest")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
        client.sendall(b"GET /poll HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_until(lambda: server_has_read(client), "the poll's request read")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() resets
        client.send(behind)
    server.wait_for_log("returned without a response to GET /poll", timeout=5)  # it heard http.disconnect
    server.waiting(lambda: (fd_count(server.pid), fd_count(worker)) == at_rest, "the poll's connection closed",
                   timeout=5)
