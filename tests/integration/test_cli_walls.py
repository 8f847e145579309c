"""The command line as a user coming from gunicorn meets it, against the real sockact process."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    SOCKACT,
    asleep,
    base_env,
    children,
    free_port,
    http_get,
    need_module,
    unavailable,
    wait_until,
)

ENV_APP = """\
import json, os

def application(environ, start_response):
    body = json.dumps({"script_name": environ["SCRIPT_NAME"], "path_info": environ["PATH_INFO"],
                       "greeting": os.environ.get("GREETING"), "cwd": os.getcwd(),
                       "version": VERSION}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

VERSION = 1
"""


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: str | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*SOCKACT, *args], env=base_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def project(tmp_path: Path, source: str = ENV_APP, name: str = "projapp") -> Path:
    """A project directory that is not on the import path: only --chdir or --pythonpath find it."""
    root = tmp_path / "project"
    root.mkdir(exist_ok=True)
    (root / f"{name}.py").write_text(source)
    return root


def test_app_calling_sys_exit_at_import_is_an_app_load_error(tmp_path):
    root = project(tmp_path, 'import sys\nsys.exit("DATABASE_URL not set")\n', name="needsdb")
    result = run_cli("run", "needsdb:app", "--pythonpath", str(root), "--workers", "2",
                     "--bind", f"127.0.0.1:{free_port()}")
    assert result.returncode == 5, result.stderr
    assert "importing needsdb exited: DATABASE_URL not set" in result.stderr
    # halted on the first failed boots, without a respawn loop
    assert "next start in" not in result.stderr
    result = run_cli("run", "needsdb:app", "--pythonpath", str(root), "--preload",
                     "--bind", f"127.0.0.1:{free_port()}")
    assert result.returncode == 5 and "DATABASE_URL not set" in result.stderr


def test_bad_listen_fds_is_one_line_and_exit_3():
    for value in ("abc", "7"):
        env = base_env(LISTEN_FDS=value, LISTEN_FDNAMES="http")
        cmd = " ".join(SOCKACT)
        result = subprocess.run(["sh", "-c", f"LISTEN_PID=$$ exec {cmd} run sockact.apps.hello:app"], env=env,
                                capture_output=True, text=True, timeout=20)
        assert result.returncode == 3, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"LISTEN_FDS='{value}'" in lines[0], result.stderr


def test_check_imports_the_app_with_the_settings_applied(tmp_path):
    result = run_cli("check", "nosuchmod:app")
    assert result.returncode == 5
    assert "no module named 'nosuchmod'" in result.stderr and "'chdir'" in result.stderr
    root = project(tmp_path)
    # A bare module means module:application, imported from the --chdir directory.
    result = run_cli("check", "projapp", "--chdir", str(root))
    assert result.returncode == 0, result.stderr
    assert 'app = "projapp:application"' in result.stdout and "imports and is callable" in result.stdout
    # and the same through gunicorn's --check-config, without the subcommand
    result = run_cli("--check-config", "--chdir", str(root), "projapp:nosuch")
    assert result.returncode == 5 and "has no attribute 'nosuch'" in result.stderr
    # a bare module of a Flask or FastAPI project: its callable is 'app', not gunicorn's 'application'
    (root / "flaskish.py").write_text("def app(environ, start_response):\n    return []\n")
    result = run_cli("check", "flaskish", "--chdir", str(root))
    assert result.returncode == 5
    assert result.stderr.strip().splitlines()[-1] == (
        "sockact: error: app 'flaskish:application': module 'flaskish' has no attribute 'application' "
        "(did you mean 'flaskish:app'?)")
    # the app sees -e before it is imported
    (root / "needsenv.py").write_text("import os\nTOKEN = os.environ['TOKEN']\napplication = lambda e, s: []\n")
    assert run_cli("check", "needsenv", "--chdir", str(root)).returncode == 5
    assert run_cli("check", "needsenv", "--chdir", str(root), "-e", "TOKEN=x").returncode == 0


def test_gunicorn_command_line_serves(tmp_path, start_sockact):
    root = project(tmp_path)
    port = free_port()
    server = start_sockact("-w", "3", "-b", f"127.0.0.1:{port}", "--chdir", str(root), "-e", "GREETING=hi there",
                           "--keep-alive", "5", "projapp", activation=False, workers=3)
    seen = server.get_json("/env")  # on the fixture's own --bind, which -b adds to
    assert seen["greeting"] == "hi there" and seen["cwd"] == str(root)
    assert json.loads(http_get(port, "/")[2])["greeting"] == "hi there"
    assert len(server.wait_workers(3)) == 3


def test_a_gunicorn_worker_class_on_the_command_line_says_to_drop_it(tmp_path):
    """The ExecStart= of a gunicorn unit serving FastAPI, its binary renamed: one line that says what to do."""
    result = run_cli("-k", "uvicorn.workers.UvicornWorker", "-w", "2", "-b", f"127.0.0.1:{free_port()}",
                     "asgiapps:echo", "--daemon")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "sockact: error: -k uvicorn.workers.UvicornWorker: sockact needs no worker class for an ASGI app: drop "
        "it; an async app is served as ASGI (--interface auto, the default; --interface asgi to insist)",
        "sockact: error: --daemon: gunicorn's daemon setting has no sockact counterpart: systemd runs sockact"]


def test_a_uvicorn_command_line_says_what_to_write_instead():
    result = run_cli("asgiapps:echo", "--host", "0.0.0.0", "--port", str(free_port()), "--workers", "2",
                     "--proxy-headers")
    assert result.returncode == 2 and result.stdout == ""
    first, second = result.stderr.splitlines()
    assert first.startswith("sockact: error: --host, --port: sockact binds host and port together: -b 0.0.0.0:")
    assert second == ("sockact: error: --proxy-headers: forwarded fields are read from the proxies "
                      "--forwarded-allow-ips trusts")

def test_script_name_is_the_mount_prefix(tmp_path, start_sockact):
    root = project(tmp_path)
    server = start_sockact("--chdir", str(root), "projapp", env={"SCRIPT_NAME": "/app"})
    seen = server.get_json("/app/env")
    assert (seen["script_name"], seen["path_info"]) == ("/app", "/env")


def test_process_titles(start_sockact):
    need_module("setproctitle")
    server = start_sockact("testapps:pid", "--workers", "1", workers=1)
    title = Path(f"/proc/{server.pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
    assert title == b"sockact: supervisor [testapps:pid]"


def test_reload_flag_restarts_workers_when_a_source_file_changes(tmp_path, start_sockact):
    root = project(tmp_path)
    server = start_sockact("--chdir", str(root), "--reload", "--workers", "1", "projapp", workers=1)
    assert server.get_json("/")["version"] == 1
    source = root / "projapp.py"
    source.write_text(ENV_APP.replace("VERSION = 1", "VERSION = 2"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if json.loads(http_get(server.port, "/")[2])["version"] == 2:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(server.output())
    assert "projapp.py changed" in server.output()


def test_reload_is_refused_under_systemd():
    result = run_cli("run", "--reload", "--bind", f"127.0.0.1:{free_port()}", env={"INVOCATION_ID": "1"})
    assert result.returncode == 2 and "--reload-under-systemd" in result.stderr


def test_print_config_without_run(tmp_path):
    result = run_cli("--print-config", "-w", "5", "-t", "0", "app")
    assert result.returncode == 0
    assert "workers = 5" in result.stdout and "timeout = 0.0" in result.stdout
    assert 'app = "app:application"' in result.stdout


def test_help_shows_gunicorn_flags():
    helptext = run_cli("run", "--help").stdout
    for flag in ("-w N, --workers N", "-b ADDR, --bind ADDR", "-t SECONDS, --timeout SECONDS", "--keep-alive",
                 "-e KEY=VALUE, --env KEY=VALUE", "--chdir", "--pythonpath", "--check-config", "--print-config",
                 "--reload", "systemd-run"):
        assert flag in helptext, flag


def test_an_app_that_does_not_load_leaves_the_reason_as_the_last_status(tmp_path):
    """`systemctl status` of the failed service shows its last STATUS=: the reason, not the stop's counts."""
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(path)
        result = run_cli("run", "nosuchapp:app", "--workers", "2", "--bind", f"127.0.0.1:{free_port()}",
                         env={"NOTIFY_SOCKET": path}, cwd=str(tmp_path))
        systemd.setblocking(False)
        statuses = []
        with contextlib.suppress(BlockingIOError):
            while True:
                statuses += [line for line in systemd.recv(65536).decode().splitlines()
                             if line.startswith("STATUS=")]
    assert result.returncode == 5, result.stderr
    assert statuses[-1].startswith("STATUS=the app failed to load (worker exit code 5: app 'nosuchapp:app': "
                                   "no module named 'nosuchapp'"), statuses



CANNOT_START = b"sockact cannot start; the reason is in sockact's log"
APP_FAILED = b"the app failed to load; the reason is in sockact's log"


@pytest.mark.parametrize(("setting", "code", "told"), [
    ("wokers = 2\n", 2, CANNOT_START),
    ('[hooks]\npost_fork = "nosuchhooks:post_fork"\n', 5, CANNOT_START),
    ('app = "nosuchapp:app"\npreload = true\n', 5, APP_FAILED),  # the supervisor imports it, and fails
    ('app = "nosuchapp:app"\n', 5, APP_FAILED),  # its workers import it, and the supervisor halts
], ids=["bad-key", "hook-not-importable", "app-not-importable-preloaded", "app-not-importable"])
def test_a_start_that_fails_under_socket_activation_answers_the_waiting_client(tmp_path, setting, code, told):
    """Left in the backlog of the socket unit's listener, the client would make systemd start the
    failing service again at once, for as long as it waits: a start loop."""
    cfg = tmp_path / "sockact.toml"
    cfg.write_text(setting)
    port = free_port()
    activator = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=http",
                                  *SOCKACT, "run", "--config", str(cfg)], env=base_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = None
        deadline = time.monotonic() + 10
        while client is None:
            try:
                client = socket.create_connection(("127.0.0.1", port), timeout=10)
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "systemd-socket-activate does not listen"
                time.sleep(0.05)
        with client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = client.recv(65536)
        output = activator.communicate(timeout=30)[0].decode()  # systemd-socket-activate execs sockact
    finally:
        activator.kill()
        activator.wait()
    assert activator.returncode == code, output
    assert answer.startswith(b"HTTP/1.1 503 "), (answer, output)
    assert told in answer, answer
    # the reason first, then the turn-away
    reason = output.find("sockact: error:") if "sockact: error:" in output else output.find("ERROR sockact")
    assert -1 < reason < output.index("answered 1 waiting connections: HTTP/1.1 503"), output


