"""Listener names map to apps; an app can come from its own virtualenv."""

from __future__ import annotations

import json
import subprocess
import sys
import venv

from conftest import SOCKACT, Server, base_env, free_port, http_get


def test_two_named_sockets_serve_two_apps(tmp_path):
    cfg = tmp_path / "sockact.toml"
    cfg.write_text('app = "testapps:pid"\nworkers = 2\n\n[listeners.api]\napp = "testapps:echo"\n'
                   "limit_request_line = 100\n")
    web, api = free_port(), free_port()
    env = base_env()
    cmd = ["systemd-socket-activate", "-l", f"127.0.0.1:{web}", "-l", f"127.0.0.1:{api}",
           "--fdname=http:api", *[f"-E{k}" for k in env], *SOCKACT, "run", "--config", str(cfg)]
    server = Server(cmd, web, env)
    try:
        server.wait_ready()
        assert json.loads(http_get(web, "/")[2])["listener"] == "http"
        assert json.loads(http_get(api, "/x?y")[2])["path"] == "/x"
        # the api listener's own limit applies there, and only there
        assert http_get(api, "/" + "a" * 200)[0] == 414
        assert http_get(web, "/" + "a" * 200)[0] == 200
    finally:
        server.stop()
        server.log.close()


def test_app_from_its_own_virtualenv(tmp_path, start_sockact):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    site = env_dir / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "venvapp.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'from the venv']\n")
    server = start_sockact("venvapp:app", "--virtualenv", str(env_dir), "--workers", "1")
    assert http_get(server.port, "/")[2] == b"from the venv"


def test_virtualenv_of_another_python_is_a_clear_error(tmp_path):
    env_dir = tmp_path / "oldvenv"
    (env_dir / "lib" / "python3.7" / "site-packages").mkdir(parents=True)
    (env_dir / "pyvenv.cfg").write_text("home = /usr/bin\n")
    result = subprocess.run([*SOCKACT, "run", "x:app", "--virtualenv", str(env_dir),
                             "--bind", f"127.0.0.1:{free_port()}"], env=base_env(), capture_output=True,
                            text=True, timeout=20)
    assert result.returncode == 2
    assert "built for python3.7" in result.stderr and "recreate it" in result.stderr


def test_reload_rereads_the_settings_and_keeps_them_when_broken(start_sockact, tmp_path):
    import signal

    cfg = tmp_path / "sockact.toml"
    cfg.write_text('app = "testapps:pid"\nworkers = 1\n')
    server = start_sockact("--config", str(cfg), workers=1)
    cfg.write_text('app = "testapps:pid"\nworkers = 3\n')
    server.send(signal.SIGHUP)
    server.wait_workers(3)
    cfg.write_text('app = "testapps:pid"\nworkers = "three"\n')
    server.send(signal.SIGHUP)
    output = server.wait_for_log("keeping the running settings")
    assert "reload: environment" not in output
    assert "key 'workers'" in output
    server.wait_workers(3)
    assert http_get(server.port, "/")[0] == 200


def test_a_listener_table_that_names_no_listener_is_refused_at_start_and_at_reload(start_sockact, tmp_path):
    import signal

    cfg = tmp_path / "sockact.toml"
    cfg.write_text('app = "testapps:pid"\n[listeners.htpp]\nproxy_protocol = "v2"\n')
    result = subprocess.run([*SOCKACT, "run", "--config", str(cfg), "--bind", f"127.0.0.1:{free_port()}"],
                            env=base_env(), capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert "table 'listeners.htpp': no listener is named 'htpp' (the listeners: http)" in result.stderr
    cfg.write_text('app = "testapps:pid"\nworkers = 1\n')
    server = start_sockact("--config", str(cfg), workers=1)
    cfg.write_text('app = "testapps:pid"\nworkers = 2\n[listeners.htpp]\nproxy_protocol = "v2"\n')
    server.send(signal.SIGHUP)
    assert "table 'listeners.htpp'" in server.wait_for_log("keeping the running settings")
    assert http_get(server.port, "/")[0] == 200  # no PROXY header asked of anyone
