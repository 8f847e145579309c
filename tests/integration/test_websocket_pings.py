"""WebSocket keepalive pings of the real sockact, with either library: a raw-socket client that never
answers them is taken for gone (the app hears 1006, the connection closes, the metrics count it), and
one that answers keeps its quiet session for as many pings as it likes."""

from __future__ import annotations

import json
import signal
import struct
import threading
import time

import pytest
from conftest import http_get
from test_asgi_limits import BOUND, MIB, NEAR, flood, frame, memory, read_frame, ws_open
from test_metrics import scrape, start, value

PING, PONG, CLOSE, TEXT = 0x9, 0xA, 0x8, 0x1
# Fractions of a second, so that a test sees several rounds: the behaviour is the same at 20 s.
FAST = ("--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.5")


def sessions(metrics: int, close: str | None = None) -> float:
    samples = scrape(metrics)
    if close is None:
        return value(samples, "sockact_websockets_open", listener="api")
    return value(samples, "sockact_websockets_ended_total", listener="api", close=close)


def test_a_client_that_answers_no_ping_is_taken_for_gone(start_sockact, ws_library):
    server, api, metrics = start(start_sockact, "--ws", ws_library, *FAST, workers=1, app="asgiapps:ws_echo")
    with ws_open(api) as sock:
        server.waiting(lambda: sessions(metrics) == 1, "the session open")
        opcode, payload = read_frame(sock)
        assert opcode == PING and payload, (opcode, payload)  # a payload its pong must echo
        # Never answered: the next frame is the close (websockets' and uvicorn's code and reason), then the end.
        opcode, payload = read_frame(sock)
        assert (opcode, payload) == (CLOSE, struct.pack("!H", 1011) + b"keepalive ping timeout")
        assert sock.recv(100) == b""
    # The app hears what it hears of a client that vanished, and the metrics count it as one.
    server.wait_for_log("WS DISCONNECT 1006")
    assert "no answer to a ping within ws_ping_timeout (0.5s): the client is taken for gone" in server.output()
    server.waiting(lambda: sessions(metrics, "1006") == 1, "the session counted as ended with 1006")
    assert sessions(metrics) == 0
    assert "websocket close=1006" in server.output()  # its access line


@pytest.mark.parametrize("timing", [FAST, ("--ws-ping-interval", "0.3", "--ws-ping-timeout", "0.3")],
                         ids=["interval-under-timeout", "interval-equals-timeout"])
def test_a_client_that_answers_pings_keeps_its_quiet_session(start_sockact, ws_library, timing):
    # Equal, uvicorn's defaults: a pong leaves the session's deadline where it was, and no new one is scheduled.
    server, api, metrics = start(start_sockact, "--ws", ws_library, *timing, workers=1, app="asgiapps:ws_echo")
    with ws_open(api) as sock:
        payloads = []
        while len(payloads) < 6:  # six intervals and more, every ping answered and nothing else said
            opcode, payload = read_frame(sock)
            assert opcode == PING, (opcode, payload)
            payloads.append(payload)
            sock.sendall(frame(PONG, payload))
        assert len(set(payloads)) == len(payloads)  # each ping its own: an old pong answers none
        assert sessions(metrics) == 1
        sock.sendall(frame(TEXT, b"still here"))
        while (got := read_frame(sock))[0] == PING:
            sock.sendall(frame(PONG, got[1]))
        assert got == (TEXT, b"still here")
        sock.sendall(frame(CLOSE, struct.pack("!H", 1000)))
    server.waiting(lambda: sessions(metrics, "1000") == 1, "the session ended by the client's close")
    assert sessions(metrics, "1006") == 0
    assert "WS DISCONNECT 1006" not in server.output()



def test_an_app_that_never_receives_keeps_a_client_that_answers(start_sockact, ws_library):
    # Its pongs wait unparsed behind the app, which never receives: the bytes that brought them say the client is
    # there. One that sends nothing is taken for gone all the same, and the app's next send finds out.
    server, api, metrics = start(start_sockact, "--ws", ws_library, *FAST, workers=1, app="asgiapps:ws_ticks")
    with ws_open(api) as answering, ws_open(api) as silent:
        pings = 0
        while pings < 6:
            opcode, payload = read_frame(answering)
            if opcode == PING:
                pings += 1
                answering.sendall(frame(PONG, payload))
            else:
                assert (opcode, payload) == (TEXT, b"tick")
        while (got := read_frame(silent))[0] != CLOSE:
            assert got[0] in (PING, TEXT), got
        assert got[1] == struct.pack("!H", 1011) + b"keepalive ping timeout"
        server.wait_for_log("WS TICKS STOPPED")
        assert sessions(metrics, "1006") == 1
        assert sessions(metrics) == 1  # the one that answers