FACTORY_APP = """\
def create_app(greeting="hello"):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [greeting.encode()]
    return app
"""


def test_an_app_factory_is_served_by_its_call_and_refused_without_it(tmp_path, start_sockact):
    """gunicorn's 'module:create_app()' serves what the factory returns; named without its call, the factory
    itself would be called with (environ, start_response) at each request: a 500 each, so it is refused."""
    root = project(tmp_path, FACTORY_APP, name="factoryapp")
    server = start_sockact("--chdir", str(root), "factoryapp:create_app('from the factory')", "--workers", "1",
                           activation=False, workers=1)
    status, _, body = http_get(server.port, "/")
    assert (status, body) == (200, b"from the factory")
    told = ("sockact: error: app 'factoryapp:create_app': create_app() takes no arguments, as an app factory does, "
            "where a WSGI app takes (environ, start_response), an ASGI app (scope, receive, send): write "
            "'factoryapp:create_app()' to serve the app it returns, as gunicorn does")
    result = run_cli("check", "factoryapp:create_app", "--chdir", str(root))
    assert result.returncode == 5 and result.stderr.strip().splitlines()[-1] == told, result.stderr
    result = run_cli("run", "factoryapp:create_app", "--chdir", str(root), "--workers", "1",
                     "--bind", f"127.0.0.1:{free_port()}")
    assert result.returncode == 5 and "write 'factoryapp:create_app()' to serve the app it returns" in result.stderr
    # uvicorn's --factory: the call to write
    result = run_cli("factoryapp:create_app", "--factory")
    assert result.returncode == 2 and result.stderr.splitlines() == [
        "sockact: error: --factory: write the factory's call as the app, as gunicorn does: "
        "sockact run 'factoryapp:create_app()'"]


