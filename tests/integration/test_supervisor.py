"""The real sockact process: activation, hand-off, parking, signals and failures."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

from conftest import SOCKACT, KeepAliveClient, base_env, fd_count, free_port, http_get


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


def test_keepalive_connection_is_parked_and_redispatched(start_sockact):
    server = start_sockact("testapps:pid", "--workers", "2", workers=2)
    client = KeepAliveClient(server.port)
    seen = []
    for _ in range(6):
        status, headers, body = client.request("/")
        assert status == 200 and "close" not in headers.get("connection", "")
        info = json.loads(body)
        seen.append((info["pid"], info["hops"], info["conn"]))
        time.sleep(0.02)  # the worker parks the connection before the next request arrives
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
    time.sleep(0.3)
    assert fd_count(server.pid) >= 1000
    assert all(fd_count(w) < 50 for w in server.workers())
    # Other clients are served at once meanwhile, and the idle ones are still alive.
    for _ in range(20):
        assert http_get(server.port, "/", timeout=2)[0] == 200
    for client in idle[::100]:
        assert client.request("/")[0] == 200
    for client in idle:
        client.close()


def test_fd_counts_stay_flat(start_sockact):
    server = start_sockact("sockact.apps.hello:app", "--workers", "2", "--no-access-log", workers=2)
    procs = [server.pid, *server.workers()]
    before = {p: fd_count(p) for p in procs}
    for i in range(3000):
        if i % 2:
            assert http_get(server.port, "/")[0] == 200
        else:
            client = KeepAliveClient(server.port)
            client.request("/")
            client.request("/")
            client.close()
    time.sleep(0.5)
    assert {p: fd_count(p) for p in procs} == before


def test_killed_worker_is_replaced(start_sockact):
    server = start_sockact("testapps:pid", "--workers", "2", workers=2)
    victim = server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_workers(2, without=victim)
    for _ in range(10):
        assert http_get(server.port, "/")[0] == 200


def test_term_drains_an_in_flight_request(start_sockact):
    server = start_sockact("testapps:slow", "--workers", "1", workers=1)
    result = {}

    def slow_request():
        result["response"] = http_get(server.port, "/?s=1.5")

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.5)
    server.send(signal.SIGTERM)
    thread.join(10)
    assert result["response"][0] == 200
    assert server.proc.wait(10) == 0


def test_term_closes_a_keepalive_response(start_sockact):
    server = start_sockact("testapps:slow", "--workers", "1", workers=1)
    client = KeepAliveClient(server.port)
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("r", client.request("/?s=1")))
    thread.start()
    time.sleep(0.3)
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
    time.sleep(0.5)
    version.write_text("2")
    server.send(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (not versions or versions[-1] != "2"):
        time.sleep(0.1)
    time.sleep(0.5)
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


def test_max_requests_recycles_workers(start_sockact):
    server = start_sockact("testapps:pid", "--workers", "1", "--max-requests", "5", workers=1)
    pids = [server.get_json("/")["pid"] for _ in range(12)]
    assert len(set(pids)) >= 2
    assert all(pids.count(p) <= 5 for p in set(pids))


def test_stuck_worker_is_killed_and_others_serve(start_sockact):
    server = start_sockact("testapps:hang", "--workers", "2", "--timeout", "1", workers=2)
    box: dict = {}

    def hang():
        try:
            box["status"] = http_get(server.port, "/hang", timeout=10)[0]
        except (OSError, IndexError) as exc:
            box["error"] = exc  # the killed worker's connection just closes

    stuck = threading.Thread(target=hang)
    stuck.start()
    for _ in range(10):
        assert http_get(server.port, "/")[0] == 200
    stuck.join(15)
    deadline = time.monotonic() + 10
    while "stuck" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "GET /hang" in server.output()
    server.wait_workers(2)
    assert http_get(server.port, "/")[0] == 200


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


def test_bad_settings_give_one_line_and_exit_2(tmp_path):
    result = run_cli("run", "--workers", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["sockact: error: option --workers: invalid value '0': must be >= 1"]
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
    os.dup2(udp.fileno(), 3) if udp.fileno() != 3 else None
    env = base_env(LISTEN_FDS="1", LISTEN_FDNAMES="http")
    cmd = " ".join(SOCKACT)
    result = subprocess.run(["sh", "-c", f'LISTEN_PID=$$ exec {cmd} run'], env=env, pass_fds=(3,),
                            capture_output=True, text=True, timeout=20)
    udp.close()
    assert result.returncode == 3 and "not a stream socket" in result.stderr


def test_version_and_help():
    assert run_cli("--version").stdout.strip().startswith("sockact ")
    helptext = run_cli("run", "--help").stdout
    for flag in ("--workers", "--keepalive", "--graceful-timeout", "SOCKACT_WORKERS", "--bind", "--preload"):
        assert flag in helptext


def test_preload_serves_and_workers_share_the_app(start_sockact):
    server = start_sockact("testapps:pid", "--workers", "2", "--preload", workers=2)
    assert server.get_json("/")["pid"] in server.workers()


def test_quick_stop_on_int(start_sockact):
    server = start_sockact("testapps:pid", workers=2)
    workers = server.workers()
    assert server.stop(signal.SIGINT) == 0
    time.sleep(0.2)
    assert not [w for w in workers if os.path.exists(f"/proc/{w}")]
