"""A cold start imports only what serving its first request needs: every module the supervisor
imports before its first fork is on the path from connect to first byte (docs/benchmarks.md, cold
activation). Parts of the CLI and settings a plain start does not use are imported when used."""

from __future__ import annotations

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
)


def test_a_default_wsgi_start_imports_nothing_it_does_not_use(start_sockact):
    server = start_sockact("bareapp:app", "--workers", "1")
    status, _, body = http_get(server.port, "/")
    assert status == 200
    held = set(body.decode().split("\n"))
    assert "sockact.worker.wsgirunner" in held  # the app's worker answered, with its modules
    assert sorted(held.intersection(NOT_ON_THE_WSGI_PATH)) == []


def test_a_config_file_and_jitter_still_work_where_they_are_used(start_sockact, tmp_path):
    config = tmp_path / "sockact.toml"
    config.write_text('workers = 1\nmax_requests = 1000\nmax_requests_jitter = 50\n')
    server = start_sockact("bareapp:app", "--config", str(config))
    status, _, body = http_get(server.port, "/")
    assert status == 200
    held = set(body.decode().split("\n"))
    assert {"tomllib", "random"} <= held
