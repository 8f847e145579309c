"""Bounded memory for ASGI connections and WebSockets, against clients that never read or send too much.

Raw sockets play the hostile clients (a library client reads for you). A worker's memory is read
from /proc: VmHWM is its peak resident set, so a growth that came and went is still seen.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading

import pytest
from conftest import parse_response, read_to_close
from test_metrics import scrape, start, value

MIB = 1024 * 1024
BOUND = 64 * MIB  # the bound on a worker's growth
NEAR = 16 * MIB  # how far above where it was a worker's memory may stay once the client is gone


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of ``pid``, in bytes."""
    fields = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(rest.split()[0]) * 1024
    return fields


def ws_open(port: int, path: str = "/", rcvbuf: int = 0) -> socket.socket:
    """A raw WebSocket after its handshake; with ``rcvbuf``, a small receive buffer (a client that never reads)."""
    sock = ws_handshake(port, path, rcvbuf)
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)  # a byte at a time: the frames after the head stay in the socket
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def ws_handshake(port: int, path: str = "/", rcvbuf: int = 0) -> socket.socket:
    """A raw socket that has sent a WebSocket handshake request, its answer unread."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(30)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    return sock


def frame(opcode: int, payload: bytes = b"", length: int | None = None) -> bytes:
    """A client frame (masked, with a zero key so the payload goes as it is); ``length`` may claim more."""
    size = len(payload) if length is None else length
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    elif size < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", size)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", size)
    return head + b"\0\0\0\0" + payload


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """(opcode, payload) of the next server frame."""
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed in the middle of a frame")
            data += chunk
        return data

    first, second = exactly(2)
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", exactly(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", exactly(8))[0]
    return first & 0x0F, exactly(size)


def close_code(sock: socket.socket) -> int:
    """The code of the server's close frame, skipping the frames before it."""
    while True:
        opcode, payload = read_frame(sock)
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0]


def flood(sock: socket.socket, batch: bytes, limit: int) -> BaseException | None:
    """Send ``batch`` again and again, up to ``limit`` bytes; the error that ended it, if any."""
    sent = 0
    try:
        while sent < limit:
            sock.sendall(batch)
            sent += len(batch)
    except OSError as exc:
        return exc
    return None


