"""`sockact check` says whether `sockact run` would start: a setting that run refuses, check refuses
too, naming it, with a non-zero exit. A log file in a directory that does not exist yet is a warning
in check (systemd makes LogsDirectory= when the service starts) and, in run, a bad setting, as README
promises of every bad value: one line naming it, exit code 2, before any worker starts.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from conftest import SOCKACT, base_env, free_port, http_get


def sockact(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SOCKACT, *args], env=base_env(**env), capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("option", "value", "named"), [
    ("--bind", "127.0.0.1:99999", "--bind"),
    ("--bind", "api=:x", "--bind"),
])
def test_check_refuses_a_setting_that_run_refuses(option, value, named):
    check = sockact("check", option, value, "testapps:echo")
    assert check.returncode == 2, check.stdout[-300:]
    (line,) = check.stderr.strip().splitlines()
    assert line.startswith("sockact: error: ") and named in line, check.stderr
    run = sockact("run", option, value, "testapps:echo")
    assert run.returncode == 2 and named in run.stderr, run.stderr


def test_a_metrics_listener_no_bind_names_is_a_warning_in_check_and_an_error_in_run():
    # Under systemd the name may be a .socket unit's FileDescriptorName=, which check cannot see.
    check = sockact("check", "--metrics-listener", "nosuchlistener", "testapps:echo")
    assert check.returncode == 0, check.stderr
    assert "sockact: warning: metrics_listener: no listener is named 'nosuchlistener'" in check.stderr, check.stderr
    assert "FileDescriptorName=" in check.stderr
    run = sockact("run", "--metrics-listener", "nosuchlistener", "testapps:echo")
    assert run.returncode == 2 and "metrics_listener" in run.stderr, run.stderr


@pytest.mark.parametrize("key", ["access_logfile", "error_logfile"])
def test_a_log_file_whose_directory_is_missing_is_a_warning_in_check_and_an_error_in_run(key):
    option = "--" + key.replace("_", "-")
    path = "/nonexistent/dir/app.log"
    check = sockact("check", option, path, "testapps:echo")
    assert check.returncode == 0, check.stderr
    assert f"sockact: warning: {key}: the directory /nonexistent/dir does not exist" in check.stderr, check.stderr
    run = sockact("run", "--bind", "127.0.0.1:0", option, path, "testapps:echo")
    assert run.returncode == 2, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert f"{key} {path}: No such file or directory" in line, run.stderr


@pytest.mark.parametrize(("where", "args", "env"), [
    ("environment: SOCKACT_BIND", (), {"SOCKACT_BIND": ""}),
    ("environment: SOCKACT_BIND", (), {"SOCKACT_BIND": " "}),
    ("key 'bind'", ("--config", "{toml}"), {}),
])
def test_an_empty_bind_is_a_bad_setting_in_check_and_run_alike(tmp_path, where, args, env):
    # Set empty on purpose (an EnvironmentFile line, bind = []): not the default, and nothing to listen on.
    toml = tmp_path / "sockact.toml"
    toml.write_text("bind = []\n")
    args = tuple(a.format(toml=toml) for a in args)
    for command in ("check", "run"):
        result = sockact(command, *args, "testapps:echo", **env)
        assert result.returncode == 2, (command, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("sockact: error: ") and where in line and "empty" in line, (command, line)


def test_listeners_that_mix_wsgi_and_asgi_apps_fail_check_as_they_fail_run(tmp_path):
    # A worker serves one interface: run halts with exit 5 at its first worker, so check must say so.
    toml = tmp_path / "sockact.toml"
    toml.write_text('app = "testapps:echo"\nbind = ["http=127.0.0.1:0", "api=127.0.0.1:0"]\nworkers = 1\n\n'
                    '[listeners.api]\napp = "asgiapps:echo"\n')
    said = "interface: the listeners mix WSGI and ASGI apps (http (wsgi), api (asgi))"
    for command in ("check", "run"):
        result = sockact(command, "--config", str(toml))
        assert result.returncode == 5 and said in result.stderr, (command, result.stderr[-600:])
    # one interface on every listener: check passes
    toml.write_text('app = "asgiapps:echo"\nbind = ["http=127.0.0.1:0", "api=127.0.0.1:0"]\n\n'
                    '[listeners.api]\nkeepalive = 5\n')
    result = sockact("check", "--config", str(toml))
    assert result.returncode == 0, result.stderr


def test_the_metrics_listener_takes_no_part_in_the_interface(tmp_path, start_sockact):
    # The supervisor answers it; the default app (the WSGI demo here) would serve no listener.
    port, metrics = free_port(), free_port()
    toml = tmp_path / "sockact.toml"
    toml.write_text('workers = 1\n\n[listeners.http]\napp = "asgiapps:echo"\n')
    binds = ("--bind", f"http=127.0.0.1:{port}", "--bind", f"metrics=127.0.0.1:{metrics}")
    check = sockact("check", "--config", str(toml), *binds)
    assert check.returncode == 0, check.stderr
    server = start_sockact("--config", str(toml), *binds, activation=False, wait=False)
    server.port = port
    server.wait_ready(1)
    assert http_get(port, "/x")[0] == 200
    assert b"sockact_workers" in http_get(metrics, "/metrics")[2]


@pytest.mark.parametrize("preload", [False, True])
def test_the_metrics_listeners_app_is_not_loaded_and_the_served_apps_lifespan_runs_once(tmp_path, start_sockact,
                                                                                       preload):
    # The top-level app serves only the metrics listener here, whose connections the supervisor answers: no
    # process imports it, and it has no lifespan. The ASGI app, served on two listeners, has one lifespan in the
    # worker, which runs once each way.
    (tmp_path / "unserved.py").write_text("import os\nprint(f'IMPORTED UNSERVED {os.getpid()}', flush=True)\n"
                                          "async def app(scope, receive, send):\n    raise AssertionError(scope)\n")
    port, api, metrics = free_port(), free_port(), free_port()
    toml = tmp_path / "sockact.toml"
    toml.write_text(f'app = "unserved:app"\nworkers = 1\npreload = {str(preload).lower()}\n\n'
                    '[listeners.http]\napp = "asgiapps:echo"\n\n[listeners.api]\napp = "asgiapps:echo"\n')
    server = start_sockact("--config", str(toml), "--bind", f"http=127.0.0.1:{port}", "--bind", f"api=127.0.0.1:{api}",
                           "--bind", f"metrics=127.0.0.1:{metrics}", activation=False, wait=False,
                           env={"PYTHONPATH": os.pathsep.join([str(tmp_path), base_env()["PYTHONPATH"]])})
    server.port = port
    server.wait_ready(1)
    (worker,) = server.workers()
    assert http_get(port, "/x")[0] == 200 and http_get(api, "/x")[0] == 200
    assert b"sockact_workers" in http_get(metrics, "/metrics")[2]
    server.send(signal.SIGTERM)
    assert server.proc.wait(10) == 0
    said = server.output()
    assert said.count(f"LIFESPAN STARTUP {worker}") == 1 and said.count(f"LIFESPAN SHUTDOWN {worker}") == 1, said
    assert said.count("LIFESPAN STARTUP") == 1 and "IMPORTED UNSERVED" not in said, said
