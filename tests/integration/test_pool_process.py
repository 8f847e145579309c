"""The pool's and the acceptor's rules with the real process: reloads, boot deadlines, the fd limit, the CPU
policy."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import SOCKACT, KeepAliveClient, Server, base_env, free_port, http_get, wait_until


def test_a_reload_to_fewer_workers_retires_every_old_one(start_sockact, tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('app = "testapps:pid"\nworkers = 3\n')
    server = start_sockact("--config", str(cfg), workers=3)
    old = set(server.workers())
    cfg.write_text('app = "testapps:pid"\nworkers = 1\n')
    server.send(signal.SIGHUP)
    wait_until(lambda: "reload done" in server.output(), "the reload")
    wait_until(lambda: len(server.workers()) == 1, "one worker")
    assert not set(server.workers()) & old


def test_a_failed_reload_keeps_every_setting(start_sockact, tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('app = "testapps:pid"\nworkers = 2\n')
    server = start_sockact("--config", str(cfg), workers=2)
    cfg.write_text('app = "testapps:pid"\nworkers = 4\nno_such_key = 1\n')
    server.send(signal.SIGHUP)
    wait_until(lambda: "reload failed" in server.output(), "the failed reload")
    assert "no_such_key" in server.output()
    victim = server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_workers(2, without=victim)
    time.sleep(0.5)
    assert len(server.workers()) == 2 and "died while starting" not in server.output()
    assert http_get(server.port, "/")[0] == 200


def test_a_boot_past_timeout_is_killed_and_the_old_generation_serves(start_sockact, tmp_path):
    flag = tmp_path / "hang-at-import"
    (tmp_path / "bootapp.py").write_text(
        "import os, time\n"
        f"if os.path.exists({str(flag)!r}):\n"
        "    time.sleep(60)\n"
        "from testapps import pid as app\n")
    server = start_sockact("bootapp:app", "--workers", "1", "--timeout", "2", workers=1,
                           env={"PYTHONPATH": os.pathsep.join([str(tmp_path), *base_env()["PYTHONPATH"].split(
                               os.pathsep)])})
    (old,) = server.workers()
    flag.write_text("")
    server.send(signal.SIGHUP)
    wait_until(lambda: "did not start within" in server.output(), "the boot deadline", timeout=10)
    wait_until(lambda: "reload failed" in server.output(), "the abandoned reload", timeout=10)
    assert "reload failed: the new workers did not start in time; keeping generation 0\n" in server.output()
    # Aborted, not killed blind: its stack names the line of the import that hangs.
    assert f'File "{tmp_path / "bootapp.py"}", line 3 in <module>' in server.output(), server.output()
    assert server.workers() == [old]
    assert http_get(server.port, "/")[0] == 200


def test_at_its_fd_limit_the_supervisor_degrades_and_recovers(tmp_path):
    port = free_port()
    log = tmp_path / "out.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["prlimit", "--nofile=256:256", *SOCKACT, "run", "testapps:pid", "--workers", "2",
                                 "--bind", f"127.0.0.1:{port}", "--no-access-log"],
                                env=base_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: b"ready:" in log.read_bytes(), "ready")
        clients: list[socket.socket] = []
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            clients.append(s)
        answered = 0
        pending = set(clients)
        # Until 150 are answered and the budget is said, with a bound for a loaded machine (one line
        # about the budget per 10 s: the count below allows for two)
        deadline = time.monotonic() + 15
        while pending and time.monotonic() < deadline and (
                answered < 150 or b"open-files limit allows" not in log.read_bytes()):
            for s in select.select(list(pending), [], [], 0.2)[0]:
                pending.discard(s)
                with contextlib.suppress(OSError):
                    answered += s.recv(4096).startswith(b"HTTP/1.1 200")
        assert proc.poll() is None  # alive, and every worker with it
        assert answered >= 150  # those within the budget; the rest wait in the backlog
        for s in clients:
            s.close()
        wait_until(lambda: http_get(port, "/")[0] == 200, "service after the clients left", timeout=30)
        text = log.read_text()
        assert 1 <= text.count("open-files limit allows") <= 2  # said, and once per interval, not per accept
        assert "sent a bad message" not in text and "killing it" not in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_the_supervisor_stays_flat_over_200_recycles(start_sockact):
    server = start_sockact("sockact.apps.hello:app", "--workers", "2", "--max-requests", "1", "--no-access-log",
                           workers=2)
    rss = Path(f"/proc/{server.pid}/status")

    def kib() -> int:
        line = next(x for x in rss.read_text().splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1])

    for _ in range(20):
        assert http_get(server.port, "/")[0] == 200
    before = kib()
    for _ in range(200):
        assert http_get(server.port, "/")[0] == 200
    assert kib() - before < 2048, (before, kib())
    assert server.output().count("recycling it") >= 200


def test_keepalive_clients_on_one_worker_are_not_kept_from_the_others(start_sockact):
    # 50 keep-alive clients spread over both workers: neither holds them all.
    server = start_sockact("testapps:pid", "--workers", "2", "--park-after", "30", workers=2)
    clients = [KeepAliveClient(server.port) for _ in range(50)]
    pids = [json.loads(c.request("/")[2])["pid"] for c in clients]
    assert len(set(pids)) == 2 and min(pids.count(p) for p in set(pids)) >= 15
    for c in clients:
        c.close()


@pytest.mark.parametrize(("prefix", "args", "policy"), [
    ((), (), os.SCHED_BATCH),  # batch_scheduling's default
    ((), ("--no-batch-scheduling",), os.SCHED_OTHER),
    (("chrt", "--idle", "0"), (), os.SCHED_IDLE),  # set from outside (as CPUSchedulingPolicy= does): kept
], ids=["default", "off", "from-outside"])
def test_the_supervisor_and_its_workers_run_under_the_cpu_policy_batch_scheduling_says(prefix, args, policy):
    if prefix and not shutil.which(prefix[0]):
        pytest.skip(f"{prefix[0]} is not installed")
    port = free_port()
    server = Server([*prefix, *SOCKACT, "run", "testapps:pid", "--workers", "2", "--bind", f"127.0.0.1:{port}",
                     "--no-access-log", *args], port, base_env())
    try:
        server.wait_ready(workers=2)
        pids = [server.pid, *server.wait_workers(2)]
        assert [os.sched_getscheduler(pid) for pid in pids] == [policy] * 3, server.output()
        assert http_get(port, "/")[0] == 200
    finally:
        server.stop()


@pytest.mark.parametrize(("prefix", "args", "loop", "pool"), [
    ((), (), os.SCHED_BATCH, os.SCHED_OTHER),  # batch_scheduling's default
    ((), ("--no-batch-scheduling",), os.SCHED_OTHER, os.SCHED_OTHER),
    (("chrt", "--batch", "0"), (), os.SCHED_BATCH, os.SCHED_BATCH),  # set from outside: kept, for every thread
], ids=["default", "off", "from-outside"])
def test_a_workers_pool_threads_run_under_the_default_cpu_policy_its_loop_under_batch(prefix, args, loop, pool):
    # A pool thread's wake-up, when its call's wait ends, is one client's answer: it preempts as any waking
    # thread does. The loop thread (app thread 0, MainThread) keeps SCHED_BATCH, and so does the process.
    if prefix and not shutil.which(prefix[0]):
        pytest.skip(f"{prefix[0]} is not installed")
    port = free_port()
    server = Server([*prefix, *SOCKACT, "run", "testapps:slow", "--workers", "1", "--threads", "1", "--max-threads",
                     "4", "--bind", f"127.0.0.1:{port}", "--no-access-log", *args], port, base_env())
    try:
        server.wait_ready(workers=1)
        [worker] = server.wait_workers(1)
        results: list[dict[str, object]] = []

        def call() -> None:
            status, _, body = http_get(port, "/?s=0.5")
            assert status == 200
            results.append(json.loads(body))

        callers = [threading.Thread(target=call) for _ in range(3)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(10)
        assert len(results) == 3, server.output()
        by_thread = {str(r["thread"]): r["policy"] for r in results}
        pooled = {name: policy for name, policy in by_thread.items() if name.startswith("sockact-app-")}
        assert pooled and set(pooled.values()) == {pool}, by_thread
        assert by_thread.get("MainThread", loop) == loop, by_thread
        assert os.sched_getscheduler(worker) == loop  # the worker's main thread: its loop
    finally:
        server.stop()
