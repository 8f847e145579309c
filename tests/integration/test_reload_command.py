"""`sockact reload --pid` against the real supervisor: exit 0 once the new generation serves, 1 with
the reason when the file is broken or the new code does not load, and the old workers keep serving."""

from __future__ import annotations

import contextlib
import subprocess
import sys

from conftest import SOCKACT, base_env, http_get


def reload(pid: int, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SOCKACT, "reload", "--pid", str(pid), "--max-wait", "30"], env=env,
                          capture_output=True, text=True, timeout=60)


def serve_from_file(start_sockact, tmp_path):
    """A sockact with one worker serving testapps:pid from a config file: (server, the file, its env)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {"RUNTIME_DIRECTORY": str(run_dir)}
    cfg = tmp_path / "sockact.toml"
    cfg.write_text('app = "testapps:pid"\nworkers = 1\n')
    return start_sockact("--config", str(cfg), env=env, workers=1), cfg, env


def test_reload_waits_for_the_new_generation_and_tells_the_truth(start_sockact, tmp_path):
    server, cfg, env = serve_from_file(start_sockact, tmp_path)
    (old,) = server.workers()

    cfg.write_text('app = "testapps:pid"\nworkers = 2\n')
    done = reload(server.pid, base_env(**env))
    assert (done.returncode, done.stderr) == (0, "")
    # when the command returns, the new generation serves: no waiting here
    for _ in range(4):
        assert server.get_json("/")["pid"] != old

    serving = server.wait_workers(2, without=old)
    cfg.write_text('app = "testapps:pid"\nworkers = "two"\n')
    done = reload(server.pid, base_env(**env))
    assert done.returncode == 1
    assert done.stderr.startswith("sockact: reload failed: ") and "'workers'" in done.stderr, done.stderr
    assert sorted(server.workers()) == sorted(serving), "a broken file must not start a generation"
    assert http_get(server.port, "/")[0] == 200

    cfg.write_text('app = "no_such_module_here:app"\nworkers = 2\n')
    done = reload(server.pid, base_env(**env))
    assert done.returncode == 1
    assert "the new code does not load" in done.stderr, done.stderr
    assert sorted(server.wait_workers(2)) == sorted(serving)
    assert http_get(server.port, "/")[0] == 200


def test_a_reload_that_finds_the_file_empty_or_the_app_gone_fails_and_the_app_serves_on(start_sockact, tmp_path):
    server, cfg, env = serve_from_file(start_sockact, tmp_path)
    (old,) = server.workers()

    cfg.write_text("")  # an editor truncated it, and HUP came before it was written again
    done = reload(server.pid, base_env(**env))
    assert done.returncode == 1
    assert done.stderr.startswith("sockact: reload failed: ") and "empty" in done.stderr, done.stderr
    assert server.workers() == [old] and server.get_json("/")["pid"] == old

    cfg.write_text("workers = 1\n")  # the app's line lost
    done = reload(server.pid, base_env(**env))
    assert done.returncode == 1 and "name no app" in done.stderr, done.stderr
    assert server.workers() == [old] and server.get_json("/")["pid"] == old

    # An editor that saves Latin-1: TOML is UTF-8, and the supervisor that read it raised and died.
    cfg.write_bytes('app = "testapps:pid"\n# caf\u00e9\n'.encode("latin-1"))
    done = reload(server.pid, base_env(**env))
    assert done.returncode == 1 and "line 2 is not UTF-8 (byte 0xe9)" in done.stderr, done.stderr
    assert server.workers() == [old] and server.get_json("/")["pid"] == old


def test_a_reload_names_each_changed_setting_it_leaves_for_a_restart_and_applies_the_rest(start_sockact, tmp_path):
    server, cfg, env = serve_from_file(start_sockact, tmp_path)
    (old,) = server.workers()

    # log_level and preload are read once, at start; workers is a new generation's; backlog is ignored under
    # socket activation (said at start), and no restart applies it either
    cfg.write_text('app = "testapps:pid"\nworkers = 2\nbacklog = 64\npreload = true\nlog_level = "warning"\n')
    done = reload(server.pid, base_env(**env))
    assert done.returncode == 0, done.stderr
    told = ('preload: false -> true, applied at the next restart; log_level: "info" -> "warning", applied at the '
            'next restart')
    assert done.stderr == f"sockact: reload done, but not every setting: {told}\n", done.stderr
    out = server.wait_for_log("reload done")
    assert f"reload: settings read only at start changed: {told}" in out
    assert len(server.wait_workers(2, without=old)) == 2, "the settings a reload applies are applied"

    # a setting a reload applies, changed alone: no word of a restart (the others are as at start again)
    serving = server.workers()
    cfg.write_text('app = "testapps:pid"\nworkers = 2\nkeepalive = 5\n')
    done = reload(server.pid, base_env(**env))
    assert (done.returncode, done.stderr) == (0, "")
    server.wait_for_log("generation 2 serving")
    server.wait_workers(2, without=serving[0])
    assert server.output().count("settings read only at start changed") == 1


SLOW_APP = """\
import os
import time

