"""body_spool: a WSGI request body larger than body_buffer, up to body_spool (chunked: by its decoded size),
is read by the worker's loop into a temporary file before the app is called, so a client that uploads
slowly holds no app thread; wsgi.input then reads the file."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from conftest import (
    Server,
    asleep,
    http_get,
    parse_response,
    raw_exchange,
    read_to_close,
    server_has_read,
    steady,
    upload_across_a_stall,
    wait_until,
)


def chunked(body: bytes, size: int = 777) -> bytes:
    """``body`` in chunks of ``size`` bytes, with its last chunk."""
    pieces = [body[at:at + size] for at in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def upload_head(length: int | None, path: str = "/", close: bool = True) -> bytes:
    """A POST head: with Content-Length ``length``, or chunked when None."""
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return (b"POST %s HTTP/1.1\r\nHost: t\r\n%s\r\n" % (path.encode(), framing)
            + (b"Connection: close\r\n" if close else b"") + b"\r\n")


def body_of(size: int) -> bytes:
    """``size`` bytes of lines of varied lengths, the last one without its newline."""
    line = bytes(range(32, 127)) + b"\n"
    return (line * (size // len(line) + 1))[:size]


def spooling(start_sockact, tmp_path: Path, *args: str) -> tuple[Server, int, Path]:
    """A one-worker server of testapps:digest with body_buffer 1 KiB and $TMPDIR a directory of its own: the
    server, its worker's pid and that directory."""
    spool = tmp_path / "spool"
    spool.mkdir()
    server = start_sockact("testapps:digest", "--workers", "1", "--body-buffer", "1024", *args,
                           env={"TMPDIR": str(spool)}, workers=1)
    [worker] = server.workers()
    return server, worker, spool


def spool_files(pid: int, tmpdir: Path) -> list[int]:
    """The sizes of the files in ``tmpdir`` that process ``pid`` has open (unlinked ones included)."""
    sizes = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(tmpdir)):
                sizes.append(os.stat(f"/proc/{pid}/fd/{fd}").st_size)
        except OSError:
            continue
    return sizes


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_four_slow_uploaders_do_not_stop_service(start_sockact, framing):
    # Two workers of one app thread each: four clients that declare a large body and send it a byte at a time
    # held every app thread in wsgi.input.read() while the app read from the socket itself.
    server = start_sockact("testapps:echo", "--workers", "2", "--threads", "1", "--max-threads", "1", workers=2)
    uploads = []
    try:
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
            sock.sendall(upload_head(1_000_000 if framing == "content-length" else None)
                         + (b"x" if framing == "content-length" else b"10000\r\nx"))
            uploads.append(sock)
        for sock in uploads:
            wait_until(lambda sock=sock: server_has_read(sock), "the loop to read each upload's start")
        for _ in range(3):
            for sock in uploads:
                sock.sendall(b"y")  # they trickle on meanwhile
            for _ in range(4):
                assert http_get(server.port, "/other", timeout=5)[0] == 200
    finally:
        for sock in uploads:
            sock.close()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("size", [1023, 1024, 1025, 4095, 4096, 4097, 20000])
