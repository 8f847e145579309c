"""App threads that grow on demand (max_threads), with the real process: a fast request does not wait
behind slow ones, the threads beyond the floor go away when idle, and a thread that came and stuck
is killed by timeout like any other. Bounds are generous: they are the behaviour, not a speed."""

from __future__ import annotations

import functools
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    SOCKACT,
    KeepAliveClient,
    base_env,
    hand_off,
    http_get,
    parse_response,
    raw_exchange,
    read_to_close,
    steady,
    thread_of,
    wait_until,
)


def tasks(pid: int) -> int:
    """Threads of a process, as the kernel counts them."""
    return len(os.listdir(f"/proc/{pid}/task"))


def slow_calls(port: int, count: int, seconds: float, started: Path,
               path: str = "/") -> tuple[list[threading.Thread], list[float]]:
    """``count`` clients each in a ``seconds`` call, returned once all of them are inside the app;
    and the list their answers' arrival times go to."""
    finished: list[float] = []

    def one(i: int) -> None:
        status = http_get(port, f"{path}?s={seconds}&started={started}-{i}", timeout=30)[0]
        assert status == 200
        finished.append(time.monotonic())

    clients = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in clients:
        t.start()
    wait_until(lambda: all(Path(f"{started}-{i}").exists() for i in range(count)), f"{count} calls in the app")
    return clients, finished


@pytest.mark.parametrize("floor", ["1", "4"])  # the loop thread serving calls itself, or a pool of four
def test_a_fast_request_is_answered_while_twelve_slow_calls_fill_its_worker(start_sockact, tmp_path, floor):
    server = start_sockact("testapps:slow", "--workers", "1", "--threads", floor, "--max-threads", "16", workers=1)
    [worker] = server.workers()
    clients, finished = slow_calls(server.port, 12, 1.0, tmp_path / "in")
    started = time.monotonic()
    status, _, body = http_get(server.port, "/?s=0")
    answered = time.monotonic()
    assert status == 200 and json.loads(body)["pid"] == worker  # the one worker served it, beside the twelve
    assert answered - started < 0.2
    assert not finished or min(finished) > answered  # while the slow calls were still in the app
    for t in clients:
        t.join(10)
    assert len(finished) == 12


def test_while_slow_calls_go_to_the_pool_a_path_whose_calls_are_all_short_stays_on_the_loop_thread(start_sockact):
    """Slow calls common (one in five, on /report): the loop hands calls to pool threads, but "/", whose
    calls are all short, is still called by the loop thread itself (no thread switch), and a path whose
    calls vary goes to the pool."""
    server = start_sockact("testapps:slow", "--workers", "1", "--max-threads", "16", workers=1)
    client = KeepAliveClient(server.port)

    thread = functools.partial(thread_of, client)

    def round_of_ten() -> tuple[str, list[str], str]:
        fast = [thread("/?s=0") for _ in range(8)]
        return thread("/report?s=0.01"), fast, thread("/varies?s=0.01")

    deadline = time.monotonic() + 30
    while True:  # until the loop judges slow calls common (it does so once a second)
        report, fast, varies = round_of_ten()
        if report.startswith("sockact-app-") or time.monotonic() > deadline:
            break
    assert report.startswith("sockact-app-"), "slow calls were never handed to the pool"
    on_loop = []
    for _ in range(10):
        report, fast, varies = round_of_ten()
        assert thread("/varies?s=0").startswith("sockact-app-")
        assert report.startswith("sockact-app-") and varies.startswith("sockact-app-")
        on_loop += [name == "MainThread" for name in fast]
    # Handed off, every call would run on a pool thread. A short call that the scheduler makes slow (one
    # in hundreds; many more on a machine loaded past its cores) sends its path to the pool for about a
    # dozen calls, so how many of the 80 stay on the loop thread depends on the machine: some do.
    assert any(on_loop), on_loop
    client.close()


def test_a_worker_that_handed_slow_calls_off_still_does_after_a_pause(start_sockact):
    """Traffic that comes back after a pause is the same app's: its first slow call goes to the pool at
    once, not onto the loop thread (its fast requests waiting for the monitor) until a second has been
    judged again."""
    server = start_sockact("testapps:slow", "--workers", "1", "--max-threads", "16", workers=1)
    client = KeepAliveClient(server.port)
    hand_off(client)
    time.sleep(2.5)  # more than a window with nothing served, the monitor asleep
    assert thread_of(client, "/report?s=0.01").startswith("sockact-app-")
    client.close()


