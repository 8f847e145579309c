"""The real sockact process: activation, hand-off, parking, signals and failures."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import (
    SOCKACT,
    KeepAliveClient,
    base_env,
    fd_count,
    free_port,
    http_get,
    parse_response,
    raw_exchange,
    steady,
    wait_until,
)


def test_socket_activation_serves_the_demo_app(start_sockact):
    server = start_sockact("--workers", "2")
    status, headers, body = http_get(server.port, "/json")
    assert status == 200 and headers["server"].startswith("sockact")
    facts = json.loads(body)
    assert facts["listener"] == "http"  # the name from LISTEN_FDNAMES
    assert facts["supervisor_pid"] == server.pid
    assert facts["worker_pid"] in server.workers()
    assert "handed to this worker over SCM_RIGHTS" in facts["handoff"]


def test_activation_variables_do_not_reach_the_app(start_sockact):
    server = start_sockact("testapps:pid", env={"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "0"})
    info = server.get_json("/")
    assert info["listener"] == "http"
    assert info["inherited"] == []


def test_bind_tcp_and_unix(start_sockact, tmp_path):
    port = free_port()
    path = str(tmp_path / "s.sock")
    server = start_sockact("--bind", f"127.0.0.1:{port}", "--bind", f"api=unix:{path}", "testapps:pid",
                           activation=False, wait=False)
    server.port = port
    server.wait_ready()
    status, _, body = http_get(0, "/", unix=path)
    assert status == 200 and json.loads(body)["pid"] in server.workers()
    assert server.stop() == 0
    assert not os.path.exists(path)  # our own Unix socket is cleaned up


# The same behaviour from either runner: an app of each interface that answers with its worker's pid.
PID_APPS = pytest.mark.parametrize("app", ["testapps:pid", "asgiapps:echo"], ids=["wsgi", "asgi"])


@PID_APPS
def test_keepalive_connection_is_parked_and_redispatched(start_sockact, app):
    server = start_sockact(app, "--workers", "2", "--park-after", "0.01", workers=2)
    client = KeepAliveClient(server.port)
    seen = []
    for _ in range(6):
        status, headers, body = client.request("/")
        assert status == 200 and "close" not in headers.get("connection", "")
        info = json.loads(body)
        seen.append((info["pid"], info["hops"], info["conn"]))
        server.wait_parked(client.sock)  # the supervisor holds it before the next request
    client.close()
    pids = {pid for pid, _, _ in seen}
    assert len(pids) == 2, seen  # one keep-alive client, served by both workers
    assert [hops for _, hops, _ in seen] == [1, 2, 3, 4, 5, 6]
    assert len({conn for _, _, conn in seen}) == 1


def test_pipelined_requests_are_served_in_order(start_sockact):
    server = start_sockact("testapps:echo", workers=2)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"".join(f"GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(5)))
        client = KeepAliveClient.__new__(KeepAliveClient)
        client.sock, client.buf = sock, b""
        paths = [json.loads(client.read_response()[2])["path"] for _ in range(5)]
    assert paths == ["/0", "/1", "/2", "/3", "/4"]


def test_idle_keepalive_connections_cost_workers_nothing(start_sockact):
    server = start_sockact("testapps:pid", "--workers", "2", workers=2)
    idle = []
    for _ in range(1000):
        client = KeepAliveClient(server.port)
        assert client.request("/")[0] == 200
        idle.append(client)
    # Every one of them is parked in the supervisor; the workers hold none.
    # (The supervisor also keeps a copy of each connection a worker holds, so its count alone does
    # not tell parked from held: the workers' counts do.)
    wait_until(lambda: fd_count(server.pid) >= 1000 and all(fd_count(w) < 50 for w in server.workers()),
               "1000 connections parked in the supervisor, none left in the workers")
    # Other clients are served at once meanwhile, and the idle ones are still alive.
    for _ in range(20):
        assert http_get(server.port, "/", timeout=2)[0] == 200
    for client in idle[::100]:
        assert client.request("/")[0] == 200
    for client in idle:
        client.close()


def connections_held(pid: int, port: int) -> int:
    """Client connections to ``port`` that process ``pid`` has open (listeners and other fds aside).

    Counted from /proc rather than from the fd total: a connection a worker has just shut down is
    already over for its client while the supervisor's copy may live on a moment.
    """
    inodes = set()
    with open("/proc/net/tcp") as table:
        for row in table.readlines()[1:]:
            fields = row.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] != "0A":  # 0A: LISTEN
                inodes.add(fields[9])
    held = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            held += link.startswith("socket:[") and link[8:-1] in inodes
    return held


def test_parked_connection_is_closed_after_keepalive(start_sockact):
    # 3 s parked: long enough for this test to see it there on a loaded machine before it closes
    server = start_sockact("testapps:pid", "--workers", "1", "--keepalive", "3", workers=1)
    client = KeepAliveClient(server.port)
    assert client.request("/")[0] == 200
    # From the answer rather than from the moment this test saw the connection parked: that moment
    # can come late on a loaded machine, and the idle time would look short. (The supervisor counts
    # the idle time from the park, park_after after the answer.)
    answered = time.monotonic()
    wait_until(lambda: connections_held(server.pid, server.port) == 1
               and connections_held(server.workers()[0], server.port) == 0, "the connection parked in the supervisor")
    assert client.sock.recv(1) == b""  # the supervisor closed it (the client's timeout is 10 s)
    waited = time.monotonic() - answered
    wait_until(lambda: connections_held(server.pid, server.port) == 0, "the supervisor holding no connection")
    client.close()
    # Here the bound is the behaviour: not closed before --keepalive, and closed soon after it.
    assert 1.5 < waited < 3 + 4


def test_fd_counts_stay_flat(start_sockact):
    server = start_sockact("sockact.apps.hello:app", "--workers", "2", "--no-access-log", workers=2)
    procs = [server.pid, *server.workers()]
    before = steady(lambda: {p: fd_count(p) for p in procs}, "fd counts to settle")
    for i in range(3000):
        if i % 2:
            assert http_get(server.port, "/")[0] == 200
        else:
            client = KeepAliveClient(server.port)
            client.request("/")
            client.request("/")
            client.close()
    # The last connections may still be on their way back to the supervisor to be closed.
    counts: dict[int, int] = {}

    # Not above where they started: the readiness probe's connection may have been closing then (a
    # worker shuts a connection down, which the client sees, just before it closes its fd).
    def flat() -> bool:
        counts.update({p: fd_count(p) for p in procs})
        return all(counts[p] <= before[p] for p in procs)

    with contextlib.suppress(AssertionError):
        wait_until(flat, "fd counts back to where they started")
    assert all(counts[p] <= before[p] for p in procs), (counts, before)


def test_killed_worker_is_replaced(start_sockact):
    server = start_sockact("testapps:pid", "--workers", "2", workers=2)
    victim = server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_workers(2, without=victim)
    for _ in range(10):
        assert http_get(server.port, "/")[0] == 200


def test_term_drains_an_in_flight_request(start_sockact, tmp_path):
    server = start_sockact("testapps:slow", "--workers", "1", workers=1)
    result = {}
    started = tmp_path / "started"

    def slow_request():
        result["response"] = http_get(server.port, f"/?s=1&started={started}")

    thread = threading.Thread(target=slow_request)
    thread.start()
    wait_until(started.exists, "the request to reach the app")
    server.send(signal.SIGTERM)
    thread.join(10)
    assert result["response"][0] == 200
    assert server.proc.wait(10) == 0


def test_term_closes_a_keepalive_response(start_sockact, tmp_path):
    server = start_sockact("testapps:slow", "--workers", "1", workers=1)
    client = KeepAliveClient(server.port)
    box = {}
    started = tmp_path / "started"
    thread = threading.Thread(target=lambda: box.setdefault("r", client.request(f"/?s=1&started={started}")))
    thread.start()
    wait_until(started.exists, "the request to reach the app")
    server.send(signal.SIGTERM)
    thread.join(10)
    status, headers, _ = box["r"]
    assert status == 200 and headers.get("connection") == "close"
    assert server.proc.wait(10) == 0


def test_hup_serves_new_code_without_a_failed_request(start_sockact, tmp_path):
    version = tmp_path / "version"
    version.write_text("1")
    server = start_sockact("testapps:pid", "--workers", "2", env={"TESTAPP_VERSION_FILE": str(version)}, workers=2)
    old_workers = set(server.workers())
    failures, versions = [], []
    stop = threading.Event()

    def load():
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                status, _, body = http_get(server.port, "/", timeout=5)
                if status != 200:
                    failures.append(status)
                else:
                    versions.append(json.loads(body)["version"])
            except OSError as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(versions) >= 20, "the load to be served by the first generation")
    version.write_text("2")
    server.send(signal.SIGHUP)
    wait_until(lambda: versions[-1] == "2", "the new generation to serve", timeout=15)
    # Load goes on while the old generation retires, until none of it is left.
    server.waiting(lambda: not old_workers & set(server.workers()), "the old generation to exit")
    served = len(versions)
    wait_until(lambda: len(versions) >= served + 20, "more load served by the new generation alone")
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    assert versions[0] == "1" and versions[-1] == "2"
    assert not old_workers & set(server.workers())


def test_ttin_and_ttou_change_the_worker_count(start_sockact):
    server = start_sockact("testapps:pid", "--workers", "2", workers=2)
    server.send(signal.SIGTTIN)
    server.wait_workers(3)
    server.send(signal.SIGTTOU)
    server.wait_workers(2)  # one at a time: the kernel merges a signal that is already pending
    server.send(signal.SIGTTOU)
    server.wait_workers(1)
    assert http_get(server.port, "/")[0] == 200


@PID_APPS
def test_max_requests_recycles_workers(start_sockact, app):
    server = start_sockact(app, "--workers", "1", "--max-requests", "5", workers=1)
    pids = [server.get_json("/")["pid"] for _ in range(12)]
    assert len(set(pids)) >= 2
    assert all(pids.count(p) <= 5 for p in set(pids))


# WSGI: an endless loop in an app thread; ASGI: a sync sleep that blocks the worker's loop.
@pytest.mark.parametrize("app", ["testapps:hang", "asgiapps:blocking"], ids=["wsgi", "asgi"])
def test_stuck_worker_is_killed_and_others_serve(start_sockact, app):
    # timeout is also the boot deadline: 2 s, as an ASGI worker's start on a loaded machine came near 1 s
    server = start_sockact(app, "--workers", "2", "--timeout", "2", workers=2)
    before = set(server.workers())
    box: dict = {}

    def hang():
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            box["answer"] = raw_exchange(sock, b"GET /hang?s=60 HTTP/1.1\r\nHost: test\r\n\r\n")

    stuck = threading.Thread(target=hang)
    stuck.start()
    for _ in range(10):
        assert http_get(server.port, "/")[0] == 200
    # The stuck worker is killed and replaced: one pid of the first two is gone, a new one runs.
    server.waiting(lambda: len(before - set(server.workers())) == 1 and len(server.workers()) == 2,
                   "the stuck worker to be killed and replaced", timeout=20)
    [victim] = before - set(server.workers())
    wait_until(lambda: not os.path.exists(f"/proc/{victim}"), "the stuck worker's pid to be gone")
    stuck.join(20)
    assert not stuck.is_alive()
    # Its client learns the request failed: a 504, and the connection closes.
    status, headers, _ = parse_response(box["answer"])
    assert (status, headers["connection"]) == (504, "close"), box["answer"]
    assert "GET /hang" in server.wait_for_log("GET /hang")
    said = server.wait_for_log("504 Gateway Timeout sent")
    assert "before answering GET /hang: 504 Gateway Timeout sent" in said, said
    assert http_get(server.port, "/")[0] == 200


def _kill_mid_request(start_sockact, tmp_path, app: str, path: str,
                      before: Callable[[Any], None] | None = None) -> tuple[object, int, bytes]:
    """Serve ``app`` with one worker (given to ``before`` first, if any), SIGKILL the worker once ``path``
    has touched its ``started`` file, and return (the server, the worker's pid, what the client read until
    the connection closed)."""
    server = start_sockact(app, "--workers", "1", workers=1)
    if before is not None:
        before(server)
    started = tmp_path / "started"
    box: dict = {}

    def exchange() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            box["answer"] = raw_exchange(sock, f"GET {path}&started={started} HTTP/1.1\r\nHost: test\r\n\r\n".encode())

    thread = threading.Thread(target=exchange)
    thread.start()
    wait_until(started.exists, "the request to reach the app")
    [victim] = server.workers()
    os.kill(victim, signal.SIGKILL)
    thread.join(20)
    assert not thread.is_alive()
    return server, victim, box["answer"]


@pytest.mark.parametrize("app", ["testapps:slow", "asgiapps:hang"], ids=["wsgi", "asgi"])
def test_a_worker_killed_before_answering_gives_its_client_a_502(start_sockact, tmp_path, app):
    server, victim, answer = _kill_mid_request(start_sockact, tmp_path, app, "/slow?s=60")
    status, headers, body = parse_response(answer)
    assert (status, headers["connection"], body) == (502, "close", b"502 Bad Gateway\n"), answer
    said = server.wait_for_log("502 Bad Gateway sent")
    assert f"worker {victim} killed by SIGKILL before answering GET /slow: 502 Bad Gateway sent" in said, said
    server.wait_workers(1, without=victim)  # replaced (test_killed_worker_is_replaced serves from it)


def test_a_worker_killed_mid_response_closes_the_connection(start_sockact, tmp_path):
    server, _, answer = _kill_mid_request(start_sockact, tmp_path, "testapps:stream", "/stream?s=60")
    # The head and the first part went out: the truth is a response cut short, not a 502 after it.
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"first part" in answer, answer
    assert b"502" not in answer and b"second part" not in answer, answer
    said = server.wait_for_log("in the middle of the response")
    assert "in the middle of the response to GET /stream: connection closed" in said, said


def test_app_error_gives_500_and_the_worker_lives(start_sockact):
    server = start_sockact("testapps:boom", "--workers", "1", wait=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            status = http_get(server.port, "/")[0]
            break
        except OSError:
            time.sleep(0.05)
    assert status == 500
    workers = server.workers()
    assert http_get(server.port, "/")[0] == 500
    assert server.workers() == workers


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([*SOCKACT, *args], env=base_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout)


def test_app_that_cannot_load_halts_with_its_exit_code():
    result = run_cli("run", "no_such_module:app", "--bind", f"127.0.0.1:{free_port()}")
    assert result.returncode == 5
    assert "no module named 'no_such_module'" in result.stderr


# An app whose import waits for a file to appear, then fails: the test decides when the app fails.
GATED_APP = """\
import os
import time
from collections.abc import Callable
from typing import Any