def test_a_spooled_body_reaches_the_app_byte_exact(start_sockact, framing, size):
    # body_buffer 1 KiB, body_spool 4 KiB: in memory, in the file, and past the file's bound (streamed as before;
    # a chunked body past it: the file's part, then the rest as it comes).
    server = start_sockact("testapps:digest", "--workers", "1", "--body-buffer", "1024", "--body-spool", "4096",
                           workers=1)
    body = body_of(size)
    for query in ("", "?lines"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            head = upload_head(size if framing == "content-length" else None, "/" + query)
            wire = body if framing == "content-length" else chunked(body)
            sock.sendall(head + wire[:100])  # the head, then the body in two sends: it is read across reads
            status, _, answer = parse_response(raw_exchange(sock, wire[100:]))
        seen = json.loads(answer)
        assert status == 200, answer
        assert (seen["length"], seen["sha256"]) == (size, hashlib.sha256(body).hexdigest())
        assert seen["content_length"] == (str(size) if framing == "content-length" else "")
        if query:
            assert seen["pieces"] == body.count(b"\n") + 1  # each line, and the last without its newline


def test_pipelined_requests_after_a_spooled_body_are_served_in_turn(start_sockact):
    server = start_sockact("testapps:digest", "--workers", "1", "--body-buffer", "1024", workers=1)
    body = body_of(50000)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(upload_head(len(body), close=False) + body + upload_head(None) + chunked(body))
        answer = read_to_close(sock)
    digest = hashlib.sha256(body).hexdigest()
    assert answer.count(digest.encode()) == 2 and answer.count(b"HTTP/1.1 200 OK") == 2, answer


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_spooled_body_not_whole_in_time_gets_408_and_its_file_is_gone(start_sockact, tmp_path, framing):
    server, worker, spool = spooling(start_sockact, tmp_path, "--timeout", "2")
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        if framing == "content-length":
            sock.sendall(upload_head(100_000) + b"x" * 5000)
        else:
            sock.sendall(upload_head(None) + b"%x\r\n" % 100_000 + b"x" * 5000)
        wait_until(lambda: spool_files(worker, spool), "the body's start in a file")
        status, headers, _ = parse_response(read_to_close(sock))
    assert (status, headers["connection"]) == (408, "close")
    wait_until(lambda: not spool_files(worker, spool), "the file to be closed")
    assert http_get(server.port, "/")[0] == 200


def test_a_spooled_bodys_file_is_gone_after_the_request(start_sockact, tmp_path):
    # The connection stays with the worker after its response (park_after is long): the file goes with the call.
    server, worker, spool = spooling(start_sockact, tmp_path, "--park-after", "60")
    body = body_of(300_000)
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(upload_head(len(body), close=False) + body[:200_000])
        wait_until(lambda: spool_files(worker, spool), "the body's start in a file")
        assert not os.listdir(spool)  # unlinked from the start
        sock.sendall(body[200_000:])
        answer = b""
        while not answer.endswith(b"}"):
            answer += sock.recv(65536)
        status, _, text = parse_response(answer)
        assert status == 200 and json.loads(text)["sha256"] == hashlib.sha256(body).hexdigest()
        wait_until(lambda: not spool_files(worker, spool), "the file to be closed")


@pytest.mark.parametrize("bound", ["--body-spool", "--body-spool-total"])
def test_a_chunked_body_past_the_spool_bound_is_read_on_by_the_app(start_sockact, tmp_path, bound):
    # body_spool bounds the file by the decoded size: past it, the app is called and reads the rest itself. So
    # does the worker's body_spool_total, for a body already spooling: its file stops where it passed it.
    server, worker, spool = spooling(start_sockact, tmp_path, bound, "4096")
    body = body_of(20000)
    wire = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(upload_head(None) + wire[:5006])
        wait_until(lambda: server_has_read(sock) and spool_files(worker, spool), "the body's start in a file")
        sock.sendall(wire[5006:10006])
        wait_until(lambda: server_has_read(sock), "the server to read on")
        assert steady(lambda: spool_files(worker, spool), "the file's size") == [5000]
        status, _, answer = parse_response(raw_exchange(sock, wire[10006:]))
    assert status == 200 and json.loads(answer)["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_large_body_at_a_real_clients_pace_is_not_cut_by_the_deadline(start_sockact):
    # The deadline is timeout from the head plus a second per KiB received: 2 s, and 15 KiB over 3 s.
    server = start_sockact("testapps:digest", "--workers", "1", "--timeout", "2", "--body-buffer", "1024",
                           workers=1)
    body = body_of(15000)
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(upload_head(len(body)))
        for at in range(0, len(body), 1000):
            sock.sendall(body[at:at + 1000])
            time.sleep(0.2)
        status, _, answer = parse_response(read_to_close(sock))
    assert status == 200 and json.loads(answer)["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_worker_that_dies_while_spooling_gives_the_uploader_a_502(start_sockact):
    # Its head is read and its body is coming into a file: on a waiting line, as a body_buffer body is.
    server = start_sockact("testapps:digest", "--workers", "1", "--body-buffer", "1024", workers=1)
    [victim] = server.workers()
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(upload_head(100_000) + b"x" * 5000)
        server.waiting(lambda: server_has_read(sock) and asleep(victim), "the worker to spool the body's start")
        os.kill(victim, signal.SIGKILL)
        answer = read_to_close(sock)
    assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), answer


def test_a_chunked_body_over_the_request_limit_is_refused_by_the_loop(start_sockact):
    server = start_sockact("testapps:digest", "--workers", "1", "--limit-request-body", "5000", workers=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        status, _, _ = parse_response(raw_exchange(sock, upload_head(None) + chunked(b"x" * 6000)))
    assert status == 413


def test_expect_100_continue_goes_out_before_a_spooled_body_is_read(start_sockact):
    server = start_sockact("testapps:digest", "--workers", "1", "--body-buffer", "1024", workers=1)
    body = body_of(5000)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(upload_head(len(body))[:-2] + b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        status, _, answer = parse_response(raw_exchange(sock, body))
    assert status == 200 and json.loads(answer)["sha256"] == hashlib.sha256(body).hexdigest()


def test_a_spooled_body_stays_with_a_stalled_worker(start_sockact, tmp_path):
    # Its body is in the worker's file: handed back, only what follows the body would go with it, and its
    # request would be lost. It waits for the slow call to end instead.
    server = start_sockact("testapps:slow", "--workers", "1", "--threads", "1", "--max-threads", "1",
                           "--body-buffer", "10", workers=1)
    upload_across_a_stall(server, tmp_path, b"Content-Length: 100\r\n\r\n" + b"x" * 50, b"x" * 50)


def start_spool(server: Server, length: int, sent: bytes) -> socket.socket:
    """A client that sends a Content-Length ``length`` head and ``sent`` of its body, once the server has read them."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    sock.sendall(upload_head(length) + sent)
    wait_until(lambda: server_has_read(sock), "the server to read the upload's start")
    return sock


def test_spooled_bodies_past_the_workers_total_get_503_until_one_ends(start_sockact, tmp_path):
    # body_spool_total 3000: a 2000-byte body takes 2000 as its file starts, and a second one does not fit.
    server, worker, spool = spooling(start_sockact, tmp_path, "--body-spool-total", "3000")
    body = body_of(2000)
    first = start_spool(server, len(body), body[:1500])
    wait_until(lambda: spool_files(worker, spool), "the first body in a file")
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        status, headers, _ = parse_response(raw_exchange(sock, upload_head(len(body)) + body[:1500]))
    assert (status, headers["connection"]) == (503, "close")
    assert "body_spool_total" in server.wait_for_log("not spooled")
    # The first goes on, and is served; its bytes come back with its call: a new body is spooled again.
    with first:
        status, _, answer = parse_response(raw_exchange(first, body[1500:]))
    assert status == 200 and json.loads(answer)["sha256"] == hashlib.sha256(body).hexdigest()
    cut = start_spool(server, len(body), body[:1500])
    wait_until(lambda: spool_files(worker, spool), "the next body in a file")
    # A connection closed with its body half sent gives its bytes back too.
    cut.close()
    wait_until(lambda: not spool_files(worker, spool), "the file to be closed")
    with start_spool(server, len(body), body[:1500]) as last:
        status, _, answer = parse_response(raw_exchange(last, body[1500:]))
    assert status == 200 and json.loads(answer)["sha256"] == hashlib.sha256(body).hexdigest()
    assert server.output().count("not spooled") == 1



def test_a_body_longer_than_the_workers_total_is_read_by_the_app_not_refused(start_sockact, tmp_path):
    # body_spool_total 3000 below body_spool: a 5000-byte body could never fit, even in an idle worker's budget.
    # It is no file's, as one past body_spool: the app reads it as it comes, and nothing gets a 503.
    server, worker, spool = spooling(start_sockact, tmp_path, "--body-spool-total", "3000")
    body = body_of(5000)
    with start_spool(server, len(body), body[:1500]) as sock:
        assert not spool_files(worker, spool)
        status, _, answer = parse_response(raw_exchange(sock, body[1500:]))
    assert status == 200 and json.loads(answer)["sha256"] == hashlib.sha256(body).hexdigest()
    assert "not spooled" not in server.output()


def test_an_upload_past_the_workers_total_is_refused_before_100_continue(start_sockact, tmp_path):
    # A client that waits for 100 Continue sends no body until told: one the budget refuses gets its 503 alone,
    # and keeps its body. One the budget takes is told to go on.
    server, _, _ = spooling(start_sockact, tmp_path, "--body-spool-total", "3000")
    body = body_of(2000)
    expect = upload_head(len(body))[:-2] + b"Expect: 100-continue\r\n\r\n"
    with start_spool(server, len(body), body[:1500]) as first:
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.sendall(expect)
            answer = read_to_close(sock)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        status, _, _ = parse_response(raw_exchange(first, body[1500:]))
    assert status == 200
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(expect)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        status, _, answer = parse_response(raw_exchange(sock, body))
    assert status == 200 and json.loads(answer)["sha256"] == hashlib.sha256(body).hexdigest()