def test_an_app_that_neither_receives_nor_sends_runs_on_after_its_session_until_the_worker_stops(start_sockact,
                                                                                                ws_library):
    # Its client answers no ping: the session ends, the client gets its close frame and then the FIN. Nothing tells
    # an app that awaits neither receive() nor send(), and sockact, as uvicorn, does not cancel it then: its task runs
    # on, its session counted open, until it returns or its worker stops. A stop waits for it until shortly before
    # graceful_timeout, then the worker cancels it and exits by itself, before the supervisor's kill.
    server, api, metrics = start(start_sockact, "--ws", ws_library, *FAST, "--graceful-timeout", "2", workers=1,
                                 app="asgiapps:ws_silent")
    (worker,) = server.workers()
    with ws_open(api) as sock:
        server.wait_for_log("WS SILENT ACCEPTED")
        while (got := read_frame(sock))[0] == PING:
            pass
        assert got == (CLOSE, struct.pack("!H", 1011) + b"keepalive ping timeout")
        assert sock.recv(100) == b""  # the FIN, though the app runs on
    server.wait_for_log("no answer to a ping within ws_ping_timeout")
    assert json.loads(http_get(api, "/")[2]) == {"running": 1}
    assert sessions(metrics) == 1 and "websocket close=" not in server.output()  # said once the app returns
    server.send(signal.SIGTERM)
    assert server.proc.wait(15) == 0
    said = server.output()
    assert "WS SILENT STOPPED CancelledError" in said and f"worker {worker} exited with code 0" in said, said
    assert f"worker {worker}: 1 tasks still running" in said and "killing it" not in said, said


def test_a_reload_ends_an_old_worker_held_by_such_an_app_before_graceful_timeout(start_sockact, ws_library):
    # Retired by the reload, the old worker waits for the app's task, which never returns: shortly before
    # graceful_timeout it cancels it and exits by itself, where it lived on with the old code for good (and then
    # was killed by the supervisor at graceful_timeout, the bound that stays for a task that cannot be cancelled).
    server, api, _ = start(start_sockact, "--ws", ws_library, *FAST, "--graceful-timeout", "2", workers=1,
                           app="asgiapps:ws_silent")
    (old,) = server.workers()
    with ws_open(api) as sock:
        server.wait_for_log("WS SILENT ACCEPTED")
        while read_frame(sock)[0] == PING:
            pass
    server.send(signal.SIGHUP)
    server.wait_for_log("reload done")
    server.waiting(lambda: old not in server.workers(), "the old worker gone", timeout=10)
    server.wait_for_log(f"worker {old} exited with code 0")
    assert f"worker {old}: 1 tasks still running" in server.output()
    assert "killing it" not in server.output()
    assert http_get(api, "/")[0] == 200


def test_a_client_that_sends_on_and_never_reads_is_let_go_and_holds_up_no_one(start_sockact, ws_library):
    """A client floods the echo app with 64 KiB messages and reads nothing, while pings fall due: its bytes keep
    "answering" them, so it is the send_timeout that must let it go (its echoes wait for it), within seconds, with
    the worker's memory bounded. Meanwhile a session on the same worker that reads and answers its pings, and
    plain requests, are served, and that session stays open."""
    server, api, metrics = start(start_sockact, "--ws", ws_library, *FAST, "--send-timeout", "2", workers=1,
                                 app="asgiapps:ws_echo")
    [worker] = server.workers()
    before = memory(worker)["VmRSS"]
    with ws_open(api) as answering, ws_open(api, rcvbuf=4096) as greedy:
        ended: list[object] = []

        def send_on() -> None:
            ended.append(flood(greedy, frame(0x2, b"e" * 65536), 1024 * MIB))  # None only if never stopped
            ended.append(time.monotonic())

        started = time.monotonic()
        sender = threading.Thread(target=send_on)
        sender.start()
        exchanges = 0
        while sender.is_alive() and time.monotonic() - started < 30:
            answering.sendall(frame(TEXT, b"still here"))
            while (got := read_frame(answering))[0] == PING:
                answering.sendall(frame(PONG, got[1]))
            assert got == (TEXT, b"still here")
            asked = time.monotonic()
            assert http_get(api, "/", timeout=10)[0] == 200
            assert time.monotonic() - asked < 2, "a plain request waited behind the client that never reads"
            exchanges += 1
            time.sleep(0.05)
        sender.join(30)
        assert isinstance(ended[0], OSError) and not isinstance(ended[0], TimeoutError), ended
        # Its echoes stop moving within a second of the flood's start (the kernel's buffers fill); then send_timeout.
        assert ended[1] - started < 2 + 8, ended[1] - started
        assert exchanges >= 5
        server.waiting(lambda: sessions(metrics, "1006") == 1, "the flooding session counted as ended")
        assert sessions(metrics) == 1  # the one that reads
    peak = memory(worker)["VmHWM"]
    print(f"let go after {ended[1] - started:.2f}s; worker {before / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB")
    assert peak - before < BOUND, f"worker grew by {(peak - before) / MIB:.0f} MiB"
    server.waiting(lambda: memory(worker)["VmRSS"] - before < NEAR, "the worker's memory back near where it was")
    assert server.workers() == [worker]
