"""A cold start does only what serving its first request needs: every module the supervisor
imports before its first fork is on the path from connect to first byte (docs/benchmarks.md, cold
activation). Parts of the CLI and settings a plain start does not use are imported when used, and
the garbage collector waits until the first fork (sockact/gcpause.py)."""

from __future__ import annotations

import gc

from conftest import http_get

# Each is imported where it is used, and a WSGI app served with the defaults uses none of them.
NOT_ON_THE_WSGI_PATH = (
    "asyncio",  # an ASGI app's worker only
    "tomllib",  # a config file only
    "difflib",  # a "did you mean" hint only
    "random",  # max_requests_jitter only
    "pathlib",  # worker cgroups (worker_memory_limit) only
    "sockact.systemd.cgroups",
    "sockact.supervisor.metricserver",  # a metrics listener only
    "sockact.supervisor.exposition",
    "sockact.reloadctl",  # `sockact reload` only
    "sockact.config.fromgunicorn",  # `sockact convert` and a misnamed setting only
    "sockact.manpage",
    "sockact.asgi.lifespan",
    "shutil",  # argparse asks it the terminal's width; sockact's parser finds the width itself (cli.py)
    "bz2",  # shutil's
    "lzma",
    "datetime",  # the access log's JSON and journal times only (logs/access.py)
    "base64",  # a Basic authentication's user in the access log, or systemd's memory pressure watch
    "http",  # HTTPStatus: an error's reason phrase only
    "urllib.parse",  # a path with a % only (http/requests.py)
)


def test_a_default_wsgi_start_imports_nothing_it_does_not_use(start_sockact):
    server = start_sockact("bareapp:app", "--workers", "1")
    status, _, body = http_get(server.port, "/")
    assert status == 200
    held = set(body.decode().split("\n")[1:])
    assert "sockact.worker.wsgirunner" in held  # the app's worker answered, with its modules
    assert sorted(held.intersection(NOT_ON_THE_WSGI_PATH)) == []


def collector(body: bytes) -> tuple[bool, int, int]:
    """bareapp's first line: whether the worker's collector is on, its first threshold, how many
    objects are frozen."""
    _, enabled, threshold, frozen = body.decode().split("\n")[0].split()
    return enabled == "1", int(threshold), int(frozen)


def test_the_start_s_objects_are_frozen_and_the_workers_collect(start_sockact):
    server = start_sockact("bareapp:app", "--workers", "1")
    enabled, threshold, frozen = collector(http_get(server.port, "/")[2])
    assert enabled and threshold == gc.get_threshold()[0]  # the default, as the supervisor found it
    assert frozen > 10000  # the modules, classes and settings the start made


def test_a_preloaded_app_that_turns_the_collector_off_keeps_it_off(start_sockact):
    server = start_sockact("gcoffapp:app", "--workers", "1", "--preload")
    enabled, threshold, _ = collector(http_get(server.port, "/")[2])
    assert not enabled and threshold == gc.get_threshold()[0]


def test_a_worker_takes_the_trust_and_line_builder_the_supervisor_made_before_the_fork(start_sockact):
    """Made in the worker, they would run compilers there (worker/shell.py, prepare): a worker's hit in
    each cache is one the supervisor filled, since a worker asks for each once."""
    server = start_sockact("keptapp:app", "--workers", "1", "--forwarded-allow-ips", "10.0.0.0/8,unix")
    status, _, body = http_get(server.port, "/")
    assert status == 200
    trust, builder = (tuple(int(n) for n in line.split()) for line in body.decode().split("\n"))
    assert trust[0] >= 1 and builder[0] >= 1


def test_a_config_file_and_jitter_still_work_where_they_are_used(start_sockact, tmp_path):
    config = tmp_path / "sockact.toml"
    config.write_text('workers = 1\nmax_requests = 1000\nmax_requests_jitter = 50\n')
    server = start_sockact("bareapp:app", "--config", str(config))
    status, _, body = http_get(server.port, "/")
    assert status == 200
    held = set(body.decode().split("\n")[1:])
    assert {"tomllib", "random"} <= held
