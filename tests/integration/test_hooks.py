"""Server hooks against the real sockact: each runs in the process, and at the moment, it is
documented for (docs/hooks.md), with and without preload; one that does not import stops the start."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import SOCKACT, base_env, http_get

# Every hook and the app's import append one JSON line: which, in which process, with what it was given.
HOOKS = '''\
import json, os

def record(event, **fields):
    with open(os.environ["HOOK_LOG"], "a") as fh:
        fh.write(json.dumps({"event": event, "pid": os.getpid(), "ppid": os.getppid(), **fields}) + "\\n")

def on_starting(server):
    record("on_starting", server_pid=server.pid, workers=server.cfg.workers)

def when_ready(server):
    server.log.info("hook when_ready ran")
    record("when_ready", server_pid=server.pid)

def on_reload(server):
    record("on_reload", server_pid=server.pid, workers=server.cfg.workers)

def post_fork(server, worker):
    record("post_fork", server_pid=server.pid, worker_pid=worker.pid, number=worker.number)

def worker_exit(server, worker):
    record("worker_exit", server_pid=server.pid, worker_pid=worker.pid, number=worker.number)
'''
APP = '''\
import myhooks
myhooks.record("app_import")

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''
TOML = '''\
app = "hookapp:application"
workers = {workers}
chdir = "{root}"

[hooks]
on_starting = "myhooks:on_starting"
when_ready = "myhooks:when_ready"
on_reload = "myhooks:on_reload"
post_fork = "myhooks:post_fork"
worker_exit = "myhooks:worker_exit"
'''


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def project(tmp_path: Path, workers: int, preload: bool) -> tuple[Path, Path]:
    root = tmp_path / "project"
    root.mkdir()
    (root / "myhooks.py").write_text(HOOKS)
    (root / "hookapp.py").write_text(APP)
    cfg = root / "sockact.toml"
    cfg.write_text(("preload = true\n" if preload else "") + TOML.format(workers=workers, root=root))
    return root, cfg


@pytest.mark.parametrize("preload", [False, True], ids=["import-per-worker", "preload"])
def test_each_hook_runs_in_its_process_at_its_moment(start_sockact, tmp_path, preload):
    _, cfg = project(tmp_path, 2, preload)
    log = tmp_path / "hooks.jsonl"
    server = start_sockact("--config", str(cfg), env={"HOOK_LOG": str(log)}, workers=2)
    sup = server.pid
    first = server.waiting(lambda: [e for e in events(log) if e["event"] == "when_ready"] and events(log),
                           "when_ready")
    assert http_get(server.port, "/")[0] == 200
    names = [e["event"] for e in first]
    assert names[0] == "on_starting" and first[0]["pid"] == sup == first[0]["server_pid"]
    assert first[0]["workers"] == 2
    forks = [e for e in first if e["event"] == "post_fork"]
    assert len(forks) == 2 and {e["number"] for e in forks} == {1, 2}
    for e in forks:  # in the worker itself, before it imports the app
        assert e["pid"] == e["worker_pid"] != sup and e["ppid"] == sup == e["server_pid"]
    imports = [e for e in first if e["event"] == "app_import"]
    if preload:
        assert [e["pid"] for e in imports] == [sup] and names.index("app_import") < names.index("post_fork")
    else:
        assert sorted(e["pid"] for e in imports) == sorted(e["pid"] for e in forks)
        for e in forks:
            assert first.index(e) < next(i for i, x in enumerate(first) if x["event"] == "app_import"
                                         and x["pid"] == e["pid"])
    ready = names.index("when_ready")
    assert first[ready]["pid"] == sup and ready > max(first.index(e) for e in forks)
    assert "hook when_ready ran" in server.output()

    # a reload: on_reload in the supervisor with the new settings, then the old workers exit cleanly
    old = {e["pid"] for e in forks}
    cfg.write_text(cfg.read_text().replace("workers = 2", "workers = 1"))
    server.send(signal.SIGHUP)
    server.waiting(lambda: {e["pid"] for e in events(log) if e["event"] == "worker_exit"} >= old, "old workers' exit")
    after = events(log)[len(first):]
    reload = next(e for e in after if e["event"] == "on_reload")
    assert reload["pid"] == sup and reload["workers"] == 1
    new_forks = [e for e in after if e["event"] == "post_fork"]
    assert len(new_forks) == 1 and after.index(reload) < after.index(new_forks[0])
    for e in after:
        if e["event"] == "worker_exit":
            assert e["pid"] == e["worker_pid"] and e["ppid"] == sup and e["number"] in (1, 2)
    # a stop: the serving worker exits cleanly too, and runs worker_exit before it goes
    server.wait_workers(1)
    assert server.stop() == 0
    exits = {e["pid"] for e in events(log) if e["event"] == "worker_exit"}
    assert exits == old | {new_forks[0]["pid"]}


def test_a_hook_that_does_not_import_stops_the_start(tmp_path):
    root, cfg = project(tmp_path, 1, False)
    (root / "myhooks.py").write_text("import nosuch_dependency_here\n")
    for command in ("run", "check"):
        result = subprocess.run([*SOCKACT, command, "--config", str(cfg), "--bind", "127.0.0.1:0"],
                                env=base_env(HOOK_LOG=str(tmp_path / "log")), capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 5, result.stderr
        assert (f"hooks.on_starting 'myhooks:on_starting': importing myhooks failed: No module named "
                f"'nosuch_dependency_here'; at {root / 'myhooks.py'}, line 1: import nosuch_dependency_here"
                in result.stderr), result.stderr


def test_a_misspelt_hook_is_a_one_line_error_with_the_name_meant(tmp_path):
    # The settings hint at a misspelt key; a misspelt hook is the same slip, in check and in run alike.
    cfg = tmp_path / "sockact.toml"
    cfg.write_text('[hooks]\npost_frok = "myhooks:post_fork"\n')
    for command in ("check", "run"):
        result = subprocess.run([*SOCKACT, command, "--config", str(cfg), "--bind", "127.0.0.1:0", "testapps:echo"],
                                env=base_env(), capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert "no hook is called 'post_frok' (did you mean 'post_fork'?" in line, line


# sys.exit() in a hook is a hook that raised: it ended the service without a line (on_reload: at a
# `systemctl reload`), and in post_fork made its worker die at start again and again, unexplained.
@pytest.mark.parametrize(("failure", "said", "why"), [
    ('raise RuntimeError("broke")', "RuntimeError: broke", "hook post_fork raised RuntimeError: broke"),
    ("raise SystemExit(3)", "SystemExit: 3", "hook post_fork called sys.exit(3)")])
def test_a_hook_that_raises_is_logged_and_post_fork_fails_the_worker(start_sockact, tmp_path, failure, said, why):
    root, cfg = project(tmp_path, 1, False)
    source = (root / "myhooks.py").read_text()
    (root / "myhooks.py").write_text(source.replace('    server.log.info("hook when_ready ran")', f"    {failure}"))
    log = tmp_path / "hooks.jsonl"
    server = start_sockact("--config", str(cfg), env={"HOOK_LOG": str(log)}, workers=1)
    out = server.wait_for_log(said)
    assert "hook when_ready (when_ready) raised\nTraceback" in out
    assert http_get(server.port, "/")[0] == 200
    (root / "myhooks.py").write_text(source.replace('def post_fork(server, worker):\n',
                                                    f'def post_fork(server, worker):\n    {failure}\n'))
    result = subprocess.run([*SOCKACT, "run", "--config", str(cfg), "--bind", "127.0.0.1:0"],
                            env=base_env(HOOK_LOG=str(log)), capture_output=True, text=True, timeout=60)
    assert result.returncode == 4, result.stderr
    assert said in result.stderr and "in post_fork" in result.stderr
    # the line it stops on names the hook, not the app, which loaded fine
    assert f"the workers cannot start (worker exit code 4: {why}); stopping" in result.stderr, result.stderr

