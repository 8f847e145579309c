"""What an operator meets in the first week, typed as they type it: a Unix socket for a proxy that
runs as another user, a setting in the file that a flag or the environment overrides, a TOML line
with a typo of the syntax."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile

from conftest import SOCKACT, base_env, http_get


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
