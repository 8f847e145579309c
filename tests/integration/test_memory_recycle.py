"""max_worker_memory with the real process: a worker that leaks under load is recycled, and no
client, keep-alive ones included, sees an error across the recycle."""

from __future__ import annotations

import base64
import json
import os
import threading

from conftest import KeepAliveClient, http_get, wait_until

from sockact.supervisor import memory


class KeepAsking:
    """Keep-alive clients that ask for / until stopped, counting what they sent and what failed."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port = port
        self.sent = [0]  # a list, so that a test reads the count as it grows
        self.failed: list[object] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._ask) for _ in range(clients)]
        for t in self._threads:
            t.start()

    def _ask(self) -> None:
        client = KeepAliveClient(self.port)
        try:
            while not self._stop.is_set():
                self.sent[0] += 1
                try:
                    status, _, _ = client.request("/")
                    if status != 200:
                        self.failed.append(status)
                except OSError as exc:
                    self.failed.append(repr(exc))
                    client.close()
                    client = KeepAliveClient(self.port)
        finally:
            client.close()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


def test_a_worker_past_max_worker_memory_is_recycled_under_load_and_no_request_fails(start_sockact):
    server = start_sockact("testapps:leak", "--workers", "2", "--max-worker-memory", "100M", workers=2)
    first = sorted(server.workers())
    assert all((memory.uss(pid) or 0) < 100 << 20 for pid in first)
    load = KeepAsking(server.port)
    sent, failed = load.sent, load.failed
    try:
        leaker = KeepAliveClient(server.port)
        status, _, body = leaker.request("/leak?mb=150")  # past the limit, for good
        leaker.close()
        assert status == 200
        victim = json.loads(body)["pid"]
        wait_until(lambda: victim not in server.workers(), "the leaking worker recycled", timeout=20)
        successor = server.wait_workers(2, without=victim)
        mark = sent[0]
        wait_until(lambda: sent[0] > mark + 200, "the clients served on after the recycle")
    finally:
        load.stop()
    print(f"requests across the recycle: {sent[0]} sent, {len(failed)} failed")
    assert failed == [] and sent[0] > 100
    log = server.output()
    assert f"worker {victim} holds " in log and "past max_worker_memory 100.0M" in log
    assert [pid for pid in first if pid != victim] == [pid for pid in successor if pid in first]  # one recycled


def test_pages_shared_with_a_preloaded_app_do_not_count_and_every_worker_is_looked_at(start_sockact):
    # Each worker maps the preloaded app's 150 MiB: RSS past the limit, USS far below. Only the worker
    # that leaks on top of it is recycled, whichever of the two it is.
    server = start_sockact("testapps:leak", "--preload", "--workers", "2", "--max-worker-memory", "100M",
                           env={"TESTAPP_SHARED_MB": "150"}, workers=2)
    low, high = sorted(server.workers())
    assert (memory.rss(low) or 0) > 100 << 20 and (memory.uss(low) or 0) < 100 << 20

    def leaked_in_high() -> bool:  # the request leaks only where it reaches the higher pid
        # A new connection each time: the supervisor gives each to the worker given work longest ago, so
        # the next one goes to the other worker (one keep-alive connection would stay where it began).
        status, _, body = http_get(server.port, f"/leak?mb=120&pid={high}")
        return status == 200 and json.loads(body)["pid"] == high

    wait_until(leaked_in_high, "a request served by the worker with the higher pid")
    wait_until(lambda: high not in server.workers(), "the leaking worker recycled", timeout=20)
    server.wait_workers(2, without=high)
    assert low in server.workers()  # over the limit by RSS only: kept
    assert http_get(server.port, "/")[0] == 200


def test_memory_pressure_collects_in_every_worker_and_recycles_the_largest_and_no_request_fails(start_sockact,
                                                                                             tmp_path):
    """MemoryPressureWatch= (systemd 254+) as systemd passes it, with a FIFO for the PSI file: a byte
    written to it is a pressure event, as sd-event takes it."""
    fifo = tmp_path / "memory.pressure"
    os.mkfifo(fifo)
    env = {"MEMORY_PRESSURE_WATCH": str(fifo),
           "MEMORY_PRESSURE_WRITE": base64.b64encode(b"some 200000 2000000\0").decode()}
    server = start_sockact("testapps:leak", "--workers", "2", env=env, workers=2)
    server.wait_for_log(f"watching memory pressure: {fifo}")
    first = sorted(server.workers())

    def collections_of(pid: int) -> int:
        """Asked while the clients keep both workers busy, so that the answer comes from each in turn."""
        def answer() -> tuple[int] | None:
            client = KeepAliveClient(server.port)
            reply = json.loads(client.request("/gc")[2])
            client.close()
            return (reply["collections"],) if reply["pid"] == pid else None
        return wait_until(answer, f"an answer from worker {pid}", timeout=30)[0]

    leaker = KeepAliveClient(server.port)
    victim = json.loads(leaker.request("/leak?mb=60")[2])["pid"]
    leaker.close()
    survivor = next(pid for pid in first if pid != victim)
    load = KeepAsking(server.port)
    sent, failed = load.sent, load.failed
    try:
        wait_until(lambda: sent[0] > 50, "the clients going")
        before = collections_of(survivor)
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"!")
        os.close(fd)
        wait_until(lambda: victim not in server.workers(), "the largest worker recycled", timeout=20)
        successor = server.wait_workers(2, without=victim)
        mark = sent[0]
        wait_until(lambda: sent[0] > mark + 200, "the clients served on after the recycle")
        after = collections_of(survivor)
    finally:
        load.stop()
    print(f"requests across the pressure recycle: {sent[0]} sent, {len(failed)} failed")
    assert failed == [] and sent[0] > 100
    assert survivor in successor  # only the largest was recycled
    assert after > before  # and the others collected their garbage
    log = server.output()
    assert f"memory pressure: the workers collect their garbage; recycling worker {victim}, the largest" in log