while not os.path.exists(os.environ["GATE_FILE"]):
    time.sleep(0.01)
raise RuntimeError("this app does not load")
"""
REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"


def _turned_away(sock: socket.socket) -> None:
    """The whole answer of a sockact whose app failed to load: a 503 that says so, then EOF."""
    with sock:
        answer = raw_exchange(sock, b"")
    assert answer, "closed without an answer"
    status, headers, body = parse_response(answer)
    assert status == 503 and headers["connection"] == "close" and "retry-after" in headers, (status, headers)
    assert b"the app failed to load" in body and len(body) == int(headers["content-length"])


@pytest.mark.parametrize("preload", [False, True], ids=["in-the-workers", "preloaded"])
def test_clients_in_the_backlog_when_the_app_fails_to_load_get_a_503(start_sockact, tmp_path, preload):
    """Under systemd a client left in the backlog would start the failed service again at once."""
    gate = tmp_path / "gate"
    (tmp_path / "gatedapp.py").write_text(GATED_APP)
    # a queue of 1: the supervisor takes one client at most, the others wait in the socket's backlog
    server = start_sockact("gatedapp:app", "--pythonpath", str(tmp_path), "--workers", "2", "--queue-size", "1",
                           *(["--preload"] if preload else []), wait=False, env={"GATE_FILE": str(gate)})
    # systemd-socket-activate starts sockact at the first connection, as a .socket unit does
    first = wait_until(lambda: _connect(server.port), "the socket listening")
    clients = [first, *(socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(3))]
    for sock in clients:
        sock.sendall(REQUEST)
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)  # sends nothing, reads late
    gate.touch()  # now the app fails to load
    for sock in clients:
        _turned_away(sock)
    assert server.proc.wait(timeout=20) == 5  # the silent client does not hold the exit up
    _turned_away(silent)
    assert "waiting connections: HTTP/1.1 503 Service Unavailable" in server.output()


def test_a_client_queued_when_the_app_fails_to_load_gets_a_503(start_sockact, tmp_path):
    gate = tmp_path / "gate"
    (tmp_path / "gatedapp.py").write_text(GATED_APP)
    server = start_sockact("gatedapp:app", "--pythonpath", str(tmp_path), "--workers", "1", activation=False,
                           wait=False, env={"GATE_FILE": str(gate)})
    server.wait_workers(1)
    before = steady(lambda: fd_count(server.pid), "the supervisor's fd count after the fork")
    client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    client.sendall(REQUEST)
    # accepted: the supervisor holds it in its queue, no worker being ready
    server.waiting(lambda: fd_count(server.pid) == before + 1, "the connection accepted")
    gate.touch()
    _turned_away(client)
    assert server.proc.wait(timeout=20) == 5


def _connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=10)
    except ConnectionRefusedError:
        return None


def test_bad_settings_give_one_line_and_exit_2(tmp_path):
    result = run_cli("run", "--workers", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["sockact: error: option --workers: invalid value '0': must be >= 1"]
    # An extra digit or two: refused, where the supervisor took gigabytes to plan that many workers.
    huge = tmp_path / "huge.toml"
    huge.write_text("workers = 100000000\n")
    for command in ("check", "run"):
        result = run_cli(command, "--config", str(huge))
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"sockact: error: {huge}: key 'workers': invalid value 100000000: must be <= 512"]
    bad = tmp_path / "bad.toml"
    bad.write_text("workers = 2\nkeepalife = 5\n")
    result = run_cli("check", "--config", str(bad))
    assert result.returncode == 2 and "unknown key 'keepalife'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_prints_the_effective_settings(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('app = "testapps:pid"\nworkers = 3\n[listeners.api]\napp = "testapps:echo"\n')
    result = run_cli("check", "--config", str(good), env={"SOCKACT_KEEPALIVE": "9"})
    assert result.returncode == 0
    assert "workers = 3" in result.stdout and "keepalive = 9.0" in result.stdout
    assert "[listeners.api]" in result.stdout


def test_address_in_use_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("run", "--bind", f"127.0.0.1:{port}")
    assert result.returncode == 3 and "address already in use" in result.stderr


def test_passed_fd_that_is_not_a_listening_stream_socket():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    env = base_env(LISTEN_FDS="1", LISTEN_FDNAMES="http")
    cmd = " ".join(SOCKACT)
    # The socket goes to fd 3 in the child only (dup2 there, before exec), never over this process's fd 3.
    result = subprocess.run(["sh", "-c", f'LISTEN_PID=$$ exec {cmd} run'], env=env, pass_fds=(3,),
                            preexec_fn=lambda: os.dup2(udp.fileno(), 3), capture_output=True, text=True,
                            timeout=20)
    udp.close()
    assert result.returncode == 3 and "not a stream socket" in result.stderr


def test_version_and_help():
    assert run_cli("--version").stdout.strip().startswith("sockact ")
    helptext = run_cli("run", "--help").stdout
    for flag in ("--workers", "--keepalive", "--graceful-timeout", "SOCKACT_WORKERS", "--bind", "--preload"):
        assert flag in helptext


@pytest.mark.parametrize("preload", [True, False])
def test_preload_imports_the_app_once_for_all_workers(start_sockact, preload):
    server = start_sockact("testapps:pid", "--workers", "2", *(["--preload"] if preload else []), workers=2)
    workers = set(server.workers())
    loaded_by = {}

    def both_answered() -> bool:  # new connections go to the least loaded worker: both take turns
        info = json.loads(http_get(server.port, "/")[2])
        loaded_by[info["pid"]] = info["loaded_by"]
        return set(loaded_by) == workers

    wait_until(both_answered, "both workers to answer")
    # Under --preload the supervisor imported the app before forking; otherwise each worker did.
    assert loaded_by == {pid: server.pid if preload else pid for pid in workers}


def test_quick_stop_on_int(start_sockact):
    server = start_sockact("testapps:pid", workers=2)
    workers = server.workers()
    assert server.stop(signal.SIGINT) == 0
    wait_until(lambda: not [w for w in workers if os.path.exists(f"/proc/{w}")], "every worker to exit")


def test_ttou_at_one_worker_says_the_floor_is_reached(start_sockact):
    # "one worker fewer: 1" at each TTOU read as if a worker had gone while nothing changed.
    server = start_sockact("testapps:pid", "--workers", "2", workers=2)
    server.send(signal.SIGTTOU)
    server.wait_workers(1)
    server.waiting(lambda: "one worker fewer: 1" in server.output(), "the first TTOU's line")
    server.send(signal.SIGTTOU)
    server.waiting(lambda: "SIGTTOU ignored: 1 worker is the fewest; nothing changes" in server.output(),
                   "the floor's line")
    assert server.output().count("one worker fewer") == 1
    assert len(server.workers()) == 1 and http_get(server.port, "/")[0] == 200


def test_a_quick_stop_logs_its_502s_as_warnings_with_the_reason(start_sockact, tmp_path):
    # A quick stop (INT, QUIT) is the operator's choice: the requests it cuts off are not app errors.
    server = start_sockact("testapps:slow", "--workers", "1", workers=1)
    started = tmp_path / "started"
    answers: list = []
    client = threading.Thread(target=lambda: answers.append(
        http_get(server.port, f"/?s=30&started={started}", timeout=20)))
    client.start()
    server.waiting(started.exists, "the request to reach the app")
    assert server.stop(signal.SIGINT) == 0
    client.join(20)
    assert answers and answers[0][0] == 502
    (line,) = [x for x in server.output().splitlines() if "502 Bad Gateway sent" in x]
    assert " WARNING " in line and " ERROR " not in line, line
    assert "the quick stop (SIGINT or SIGQUIT) cut it off" in line, line