def test_a_connection_whose_last_call_in_its_worker_ran_on_a_pool_thread_goes_on_in_the_next_worker(start_sockact):
    """A pool thread puts a connection whose call ended back in the poller itself, and the loop hears of the
    call's end later. When that call reached max_requests, the loop still parks the connection, and the next
    worker answers its next request: on the same connection, nothing lost."""
    server = start_sockact("testapps:slow", "--workers", "1", "--max-threads", "16", "--max-requests", "3000",
                           workers=1)
    client = KeepAliveClient(server.port)
    hand_off(client)
    first = server.workers()[0]
    threads = []
    for n in range(3000):
        # A path never seen is judged slow: while calls are handed off, each of these goes to a pool thread. One
        # slow call in ten keeps them common, so that the worker goes on handing calls off.
        status, _, body = client.request(f"/new/{n}?s=0" if n % 10 else "/report?s=0.01")
        assert status == 200
        answer = json.loads(body)
        if answer["pid"] != first:
            break
        threads.append(answer["thread"])
    else:
        pytest.fail("the worker never recycled")
    assert threads[-1].startswith("sockact-app-"), threads[-5:]  # the worker's last call ran on a pool thread
    assert client.request("/?s=0")[0] == 200
    client.close()


def test_threads_beyond_the_floor_exit_after_their_idle_timeout(start_sockact, tmp_path):
    server = start_sockact("testapps:slow", "--workers", "1", "--max-threads", "8",
                           "--thread-idle-timeout", "1", workers=1)
    [worker] = server.workers()
    floor = steady(lambda: tasks(worker), "the worker's threads at rest")
    clients, _ = slow_calls(server.port, 6, 0.5, tmp_path / "in")
    grown = tasks(worker)
    assert grown >= floor + 5  # the loop thread serves one call itself; a thread each for the other five
    for t in clients:
        t.join(10)
    # Idle: back to the floor after thread_idle_timeout, and the worker still serves.
    server.waiting(lambda: tasks(worker) == floor, "the threads beyond the floor to exit", timeout=10)
    assert http_get(server.port, "/?s=0")[0] == 200


@pytest.mark.parametrize("floor", [1, 3])  # the loop thread as app thread 0, or a pool whose floor stays
def test_the_metrics_show_threads_in_use_and_the_ceiling(start_sockact, tmp_path, floor):
    parser = pytest.importorskip("prometheus_client.parser")
    from conftest import free_port

    port, metrics = free_port(), free_port()
    server = start_sockact("testapps:slow", "--workers", "2", "--threads", str(floor), "--max-threads", "8",
                           "--thread-idle-timeout", "1",
                           "--bind", f"http=127.0.0.1:{port}", "--bind", f"metrics=127.0.0.1:{metrics}",
                           activation=False, wait=False)
    server.port = port
    server.wait_ready(2)

    def threads() -> dict[str, float]:
        _, _, body = http_get(metrics, "/metrics")
        return {s.name + "".join(s.labels.values()): s.value
                for family in parser.text_string_to_metric_families(body.decode()) for s in family.samples
                if s.name.startswith("sockact_app_threads")}

    idle = 2 * floor  # each worker's floor, started with it (each thread marks its line as it begins)
    at_rest = {"sockact_app_threadsbusy": 0, "sockact_app_threadsidle": idle, "sockact_app_threads_max": 16}
    server.waiting(lambda: threads() == at_rest, "each worker's floor of threads, idle")
    clients, _ = slow_calls(port, 6, 1.0, tmp_path / "in")
    during = threads()
    assert during["sockact_app_threadsbusy"] == 6 and during["sockact_app_threads_max"] == 16
    for t in clients:
        t.join(10)
    server.waiting(lambda: threads()["sockact_app_threadsidle"] == idle and threads()["sockact_app_threadsbusy"] == 0,
                   "the extra threads gone, the floor left", timeout=10)


def test_a_grown_thread_stuck_past_timeout_gets_its_worker_killed_and_its_client_a_504(start_sockact, tmp_path):
    server = start_sockact("testapps:hang", "--workers", "1", "--max-threads", "4", "--timeout", "3", workers=1)
    [worker] = server.workers()
    # The loop thread is in a call of its own, so the hanging request runs on a thread started for it.
    clients, finished = slow_calls(server.port, 1, 1.5, tmp_path / "in", path="/slow")
    box: dict[str, bytes] = {}

    def hang() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            box["answer"] = raw_exchange(sock, b"GET /hang HTTP/1.1\r\nHost: test\r\n\r\n")

    stuck = threading.Thread(target=hang)
    stuck.start()
    for t in clients:
        t.join(10)
    assert len(finished) == 1  # the loop thread's call was answered; the hang goes on
    server.waiting(lambda: worker not in server.workers() and len(server.workers()) == 1,
                   "the stuck worker to be killed and replaced", timeout=20)
    stuck.join(20)
    status, headers, _ = parse_response(box["answer"])
    assert (status, headers["connection"]) == (504, "close"), box["answer"]
    said = server.wait_for_log("504 Gateway Timeout sent")
    assert "before answering GET /hang: 504 Gateway Timeout sent" in said, said
    assert server.get_json("/")["multithread"] is True  # the new worker serves, and tells the app it may