@pytest.mark.parametrize("kind", ["echo", "ping"])
def test_a_websocket_client_that_never_reads_is_closed_and_the_worker_stays_small(start_sockact, ws_library, kind):
    server = start_sockact("asgiapps:ws_echo", "--workers", "1", "--ws", ws_library, "--send-timeout", "2",
                           workers=1)
    [worker] = server.workers()
    before = memory(worker)["VmRSS"]
    sock = ws_open(server.port, rcvbuf=4096)
    # Echoed messages, or pings whose pongs go back: either way output the client never takes.
    message = frame(0x2, b"e" * 65536) if kind == "echo" else frame(0x9, b"p" * 125)
    with sock:
        ended = flood(sock, message * (MIB // len(message)), 1024 * MIB)
    assert isinstance(ended, OSError) and not isinstance(ended, TimeoutError), ended
    server.wait_for_log("the client took nothing for send_timeout (2s)")
    peak = memory(worker)["VmHWM"]
    assert peak - before < BOUND, f"worker grew by {(peak - before) / MIB:.0f} MiB"
    assert server.workers() == [worker]
    server.waiting(lambda: memory(worker)["VmRSS"] - before < NEAR, "the worker's memory back near where it was")


def test_a_message_over_ws_max_size_is_refused_with_1009(start_sockact, ws_library):
    server = start_sockact("asgiapps:ws_echo", "--workers", "1", "--ws", ws_library, workers=1)
    [worker] = server.workers()
    before = memory(worker)["VmRSS"]
    with ws_open(server.port) as sock:
        sock.sendall(frame(0x2, b"small"))
        assert read_frame(sock) == (0x2, b"small")
        # A 100 MB frame, sent as it would be, while the server answers.
        sock.sendall(frame(0x2, length=100 * MIB))
        body = threading.Thread(target=flood, args=(sock, b"\0" * MIB, 100 * MIB), daemon=True)
        body.start()
        assert close_code(sock) == 1009
        body.join(30)
    server.wait_for_log("WS DISCONNECT 1009")
    peak = memory(worker)["VmHWM"]
    assert peak - before < BOUND, f"worker grew by {(peak - before) / MIB:.0f} MiB"
    server.waiting(lambda: memory(worker)["VmRSS"] - before < NEAR, "the worker's memory back near where it was")
    # A message at the limit still passes.
    with ws_open(server.port) as sock:
        sock.sendall(frame(0x2, b"m" * 1000))
        assert read_frame(sock) == (0x2, b"m" * 1000)


def test_sessions_closed_for_a_message_in_pieces_past_ws_max_size_give_its_memory_back(start_sockact, ws_library):
    """Client after client sends a message in 60 KB fragments past ws_max_size (16 MiB): each is closed with 1009,
    and the worker's memory comes back near where it was. websockets closes such a session itself, and the pieces
    held so far stayed with the session, which waits for the cyclic collector: 16 MiB more a client, 190 MiB after
    ten of them."""
    server = start_sockact("asgiapps:ws_echo", "--workers", "1", "--ws", ws_library, workers=1)
    [worker] = server.workers()
    before = memory(worker)["VmRSS"]
    first, more = (frame(opcode, b"f" * 60000) for opcode in (0x2, 0x0))
    first, more = (bytes([piece[0] & 0x7F]) + piece[1:] for piece in (first, more))  # not final
    clients = 4
    for _ in range(clients):
        with ws_open(server.port) as sock:
            sock.sendall(first)
            pieces = threading.Thread(target=flood, args=(sock, more * 16, 32 * MIB), daemon=True)
            pieces.start()
            assert close_code(sock) == 1009
            pieces.join(30)
    server.waiting(lambda: server.output().count("WS DISCONNECT 1009") == clients, "every session's end")
    server.waiting(lambda: memory(worker)["VmRSS"] - before < NEAR, "the worker's memory back near where it was")


def test_ws_max_size_is_a_setting(start_sockact, ws_library):
    server = start_sockact("asgiapps:ws_echo", "--workers", "1", "--ws", ws_library, "--ws-max-size", "1000")
    with ws_open(server.port) as sock:
        sock.sendall(frame(0x1, b"t" * 1000))
        assert read_frame(sock) == (0x1, b"t" * 1000)
        # In pieces: the message counts, not the frame.
        sock.sendall(bytes([0x01, 0x80 | 100]) + b"\0\0\0\0" + b"a" * 100)
        sock.sendall(bytes([0x80, 0x80 | 126]) + struct.pack("!H", 901) + b"\0\0\0\0" + b"b" * 901)
        assert close_code(sock) == 1009


def test_a_pipelining_client_that_never_reads_holds_one_response_and_is_let_go(start_sockact):
    server = start_sockact("asgiapps:whole_or_hang", "--workers", "1", "--send-timeout", "1", workers=1)
    [worker] = server.workers()
    before = memory(worker)["VmRSS"]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.settimeout(30)
    with sock:
        # 200 responses of 1 MB each, asked for at once.
        ended = flood(sock, b"GET /whole?bytes=1000000 HTTP/1.1\r\nHost: t\r\n\r\n" * 200, 1)
        assert ended is None
        server.wait_for_log("the client took nothing for send_timeout (1s)")
        answer = read_to_close(sock)  # the connection is closed: EOF, not our timeout
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and len(answer) < 10 * 1_000_000
    peak = memory(worker)["VmHWM"]
    assert peak - before < BOUND, f"worker grew by {(peak - before) / MIB:.0f} MiB"


def test_a_body_cut_short_by_a_half_close_is_a_400_and_no_5xx(start_sockact):
    server, api, metrics = start(start_sockact, "--access-logfile", "-", workers=1, app="asgiapps:echo")
    with socket.create_connection(("127.0.0.1", api), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly ten b")
        sock.shutdown(socket.SHUT_WR)
        status, _, _ = parse_response(read_to_close(sock))
    assert status == 400
    counted = server.waiting(lambda: (s := scrape(metrics))
                             and value(s, "sockact_request_duration_seconds_count", listener="api") == 1 and s,
                             "the request counted")
    assert value(counted, "sockact_requests_total", listener="api", method="POST", code="4xx") == 1
    assert value(counted, "sockact_requests_total", listener="api", method="POST", code="5xx") == 0


def test_a_send_after_http_disconnect_writes_no_500_and_counts_no_5xx(start_sockact):
    # A reset is the client leaving; a half-close is not (test_half_closed_clients.py: it is answered).
    server, api, metrics = start(start_sockact, workers=1, app="asgiapps:send_after_disconnect")
    with socket.create_connection(("127.0.0.1", api), timeout=10) as sock:
        sock.sendall(b"GET /late HTTP/1.1\r\nHost: t\r\n\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.wait_for_log("GOT DISCONNECT")
    counted = server.waiting(lambda: (s := scrape(metrics))
                             and value(s, "sockact_request_duration_seconds_count", listener="api") == 1 and s,
                             "the request counted")
    assert value(counted, "sockact_requests_total", listener="api", method="GET", code="5xx") == 0
    assert "application error" not in server.output()


def test_a_websocket_session_is_one_access_line_when_it_closes(start_sockact, ws_library):
    server = start_sockact("asgiapps:ws_echo", "--workers", "1", "--ws", ws_library, "--access-logfile", "-")
    with ws_open(server.port, "/chat?room=1") as sock:
        sock.sendall(frame(0x1, "héllo".encode()) + frame(0x2, b"12345678"))
        assert read_frame(sock) == (0x1, "héllo".encode())
        assert read_frame(sock) == (0x2, b"12345678")
        sock.sendall(frame(0x8, struct.pack("!H", 1000)))
        assert close_code(sock) == 1000
    line = server.wait_for_log("websocket close=").split("websocket close=")[0].splitlines()[-1]
    assert '"GET /chat?room=1 HTTP/1.1" 101 14 ' in line
    tail = server.output().split("websocket close=")[1].splitlines()[0]
    assert tail.startswith("1000 in=14 out=14 duration="), tail
    assert server.output().count("websocket close=") == 1
    # The same in JSON, and for a refused handshake (no close code: it never opened).
    server = start_sockact("asgiapps:ws_echo", "--workers", "1", "--ws", ws_library, "--access-logfile", "-",
                           "--access-logformat", "json")
    with ws_open(server.port) as sock:
        sock.sendall(frame(0x8, struct.pack("!H", 1001)))
        assert close_code(sock) == 1001
    with pytest.raises(AssertionError, match=r"HTTP/1\.1 403"):
        ws_open(server.port, "/reject")

    def entries() -> list[dict]:
        return [json.loads(line) for line in server.output().splitlines() if '"websocket":' in line]

    opened, refused = server.waiting(lambda: len(found := entries()) == 2 and found, "two websocket lines")
    assert (opened["status"], opened["websocket"]) == (101, {"close_code": 1001, "bytes_in": 0, "bytes_out": 0})
    assert (refused["status"], refused["path"], refused["websocket"]["close_code"]) == (403, "/reject", None)


@pytest.mark.slow
def test_a_message_in_a_million_one_byte_fragments_costs_its_size_not_a_million_objects(start_sockact, ws_library):
    # No keepalive pings: on a loaded machine the message takes more than their interval (20 s), and a ping came
    # where its echo was awaited.
    server = start_sockact("asgiapps:ws_echo", "--workers", "1", "--ws", ws_library, "--ws-ping-interval", "0",
                           workers=1)
    [worker] = server.workers()
    before = memory(worker)["VmRSS"]
    count = 1_000_000
    with ws_open(server.port) as sock:
        sock.sendall(bytes([0x02, 0x81]) + b"\0\0\0\0f")  # a binary message's first byte, not the last
        piece = bytes([0x00, 0x81]) + b"\0\0\0\0f"  # a continuation of one byte
        assert flood(sock, piece * 100_000, (count - 2) // 100_000 * 100_000 * len(piece)) is None
        sock.sendall(piece * ((count - 2) % 100_000) + bytes([0x80, 0x81]) + b"\0\0\0\0f")
        sock.settimeout(60)
        # wsproto parses some 20 us a fragment: on a loaded machine the session's first keepalive ping (20 s) may
        # come before the echo, and its timeout (20 s more) is not reached.
        while (got := read_frame(sock))[0] == 0x9:
            pass
        assert got == (0x2, b"f" * count)
    peak = memory(worker)["VmHWM"]
    assert peak - before < BOUND, f"worker grew by {(peak - before) / MIB:.0f} MiB"
    server.waiting(lambda: memory(worker)["VmRSS"] - before < NEAR, "the worker's memory back near where it was")
