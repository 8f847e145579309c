"""Moving from gunicorn, against the real sockact: a gunicorn.conf.py converts, every setting landing or
named as not carried over, and its hooks run in the right process at the right time; a file's bad keys
are all named at once, with gunicorn's names mapped; bind under socket activation is a warning."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
from conftest import SOCKACT, base_env, free_port, http_get

# 15 common settings (14 sockact has, worker_class it has not), 5 hooks, and gunicorn hooks and
# settings sockact does not have; every hook records which process ran it.
GUNICORN_CONF = '''\
import json, multiprocessing, os

wsgi_app = "projapp:application"
bind = "127.0.0.1:{port}"
workers = 2
worker_class = "sync"
threads = 2
timeout = 60
graceful_timeout = 20
keepalive = 5
max_requests = 1000
max_requests_jitter = 50
chdir = "{root}"
raw_env = ["GREETING=from gunicorn.conf.py"]
accesslog = "-"
loglevel = "debug"
access_log_format = '%(h)s "%(r)s" %(s)s conf'
forwarded_allow_ips = "127.0.0.1"
user = "www-data"
statsd_host = "localhost:8125"
daemon = False


def record(event, **fields):
    with open(os.environ["HOOK_LOG"], "a") as fh:
        fh.write(json.dumps({{"event": event, "pid": os.getpid(), "ppid": os.getppid(), **fields}}) + "\\n")


def on_starting(server):
    record("on_starting", workers=server.cfg.workers)


def when_ready(server):
    server.log.info("ready, says the hook")
    record("when_ready", server_pid=server.pid)


def on_reload(server):
    record("on_reload")


def post_fork(server, worker):
    record("post_fork", worker_pid=worker.pid, server_pid=server.pid)


def worker_exit(server, worker):
    record("worker_exit", worker_pid=worker.pid)


def pre_request(worker, req):
    pass
'''
APP = '''\
import os

def application(environ, start_response):
    body = os.environ.get("GREETING", "").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''
CARRIED = {"wsgi_app": "app", "bind": "bind", "workers": "workers", "threads": "threads", "timeout": "timeout",
           "graceful_timeout": "graceful_timeout", "keepalive": "keepalive", "max_requests": "max_requests",
           "max_requests_jitter": "max_requests_jitter", "chdir": "chdir", "raw_env": "env",
           "accesslog": "access_logfile", "loglevel": "log_level", "access_log_format": "access_logformat",
           "forwarded_allow_ips": "forwarded_allow_ips"}
NOT_CARRIED = {"worker_class", "user", "statsd_host", "daemon", "pre_request"}
HOOKS = ("on_starting", "when_ready", "on_reload", "post_fork", "worker_exit")


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SOCKACT, *args], env=base_env(**(env or {})), capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_gunicorn_conf_converts_and_its_hooks_run_where_and_when_they_should(tmp_path, start_sockact):
    root = tmp_path / "project"
    root.mkdir()
    (root / "projapp.py").write_text(APP)
    port = free_port()
    conf = root / "gunicorn.conf.py"
    conf.write_text(GUNICORN_CONF.format(port=port, root=root))
    converted = run_cli("convert", str(conf))
    assert converted.returncode == 0, converted.stderr
    toml = tomllib.loads(converted.stdout)
    # every setting lands under sockact's name, or is named, with why, on stderr and in the file
    assert set(toml) == set(CARRIED.values()) | {"hooks"}
    assert toml["env"] == ["GREETING=from gunicorn.conf.py"] and toml["bind"] == [f"127.0.0.1:{port}"]
    assert toml["log_level"] == "debug" and toml["access_logfile"] == "-" and toml["keepalive"] == 5.0
    named = {line.split()[2] for line in converted.stderr.splitlines()}
    assert named == NOT_CARRIED, converted.stderr
    for name in NOT_CARRIED:
        assert f"# not carried over: {name} (" in converted.stdout
    assert toml["hooks"] == {name: f"{conf}:{name}" for name in HOOKS}

    cfg = root / "sockact.toml"
    cfg.write_text(converted.stdout)
    log = tmp_path / "hooks.jsonl"
    server = start_sockact("--config", str(cfg), activation=False, env={"HOOK_LOG": str(log)}, workers=2)
    sup = server.pid
    # (the fixture's --bind wins over the file's, as a flag does)
    assert http_get(server.port, "/")[2] == b"from gunicorn.conf.py"  # with the file's raw_env and chdir
    first = server.waiting(lambda: any(e["event"] == "when_ready" for e in events(log)) and events(log),
                           "when_ready")
    names = [e["event"] for e in first]
    assert names[0] == "on_starting" and first[0]["pid"] == sup and first[0]["workers"] == 2
    forks = [e for e in first if e["event"] == "post_fork"]
    assert len(forks) == 2 and all(e["pid"] == e["worker_pid"] != sup == e["ppid"] == e["server_pid"]
                                   for e in forks)
    assert names.index("when_ready") > names.index("post_fork") and first[-1]["pid"] == sup
    server.wait_for_log("ready, says the hook")
    server.wait_for_log('conf')  # the access log in the file's format, on stderr

    server.send(signal.SIGHUP)
    old = {e["pid"] for e in forks}
    server.waiting(lambda: {e["pid"] for e in events(log) if e["event"] == "worker_exit"} == old, "worker_exit")
    after = events(log)[len(first):]
    assert after[0]["event"] == "on_reload" and after[0]["pid"] == sup
    assert all(e["ppid"] == sup for e in after if e["event"] in ("post_fork", "worker_exit"))


def test_every_gunicorn_setting_is_carried_or_named():
    gunicorn_config = pytest.importorskip("gunicorn.config")
    from sockact import config
    from sockact.config import fromgunicorn
    from sockact.hooks import HOOK_NAMES

    for s in gunicorn_config.KNOWN_SETTINGS:
        assert (s.name in fromgunicorn.RENAMED) + (s.name in fromgunicorn.NOT_CARRIED) + \
            (s.name in HOOK_NAMES) == 1, s.name
    assert set(fromgunicorn.RENAMED.values()) <= set(config.BY_NAME)


def test_every_bad_key_of_a_file_is_named_at_once_with_gunicorns_names_mapped(tmp_path):
    cfg = tmp_path / "sockact.toml"
    cfg.write_text('accesslog = "-"\nerrorlog = "-"\nloglevel = "debug"\npreload_app = true\nraw_env = []\n'
                   'access_log_format = "json"\nworkers = 3\nworkerz = 2\ntimeout = "soon"\npost_fork = "a:b"\n'
                   'worker_class = "gevent"\n')
    result = run_cli("check", "-c", str(cfg))
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines == [f"sockact: error: {cfg}: {text}" for text in (
        "unknown key 'accesslog' (gunicorn's accesslog is sockact's 'access_logfile')",
        "unknown key 'errorlog' (gunicorn's errorlog is sockact's 'error_logfile')",
        "unknown key 'loglevel' (gunicorn's loglevel is sockact's 'log_level')",
        "unknown key 'preload_app' (gunicorn's preload_app is sockact's 'preload')",
        "unknown key 'raw_env' (gunicorn's raw_env is sockact's 'env')",
        "unknown key 'access_log_format' (gunicorn's access_log_format is sockact's 'access_logformat')",
        "unknown key 'workerz' (did you mean 'workers'?)",
        lines[7].split(": ", 3)[3],  # the parser's own words, checked below
        "unknown key 'post_fork' (a hook: hooks.post_fork = \"module:post_fork\")",
        "unknown key 'worker_class' (gunicorn's worker_class has no sockact setting: one worker model "
        "(interface: wsgi or asgi))",
    )], result.stderr
    assert lines[7].startswith(f"sockact: error: {cfg}: key 'timeout': invalid value 'soon'")


def test_a_gunicorn_conf_is_not_ignored_silently(tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("workers = 4\n")
    result = run_cli("check", "sockact.apps.demo:app", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ("sockact: warning: gunicorn.conf.py in the working directory is gunicorn's settings file, and "
            "sockact does not read it: run 'sockact convert gunicorn.conf.py > sockact.toml', then pass "
            "-c sockact.toml") in result.stderr
    result = run_cli("run", "-c", "gunicorn.conf.py", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("sockact: error: config file gunicorn.conf.py: is Python, as gunicorn's is; "
                                     "sockact reads TOML: run 'sockact convert gunicorn.conf.py > sockact.toml', "
                                     "then pass -c sockact.toml")


def test_bind_under_socket_activation_is_a_warning_and_check_shows_the_sockets(tmp_path, start_sockact):
    cfg = tmp_path / "sockact.toml"
    cfg.write_text('app = "testapps:pid"\nbind = ["127.0.0.1:9"]\nworkers = 1\n')
    server = start_sockact("--config", str(cfg), workers=1)  # systemd-socket-activate passes the socket
    out = server.wait_for_log("bind: ignored under socket activation")
    assert "WARNING sockact: bind: ignored under socket activation (LISTEN_FDS is set)" in out

    if not shutil.which("systemd-socket-activate"):
        pytest.skip("systemd-socket-activate is not installed")
    port = free_port()
    env = base_env()
    check = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=web",
                              *(f"-E{k}" for k in env), *SOCKACT, "check", "--config", str(cfg)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:  # it runs the command at the first connection
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        stdout, stderr = check.communicate(timeout=60)
    finally:
        check.kill()
    assert check.returncode == 0, stderr
    assert "sockact: warning: bind: ignored under socket activation" in stderr
    assert f"# sockets from systemd (LISTEN_FDS), served instead of 'bind':\n#   web=127.0.0.1:{port} (fd 3)" \
        in stdout, stdout


def test_what_a_gunicorn_conf_prints_stays_out_of_the_toml(tmp_path):
    # A conf that prints (or a module it imports that does) is common; convert's stdout is the TOML file.
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("import sys\nprint('loading gunicorn settings')\nsys.stdout.write('more\\n')\nworkers = 3\n")
    converted = run_cli("convert", str(conf))
    assert converted.returncode == 0, converted.stderr
    assert tomllib.loads(converted.stdout) == {"workers": 3}
    assert "loading gunicorn settings\nmore\n" in converted.stderr  # not lost: said where the notes go


def test_a_uvicorn_worker_an_unlimited_line_and_a_computed_worker_count_convert_with_notes(tmp_path):
    # uvicorn's worker class is gunicorn's way to serve ASGI; 0 is gunicorn's "unlimited"; a worker
    # count the conf computes is this machine's, and the server it runs on may have other cores.
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("import multiprocessing\nworker_class = 'uvicorn_worker.UvicornWorker'\n"
                    "workers = multiprocessing.cpu_count() * 2 + 1\nlimit_request_line = 0\n"
                    "limit_request_field_size = 0\nthreads = 2\n")
    converted = run_cli("convert", str(conf))
    assert converted.returncode == 0, converted.stderr
    assert "not carried over" not in converted.stdout + converted.stderr
    toml = tomllib.loads(converted.stdout)
    assert toml == {"interface": "asgi", "workers": os.cpu_count() * 2 + 1, "limit_request_line": 65536,
                    "limit_request_field_size": 65536, "threads": 2}
    lines = {line.partition(" =")[0]: line for line in converted.stdout.splitlines()}
    assert "# gunicorn's worker_class = 'uvicorn_worker.UvicornWorker' serves ASGI" in lines["interface"]
    assert "# computed by the conf on the machine it was converted on: multiprocessing.cpu_count() * 2 + 1" \
        in lines["workers"]
    assert "is unlimited; sockact has no unlimited" in lines["limit_request_line"]
    assert "#" not in lines["threads"]
    for key in ("interface", "workers", "limit_request_line"):
        assert f"sockact: convert: {key} = " in converted.stderr, converted.stderr
    # the converted file is one sockact takes
    cfg = tmp_path / "sockact.toml"
    cfg.write_text(converted.stdout)
    assert run_cli("check", "--config", str(cfg), "asgiapps:echo").returncode == 0


def test_a_gunicorn_settings_module_converts_as_gunicorn_imports_it(tmp_path):
    # gunicorn -c python:deploy.gunicorn_conf imports it from the working directory; its hooks are
    # the module's, named by module, not by path.
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "__init__.py").write_text("")
    (tmp_path / "deploy" / "gunicorn_conf.py").write_text(
        "import multiprocessing\nworkers = multiprocessing.cpu_count() + 1\ntimeout = 60\n\n"
        "def post_fork(server, worker):\n    pass\n")
    converted = run_cli("convert", "python:deploy.gunicorn_conf", cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr
    assert tomllib.loads(converted.stdout) == {"workers": os.cpu_count() + 1, "timeout": 60.0,
                                               "hooks": {"post_fork": "deploy.gunicorn_conf:post_fork"}}
    assert "computed by the conf on the machine it was converted on: multiprocessing.cpu_count() + 1" \
        in converted.stdout
    result = run_cli("run", "-c", "python:deploy.gunicorn_conf", "app:app", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "sockact: error: config file python:deploy.gunicorn_conf: is Python, as gunicorn's is; sockact reads "
        "TOML: run 'sockact convert python:deploy.gunicorn_conf > sockact.toml', then pass -c sockact.toml")