def test_requests_waiting_at_the_ceiling_go_to_each_thread_that_frees_at_once(start_sockact, tmp_path):
    """At the ceiling, a pool thread whose call leaves its connection idle puts it back in the poller itself;
    the requests that wait for a thread must still be given this one as it frees, not at the loop's next event
    (with no other event, a TICK later each: 40 requests would take two seconds)."""
    server = start_sockact("testapps:slow", "--workers", "1", "--max-threads", "2", workers=1)
    # The loop thread in a call of its own: the monitor is the loop, with one pool thread for what comes.
    clients, finished = slow_calls(server.port, 1, 5.0, tmp_path / "in")
    waiting = [KeepAliveClient(server.port) for _ in range(40)]
    started = time.monotonic()
    for client in waiting:
        client.sock.sendall(b"GET /?s=0 HTTP/1.1\r\nHost: test\r\n\r\n")
    answers = [client.read_response() for client in waiting]
    answered = time.monotonic()
    threads = {json.loads(body)["thread"] for _, _, body in answers}
    assert [status for status, _, _ in answers] == [200] * 40 and threads == {"sockact-app-1"}, threads
    assert answered - started < 1.0
    assert not finished  # the loop thread's call still runs: one pool thread served the forty
    for t in clients:
        t.join(10)
    for client in waiting:
        client.close()


def test_sockact_check_names_the_thread_mode():
    def check(*args: str) -> str:
        result = subprocess.run([*SOCKACT, "check", "testapps:pid", *args], env=base_env(), capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "served as WSGI, one request at a time per worker (1 app thread" in check()
    assert "served as WSGI, 1 to 16 app threads per worker: one more starts" in check("--max-threads", "16")
    assert "served as WSGI, 4 app threads per worker, a fixed pool" in check("--threads", "4")
    result = subprocess.run([*SOCKACT, "check", "testapps:pid", "--threads", "65"], env=base_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert result.stderr.strip() == "sockact: error: option --threads: invalid value '65': must be <= 64"


def test_at_the_ceiling_a_stalled_worker_still_hands_its_other_connections_back(start_sockact, tmp_path):
    server = start_sockact("testapps:slow", "--workers", "2", "--max-threads", "2", "--park-after", "30", workers=2)
    held: dict[int, list[KeepAliveClient]] = {}
    while not any(len(clients) == 3 for clients in held.values()):
        client = KeepAliveClient(server.port)
        status, _, body = client.request("/?s=0")
        assert status == 200
        held.setdefault(json.loads(body)["pid"], []).append(client)
    shared = next(pid for pid, clients in held.items() if len(clients) == 3)
    a, b, c = held[shared]
    # Both of its threads (the loop thread, and the one started beside it) in calls that last until
    # the test releases them: the ceiling.
    release = tmp_path / "release"
    slow = [threading.Thread(target=client.request, args=(f"/?s=30&until={release}&started={tmp_path}/{name}",))
            for client, name in ((a, "a"), (b, "b"))]
    for t in slow:
        t.start()
    try:
        wait_until(lambda: (tmp_path / "a").exists() and (tmp_path / "b").exists(), "two calls in the worker")
        status, _, body = c.request("/?s=0")
        assert status == 200
        assert json.loads(body)["pid"] != shared  # handed back, and served by the other worker
        assert all(t.is_alive() for t in slow)  # while both calls still run
    finally:
        release.touch()
        for t in slow:
            t.join(10)


def test_connections_that_come_in_one_message_are_all_called_at_once(start_sockact, tmp_path):
    """Six requests that reach the worker in one CONNS: the loop thread calls the first itself, and the
    monitor, standing in for the loop while that call lasts, gives the other five to pool threads. They
    must not wait in the receiver, where the monitor cannot see them, for the first call to end."""
    server = start_sockact("testapps:slow", "--workers", "1", "--max-threads", "8", workers=1)
    # Short calls to "/" first, so that the loop thread calls "/" itself, whether or not the worker's
    # first calls made it hand calls to the pool for a while (a path whose calls are short stays).
    client = KeepAliveClient(server.port)
    for _ in range(2000):
        if json.loads(client.request("/?s=0")[2])["thread"] == "MainThread":
            break
    else:
        pytest.fail("the loop thread never called / itself")
    os.kill(server.pid, signal.SIGSTOP)  # the six wait in the listen queue: accepted, then sent, together
    try:
        clients = []
        for i in range(6):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            sock.sendall(f"GET /?s=5&started={tmp_path / 'in'}-{i} HTTP/1.1\r\nHost: test\r\n"
                         "Connection: close\r\n\r\n".encode())
            clients.append(sock)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    wait_until(lambda: all((tmp_path / f"in-{i}").exists() for i in range(6)), "six calls in the app", timeout=20)
    answered = select.select(clients, [], [], 0)[0]
    assert not answered, "a call began only once another had ended"
    for sock in clients:
        with sock:
            assert read_to_close(sock).startswith(b"HTTP/1.1 200 ")
    client.close()