deadline = time.monotonic() + 30
while not os.path.exists(os.environ["GATE_FILE"]) and time.monotonic() < deadline:
    time.sleep(0.01)
from testapps import pid as app
"""


def test_a_reload_that_fails_at_once_during_another_answers_only_its_own_command(start_sockact, tmp_path):
    # A rolling reload waits for its new workers (an app slow to import); meanwhile a second reload reads a file
    # with an error and fails at once. Its failure was published for all, and the first reload's command took it
    # for its own: exit 1, with the other's reason, while its reload went on to serve.
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    gate = tmp_path / "gate"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {"RUNTIME_DIRECTORY": str(run_dir), "GATE_FILE": str(gate)}
    cfg = tmp_path / "sockact.toml"
    gate.touch()
    cfg.write_text('app = "slowapp:app"\nworkers = 1\n')
    server = start_sockact("--config", str(cfg), "--pythonpath", str(tmp_path), env=env, workers=1)
    (old,) = server.workers()
    gate.unlink()
    cfg.write_text('app = "slowapp:app"\nworkers = 2\nlog_level = "warning"\n')  # and one for a restart
    first = subprocess.Popen([*SOCKACT, "reload", "--pid", str(server.pid), "--max-wait", "30"],
                             env=base_env(**env), stderr=subprocess.PIPE, text=True)
    try:
        server.wait_for_log("reloading: starting generation 1")
        cfg.write_text('app = "slowapp:app"\nworkers = "two"\n')
        second = reload(server.pid, base_env(**env))
        assert second.returncode == 1 and "'workers'" in second.stderr, second.stderr
        with contextlib.suppress(subprocess.TimeoutExpired):
            first.wait(1)  # it would have exited by now
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        gate.touch()  # the first reload's workers import their app
        assert first.wait(30) == 0
        assert first.stderr is not None and first.stderr.read() == (
            'sockact: reload done, but not every setting: log_level: "info" -> "warning", applied at the next '
            'restart\n')
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert old not in server.wait_workers(2, without=old)
    assert sorted(p.name for p in run_dir.iterdir()) == ["reload"]  # no request or answer left behind


# A supervisor from before outcomes carried what they keep apart: on SIGHUP it publishes what that supervisor
# published for a file with an error, the reason saying what it keeps (as it logged it), with no "kept".
OLDER_SUPERVISOR = """
import json, os, signal, sys, time
def hup(signum, frame):
    path = os.path.join(os.environ["RUNTIME_DIRECTORY"], "reload")
    with open(path + ".tmp", "w") as f:
        f.write(json.dumps({"seq": 1, "pid": os.getpid(), "ok": False, "reason": sys.argv[1]}) + "\\n")
    os.replace(path + ".tmp", path)
signal.signal(signal.SIGHUP, hup)
print("ready", flush=True)
time.sleep(60)
"""


def test_a_reload_asked_for_while_the_server_starts_is_answered_once_its_generation_serves(start_sockact, tmp_path):
    # A HUP before the first READY: the generation that served first was the reload's, and the command waited
    # out its whole bound for an outcome none published.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (tmp_path / "slowstart.py").write_text("import time\ntime.sleep(2)\nfrom testapps import pid as app\n")
    env = {"RUNTIME_DIRECTORY": str(run_dir)}
    server = start_sockact("slowstart:app", "--workers", "1", "--pythonpath", str(tmp_path), activation=False,
                           wait=False, env=env)
    server.waiting(lambda: "started (generation 0)" in server.output(), "the first worker to start")
    done = reload(server.pid, base_env(**env))
    assert (done.returncode, done.stderr) == (0, "")
    assert "reload done: generation 1 serving" in server.output()
    assert http_get(server.port, "/")[0] == 200


def test_reload_run_against_an_older_supervisor_says_once_what_it_keeps(tmp_path):
    # An upgrade not yet restarted (a virtualenv upgraded in place, a package's files replaced): ExecReload's
    # `sockact reload` is the new one, the supervisor still the old one, whose reason says what it keeps.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = base_env(RUNTIME_DIRECTORY=str(run_dir))
    reason = "s.toml: key 'workers': invalid value 'two': expected an integer; keeping the running settings and workers"
    # Its command line names sockact, as an older supervisor's does (`sockact run ...`): reload signals no other.
    older = subprocess.Popen([sys.executable, "-c", OLDER_SUPERVISOR, reason, "sockact", "run"], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert older.stdout is not None and older.stdout.readline() == "ready\n"
        done = reload(older.pid, env)
    finally:
        older.kill()
        older.wait()
    assert (done.returncode, done.stderr) == (1, f"sockact: reload failed: {reason}\n")