def test_an_app_that_names_a_module_says_which_app_to_write(tmp_path):
    root = project(tmp_path, ENV_APP, name="wsgi")
    (root / "__init__.py").write_text("")
    (tmp_path / "withsub").mkdir()
    (tmp_path / "withsub" / "__init__.py").write_text("from . import wsgi\n")
    (tmp_path / "withsub" / "wsgi.py").write_text(ENV_APP.replace("def application", "def app"))
    result = run_cli("check", "project:wsgi", "--chdir", str(tmp_path))  # a package that does not import it
    assert result.returncode == 5
    assert result.stderr.strip().splitlines()[-1] == (
        "sockact: error: app 'project:wsgi': module 'project' has no attribute 'wsgi' "
        "(did you mean 'project.wsgi:application'?)")
    result = run_cli("check", "withsub:wsgi", "--chdir", str(tmp_path))  # one that does: a module, not an app
    assert result.returncode == 5
    assert result.stderr.strip().splitlines()[-1] == (
        "sockact: error: app 'withsub:wsgi': wsgi is a module, not an app: did you mean 'withsub.wsgi:app'?")


def test_a_command_line_without_a_command_says_what_to_type():
    for words, told in [
        ((), "no command: to serve an app, sockact run MODULE:CALLABLE (sockact --help lists the commands)"),
        (("myproject.wsgi", "-w", "2"), "no command 'myproject.wsgi' (run, check, convert, reload): to serve it as "
                                        "an app, sockact run myproject.wsgi -w 2"),
        (("chek",), "no command 'chek' (did you mean 'check'?)"),
    ]:
        result = run_cli(*words)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.splitlines() == [f"sockact: error: {told}"], result.stderr


