"""max_worker_memory with the real process: a worker that leaks under load is recycled, and no
client, keep-alive ones included, sees an error across the recycle."""

from __future__ import annotations

import json
import threading

from conftest import KeepAliveClient, wait_until

from sockact import memory


def test_a_worker_past_max_worker_memory_is_recycled_under_load_and_no_request_fails(start_sockact):
    server = start_sockact("testapps:leak", "--workers", "2", "--max-worker-memory", "100M", workers=2)
    first = sorted(server.workers())
    assert all((memory.uss(pid) or 0) < 100 << 20 for pid in first)
    stop = threading.Event()
    sent, failed = [0], []

    def keep_asking() -> None:
        client = KeepAliveClient(server.port)
        try:
            while not stop.is_set():
                sent[0] += 1
                try:
                    status, _, _ = client.request("/")
                    if status != 200:
                        failed.append(status)
                except OSError as exc:
                    failed.append(repr(exc))
                    client.close()
                    client = KeepAliveClient(server.port)
        finally:
            client.close()

    clients = [threading.Thread(target=keep_asking) for _ in range(4)]
    for t in clients:
        t.start()
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
        stop.set()
        for t in clients:
            t.join(10)
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
    client = KeepAliveClient(server.port)

    def leaked_in_high() -> bool:  # the request leaks only where it reaches the higher pid
        status, _, body = client.request(f"/leak?mb=120&pid={high}")
        return status == 200 and json.loads(body)["pid"] == high

    wait_until(leaked_in_high, "a request served by the worker with the higher pid")
    wait_until(lambda: high not in server.workers(), "the leaking worker recycled", timeout=20)
    server.wait_workers(2, without=high)
    assert low in server.workers()  # over the limit by RSS only: kept
    assert client.request("/")[0] == 200
    client.close()
