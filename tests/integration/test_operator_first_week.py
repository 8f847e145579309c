"""What an operator meets in the first week, typed as they type it: a Unix socket for a proxy that
runs as another user, a setting in the file that a flag or the environment overrides, a TOML line
with a typo of the syntax."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import tempfile

from conftest import SOCKACT, base_env, http_get, wait_until


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SOCKACT, *args], env=base_env(**(env or {})), capture_output=True, text=True,
                          timeout=30)


def test_a_unix_socket_bound_by_hand_takes_connections_from_any_user_as_a_socket_units_does(start_sockact):
    # nginx connects as www-data; a socket made under the usual umask 022 is 0755, and connect() needs
    # write permission: every request was nginx's 502 (Permission denied). A .socket unit's default
    # SocketMode= is 0666; the directory's permissions are the place to restrict who may connect.
    with tempfile.TemporaryDirectory(prefix="sockact-run-") as run_dir:
        os.chmod(run_dir, 0o755)  # as /run/app is
        path = os.path.join(run_dir, "app.sock")
        server = start_sockact("testapps:pid", "--bind", f"unix:{path}", activation=False, wait=False)
        server.wait_for_log("ready:")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
        if os.geteuid() == 0:  # as a user who owns neither the socket nor the process
            client = subprocess.run(["curl", "-sS", "--unix-socket", path, "http://localhost/"], user=65534,
                                    group=65534, extra_groups=[], capture_output=True, text=True, timeout=20)
            assert client.returncode == 0, client.stderr
            assert json.loads(client.stdout)["pid"] in server.workers()
        assert http_get(0, "/", unix=path)[0] == 200
        server.stop()


def test_a_unix_socket_whose_directory_is_missing_says_which_and_who_makes_it(tmp_path):
    path = tmp_path / "run" / "app.sock"
    result = run_cli("run", "testapps:pid", "--bind", f"unix:{path}")
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].endswith(f"bind 'unix:{path}': the directory {path.parent} does not exist; make it "
                              "first (under systemd, RuntimeDirectory= does)"), result.stderr


def test_a_file_setting_that_a_flag_or_the_environment_overrides_is_said_at_start_at_reload_and_by_check(
        start_sockact, tmp_path):
    # The operator edits the file and reloads; a flag in ExecStart= or a drop-in's Environment= wins over the
    # file, so nothing changes: the reload said "done" and nothing else, and the start said nothing either.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {"RUNTIME_DIRECTORY": str(run_dir), "SOCKACT_KEEPALIVE": "5"}
    cfg = tmp_path / "sockact.toml"
    cfg.write_text('app = "testapps:pid"\nworkers = 2\n')
    server = start_sockact("--config", str(cfg), "--workers", "1", env=env, workers=1)
    by_flag = f"workers = 2 in {cfg} is not applied: option --workers gives 1, which wins over the file"
    assert f"WARNING sockact: {by_flag}" in server.output()
    (old,) = server.workers()

    cfg.write_text('app = "testapps:pid"\nworkers = 2\nkeepalive = 30\nmax_requests = 100\n')
    done = subprocess.run([*SOCKACT, "reload", "--pid", str(server.pid), "--config", str(cfg)],
                          env=base_env(**env), capture_output=True, text=True, timeout=60)
    by_env = f"keepalive = 30.0 in {cfg} is not applied: SOCKACT_KEEPALIVE in the environment gives 5.0, which wins " \
             "over the file"
    assert (done.returncode, done.stderr) == (0, f"sockact: reload done, but not every setting: {by_env}\n")
    assert f"WARNING sockact.supervisor: reload: {by_env}" in server.output()
    server.wait_workers(1, without=old)  # max_requests, which nothing overrides, is applied

    said = run_cli("check", "--config", str(cfg), "--workers", "1", env={"SOCKACT_KEEPALIVE": "5"})
    assert said.returncode == 0, said.stderr
    assert f"sockact: warning: {by_flag}\nsockact: warning: {by_env}\n" in said.stderr
    assert "not applied" not in run_cli("check", "--config", str(cfg), "--workers", "2").stderr


def test_settings_refused_together_name_where_each_came_from(tmp_path):
    cfg = tmp_path / "sockact.toml"
    cfg.write_text("max_threads = 4\n")
    for command in ("check", "run"):
        result = run_cli(command, "--config", str(cfg), "--threads", "8")
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [
            f"sockact: error: max_threads = 4 (in {cfg}) is below threads = 8 (option --threads); it is the ceiling "
            "the pool grows to (0: as many as threads)"], result.stderr
    cfg.write_text("preload = true\n")
    result = run_cli("run", "--config", str(cfg), "--reload", env={"SOCKACT_WORKERS": "1"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"sockact: error: reload = true (option --reload) cannot be combined with preload = true (in {cfg}): a "
        "reload re-forks a preloaded app without re-importing it"], result.stderr


TOML_MISTAKES = [
    ('workers = 2\nkeepalive = 5\n\nworkers = 3\n',
     "not valid TOML at line 4: key 'workers' is set twice (line 1 sets it too); keep one"),
    ('[listeners.api]\nkeepalive = 5\nkeepalive = 6\n',
     "not valid TOML at line 3: key 'keepalive' is set twice (line 2 sets it too); keep one"),
    ('app = testapps:pid\n',
     "not valid TOML at line 1: key 'app': Invalid value; a string is written in quotes: app = \"testapps:pid\""),
    ('workers = 2\nkeepalive = 5s  # a comment\n',
     "not valid TOML at line 2: key 'keepalive': Expected newline or end of document after a statement; a "
     "number is written bare, without a unit: keepalive = 5"),
    ('worker_memory_limit = 512M\n',  # a size is a string: its unit stays, in quotes
     "not valid TOML at line 1: key 'worker_memory_limit': Expected newline or end of document after a statement; "
     "a string is written in quotes: worker_memory_limit = \"512M\""),
    ('preload = True\n', "not valid TOML at line 1: key 'preload': Invalid value; TOML's true and false are "
                         "lowercase: preload = true"),
    ('workers: 2\n', "not valid TOML at line 1: key 'workers': Expected '=' after a key in a key/value pair"),
]


def test_a_toml_syntax_mistake_names_the_line_its_key_and_what_to_write(start_sockact, tmp_path):
    cfg = tmp_path / "sockact.toml"
    for text, said in TOML_MISTAKES:
        cfg.write_text(text)
        for command in ("check", "run"):
            result = run_cli(command, "--config", str(cfg), "testapps:pid")
            assert result.returncode == 2, result.stderr
            assert result.stderr.splitlines() == [f"sockact: error: config file {cfg}: {said}"], result.stderr
    # and a reload that finds one fails with the same line, the running workers serving on
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {"RUNTIME_DIRECTORY": str(run_dir)}
    cfg.write_text('app = "testapps:pid"\nworkers = 1\n')
    server = start_sockact("--config", str(cfg), env=env, workers=1)
    cfg.write_text('app = "testapps:pid"\nworkers = 1\nworkers = 2\n')
    done = subprocess.run([*SOCKACT, "reload", "--pid", str(server.pid), "--config", str(cfg)],
                          env=base_env(**env), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith(f"sockact: reload failed: config file {cfg}: not valid TOML at line 3: key "
                                  "'workers' is set twice (line 2 sets it too); keep one"), done.stderr
    assert http_get(server.port, "/")[0] == 200


def test_a_reload_of_a_pid_that_is_no_supervisor_signals_nothing_and_names_the_one_to_give(start_sockact, tmp_path):
    # A worker's pid, read off `ps`: it ignored the HUP, and the command waited a minute for an outcome that
    # never came. Another program's pid: the HUP killed it, and the command said it "exited before the
    # reload finished".
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {"RUNTIME_DIRECTORY": str(run_dir)}
    server = start_sockact("testapps:pid", "--workers", "1", env=env, activation=False, workers=1)
    (worker,) = server.workers()

    def reload(pid: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SOCKACT, "reload", "--pid", str(pid)], env=base_env(**env), capture_output=True,
                              text=True, timeout=30)

    done = reload(worker)
    assert (done.returncode, done.stderr) == (
        2, f"sockact: reload: process {worker} is a worker of sockact, not its supervisor; nothing was sent: "
           f"sockact reload --pid {server.pid}\n")
    with subprocess.Popen(["sleep", "60"]) as other:
        done = reload(other.pid)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"sockact: reload: process {other.pid} is not sockact (it runs 'sleep 60'); "
                                      "nothing was sent"), done.stderr
        assert other.poll() is None, "the other program must not have been signalled"
        other.kill()
    assert server.workers() == [worker] and http_get(server.port, "/")[0] == 200
    assert reload(server.pid).returncode == 0


def test_an_error_log_on_a_full_disk_is_told_once_and_its_lines_go_to_stderr(start_sockact):
    # Each record failed with a 37-line '--- Logging error ---' traceback on stderr: the journal flooded,
    # and the line itself lost.
    server = start_sockact("testapps:pid", "--error-logfile", "/dev/full", "--workers", "1", activation=False,
                           wait=False)
    server.wait_for_log("ready:")
    for count in (1, 2, 3):
        server.send(signal.SIGTTIN)
        wait_until(lambda: server.output().count("one worker more: 2") == count, "one worker more")  # noqa: B023
        server.send(signal.SIGTTOU)
        wait_until(lambda: server.output().count("one worker fewer: 1") == count, "one worker fewer")  # noqa: B023
    assert http_get(server.port, "/")[0] == 200
    out = server.output()
    assert "Logging error" not in out and "Traceback" not in out, out[:2000]
    assert out.count("error_logfile /dev/full: cannot write (No space left on device); its lines go to stderr "
                     "until it can") == 1, out
    assert out.count("one worker more: 2") == 3, out


def test_an_error_log_on_a_disk_that_keeps_filling_and_freeing_says_so_once_a_minute(start_sockact, tmp_path):
    # Each failure said "cannot write", each write after it "writes again": a disk that flapped alternated the
    # pair for as long as it flapped. The supervisor's file size limit stands in for the disk (EFBIG, as ENOSPC,
    # at the flush), lowered to the file's size and raised again; USR2 makes the supervisor log a line.
    path = tmp_path / "error.log"
    path.write_text("an older line\n" * 100_000)  # the limit binds this file alone, not stderr's, a smaller one
    server = start_sockact("testapps:pid", "--error-logfile", str(path), "--workers", "1", activation=False,
                           wait=False)
    server.waiting(lambda: path.exists() and "ready:" in path.read_text(), "the ready line in the file")

    def said() -> int:  # in the file, or on stderr for want of it
        return path.read_text().count("SIGUSR2 ignored") + server.output().count("SIGUSR2 ignored")

    for _ in range(3):
        for full in (True, False):
            limit = path.stat().st_size if full else resource.RLIM_INFINITY
            resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            before = said()
            server.send(signal.SIGUSR2)
            server.waiting(lambda: said() > before, "the line written, to the file or to stderr")  # noqa: B023
    out = server.output()
    assert out.count(f"error_logfile {path}: cannot write (File too large)") == 1, out
    assert out.count(f"error_logfile {path}: writes again; 1 line went to stderr meanwhile") == 1, out
    assert out.count("SIGUSR2 ignored") == 3, out  # each line that failed still went to stderr
    assert http_get(server.port, "/")[0] == 200


STAND_IN_SYSTEMCTL = """\
#!/bin/sh
# systemctl show, as systemd answers it for a sockact.service that runs CONFIG with a drop-in's Environment=
cat <<END
LoadState=loaded
ExecStart={ path=/usr/bin/sockact ; argv[]=/usr/bin/sockact run --config CONFIG ; ignore_errors=no ; pid=0 }
Environment=PYTHONDONTWRITEBYTECODE=1 SOCKACT_WORKERS=8 SOCKACT_TIMEOUT=60
END
"""


def test_check_from_a_shell_names_what_the_units_environment_sets_otherwise(tmp_path):
    # docs/drop-ins.md: a check run from a shell sees the shell's environment, not the unit's, and passed the file
    # with settings the service would not have. Here systemctl is a stand-in (no systemd runs the tests; the
    # system tests have one): it answers as systemd does for a unit that runs this file.
    cfg = tmp_path / "sockact.toml"
    cfg.write_text('app = "testapps:pid"\nworkers = 2\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(STAND_IN_SYSTEMCTL.replace("CONFIG", str(cfg)))
    systemctl.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    done = run_cli("check", "--config", str(cfg), env={"PATH": path, "SOCKACT_TIMEOUT": "60"})
    assert done.returncode == 0, done.stderr
    told = [line for line in done.stderr.splitlines() if "sockact.service" in line]
    assert told == ["sockact: warning: sockact.service sets SOCKACT_WORKERS=8 in its environment (Environment=, a "
                    "drop-in's): under the service that wins over the file, so it runs with settings other than "
                    "those checked here; `systemctl show -p Environment sockact.service` lists them"], done.stderr
    other = tmp_path / "other.toml"  # a file the unit does not run: nothing to say
    other.write_text('app = "testapps:pid"\n')
    assert "sockact.service" not in run_cli("check", "--config", str(other), env={"PATH": path}).stderr