def test_uvicorns_uds_says_the_bind_to_write():
    result = run_cli("asgiapps:echo", "--uds", "/run/app.sock")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["sockact: error: --uds: sockact's flag is -b unix:/run/app.sock"]


def ctrl_c(args: list[str], tmp_path: Path, children_first: int) -> subprocess.CompletedProcess:
    """Run sockact as a terminal does, in a process group of its own, and press Ctrl-C (SIGINT to the
    whole group) once it has ``children_first`` children (none: the supervisor imports) and they
    sleep: while the app still imports."""
    began = "import pathlib, time\npathlib.Path(__file__).with_name('began').touch()\ntime.sleep(30)\n"
    root = project(tmp_path, began + ENV_APP, name="slowimport")
    proc = subprocess.Popen([*SOCKACT, *args, "--chdir", str(root)], env=base_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (root / "began").exists() and len(kids := children(proc.pid)) >= children_first
                   and all(map(asleep, kids or [proc.pid])), "the app's import to begin")
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_ctrl_c_while_the_workers_import_the_app_is_a_quick_stop_and_no_failed_start(tmp_path):
    """The terminal signals the workers too, the newest first: their exits must not read as failed starts."""
    result = ctrl_c(["run", "slowimport", "--workers", "2", "--bind", f"127.0.0.1:{free_port()}"], tmp_path, 2)
    assert result.returncode == 0, result.stderr
    assert "quick stop" in result.stderr
    assert "died while starting" not in result.stderr and "WARNING" not in result.stderr, result.stderr


def test_ctrl_c_while_a_preloaded_app_imports_is_one_line_and_130(tmp_path):
    """With --preload the supervisor imports the app before its loop takes SIGINT: the start is cut
    short, said as check says it, where it exited 0 without a word."""
    result = ctrl_c(["run", "slowimport", "--preload", "--bind", f"127.0.0.1:{free_port()}"], tmp_path, 0)
    assert result.returncode == 130, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.endswith(" ERROR sockact: start interrupted (Ctrl-C): nothing was served"), line


