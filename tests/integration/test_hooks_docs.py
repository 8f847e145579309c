"""docs/hooks.md's OpenTelemetry and prometheus_client set-ups, run as the page writes them (the code
blocks are taken from the page), with the SDKs from PyPI, against the real sockact."""

from __future__ import annotations

import json
import re
import signal
import threading
from pathlib import Path

import pytest
from conftest import http_get

ROOT = Path(__file__).resolve().parents[2]

WSGI = '''\
import os, time
from prometheus_client import Gauge
from myproject.metrics_view import metrics
from myproject.traced import traced

UP = Gauge("myproject_workers_up", "workers that imported the app", multiprocess_mode="livesum")
UP.inc()

def hello(environ, start_response):
    if environ["PATH_INFO"] == "/metrics":
        return metrics(environ, start_response)
    if environ["PATH_INFO"] == "/slow":
        time.sleep(0.3)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

application = traced(hello)
'''


def page_files() -> dict[str, str]:
    """The page's Python blocks, by the path their first line names."""
    text = (ROOT / "docs" / "hooks.md").read_text()
    return {m["path"]: m["body"] for m in re.finditer(r"```python\n# (?P<path>myproject/\w+\.py)\n(?P<body>.*?)```",
                                                          text, re.S)}


def project(tmp_path: Path, hooks: str) -> Path:
    root = tmp_path / "project"
    (root / "myproject").mkdir(parents=True)
    (root / "myproject" / "__init__.py").write_text("")
    for path, body in page_files().items():
        (root / path).write_text(body)
    (root / "myproject" / "wsgi.py").write_text(WSGI)
    prom = tmp_path / "prom"
    prom.mkdir()
    (prom / "stale_from_last_run.db").write_text("")
    cfg = root / "sockact.toml"
    cfg.write_text(f'app = "myproject.wsgi:application"\nworkers = 2\nchdir = "{root}"\n'
                   f'env = ["PROMETHEUS_MULTIPROC_DIR={prom}"]\n\n[hooks]\n{hooks}')
    return cfg


def serve_both(server, workers: list[int]) -> None:
    """Slow requests side by side until each worker has served one."""
    served: set[int] = set()

    def one() -> None:
        served.add(int(http_get(server.port, "/slow")[2]))

    for _ in range(10):
        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if served >= set(workers):
            return
    raise AssertionError(f"only {served} of {workers} served")


def test_opentelemetry_server_spans_from_every_worker(start_sockact, tmp_path):
    pytest.importorskip("opentelemetry.sdk")
    cfg = project(tmp_path, 'post_fork = "myproject.otel_hooks:post_fork"\n'
                            'worker_exit = "myproject.otel_hooks:worker_exit"\n')
    # spans leave only when a batch is full or the worker exits: what arrives came through worker_exit
    server = start_sockact("--config", str(cfg), env={"OTEL_BSP_SCHEDULE_DELAY": "600000"}, workers=2)
    workers = server.wait_workers(2)
    serve_both(server, workers)
    assert '"kind": "SpanKind.SERVER"' not in server.output()
    cfg.write_text(cfg.read_text().replace("workers = 2", "workers = 1"))
    server.send(signal.SIGHUP)
    server.wait_workers(1, without=workers[0])
    server.wait_workers(1, without=workers[1])

    def spans() -> list[dict]:
        return [json.loads(line) for line in server.output().splitlines() if line.startswith('{"name": ')]

    found = server.waiting(lambda: {s["resource"]["attributes"]["process.pid"] for s in spans()} >= set(workers)
                           and spans(), "the old workers' spans")
    for span in found:  # the fixture's readiness probes ask for /, the test for /slow
        assert span["kind"] == "SpanKind.SERVER" and span["name"] == f"GET {span['attributes']['url.path']}"
        assert span["resource"]["attributes"]["service.instance.id"].startswith("worker-")
    slow = {s["resource"]["attributes"]["process.pid"] for s in found if s["name"] == "GET /slow"}
    assert slow == set(workers)


def test_prometheus_multiprocess_gauges_forget_exited_workers(start_sockact, tmp_path):
    pytest.importorskip("prometheus_client")
    cfg = project(tmp_path, 'on_starting = "myproject.prom_hooks:on_starting"\n'
                            'worker_exit = "myproject.prom_hooks:worker_exit"\n')
    server = start_sockact("--config", str(cfg), workers=2)
    assert not (tmp_path / "prom" / "stale_from_last_run.db").exists()  # on_starting cleared it

    def up() -> float:
        body = http_get(server.port, "/metrics")[2].decode()
        return float(re.search(r"^myproject_workers_up (\S+)$", body, re.M)[1])

    assert up() == 2.0
    workers = server.wait_workers(2)
    cfg.write_text(cfg.read_text().replace("workers = 2", "workers = 1"))
    server.send(signal.SIGHUP)
    server.wait_workers(1, without=workers[0])
    server.wait_workers(1, without=workers[1])
    # two old workers gone through worker_exit, one new: without mark_process_dead this would say 3
    assert server.waiting(lambda: up() == 1.0, "the gauge counting one worker")
