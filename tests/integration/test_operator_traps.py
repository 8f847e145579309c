"""What a clumsy operator does to the real sockact process: signals gunicorn users send, a config
file truncated under a reload, a unit whose open-files limit leaves nothing for clients."""

from __future__ import annotations

import resource
import subprocess

from conftest import SOCKACT, base_env, free_port


def test_an_fd_limit_that_leaves_no_room_for_clients_is_a_start_up_error():
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))  # LimitNOFILE=64: soft and hard alike

    result = subprocess.run([*SOCKACT, "run", "testapps:pid", "--bind", f"127.0.0.1:{free_port()}"],
                            env=base_env(), capture_output=True, text=True, timeout=20, preexec_fn=low_limit)
    assert result.returncode == 2, result.stderr
    assert "LimitNOFILE=" in result.stderr and "ready" not in result.stderr, result.stderr