def test_ctrl_c_during_check_says_nothing_was_checked_without_a_traceback(tmp_path):
    result = ctrl_c(["check", "slowimport"], tmp_path, 1)
    assert result.returncode == 130
    assert result.stderr.splitlines() == [
        "sockact: error: check interrupted (Ctrl-C): nothing was checked"]


NO_APP = ("no app named (sockact run APP, app in the --config file, or SOCKACT_APP): the built-in demo "
          "sockact.apps.demo:app is served; to serve yours: sockact run myproject.wsgi:application")


def test_run_with_no_app_says_the_demo_is_served_and_how_to_name_yours(start_sockact):
    """gunicorn and uvicorn refuse to start without an app; sockact serves its demo, and says so first."""
    server = start_sockact("--workers", "1", activation=False, workers=1)
    assert b"Served by sockact" in http_get(server.port)[2]
    first = server.output().splitlines()[0]
    assert first.endswith(f" WARNING sockact: {NO_APP}"), server.output()
    assert NO_APP in run_cli("check").stderr.splitlines()[0]
    named = start_sockact("sockact.apps.demo:app", "--workers", "1", activation=False, workers=1)
    assert "no app named" not in named.output()


def without_privilege(env: dict[str, str]) -> list[str]:
    """The command that runs what follows it without the right to bind a port below
    net.ipv4.ip_unprivileged_port_start: as nobody, where that user can run this Python and read the tree;
    else as root without CAP_NET_BIND_SERVICE (nor in its bounding set), which is what that right is."""
    setpriv = shutil.which("setpriv")
    if not setpriv:
        unavailable("setpriv (util-linux) is not installed")
    nobody = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all"]
    if subprocess.run([*nobody, *SOCKACT, "--version"], env=env, cwd="/", capture_output=True).returncode == 0:
        return nobody
    return [setpriv, "--inh-caps=-net_bind_service", "--bounding-set=-net_bind_service"]


def test_a_privileged_port_without_the_privilege_says_what_to_do():
    start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    if start == 0:
        pytest.skip("net.ipv4.ip_unprivileged_port_start is 0 here: any user may bind any port")
    port = 80 if start > 80 else start - 1
    env = base_env()
    result = subprocess.run([*without_privilege(env), *SOCKACT, "run", "--bind", f"0.0.0.0:{port}",
                             "sockact.apps.hello:app"], env=env, cwd="/", capture_output=True, text=True, timeout=30)
    assert result.returncode == 3, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.endswith(
        f" ERROR sockact: bind '0.0.0.0:{port}': permission denied: a port below {start} "
        "(net.ipv4.ip_unprivileged_port_start) needs root or CAP_NET_BIND_SERVICE; better, let systemd bind it "
        f"for sockact, in the packaged sockact.socket (systemctl edit sockact.socket: ListenStream=0.0.0.0:{port}); "
        f"or bind a port of {start} or above"), line


def test_a_shortened_flag_and_a_port_alone_are_one_line_each_saying_what_to_write():
    result = run_cli("run", "testapps:echo", "--worker", "4")  # argparse took it for an ambiguous abbreviation
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["sockact: error: unknown option --worker (did you mean --workers?)"]
    result = run_cli("run", "testapps:echo", "-b", "8000")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "sockact: error: option --bind: invalid value '8000': bind '8000': a port alone: write 127.0.0.1:8000 for "
        "this machine, :8000 for every address"]


def test_gunicorns_unlimited_request_line_says_what_to_write():
    result = run_cli("testapps:echo", "--limit-request-line", "0", "--limit-request-field_size", "0")
    assert result.returncode == 2
    told = "invalid value '0': 0 is gunicorn's unlimited, which sockact does not take: write 65536, the request " \
           "head's own bound"
    assert result.stderr.splitlines() == [f"sockact: error: option --limit-request-line: {told}"], result.stderr
