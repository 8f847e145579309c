"""The container harness itself: it boots, and leaves nothing behind however the test ends."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nspawn import Container, missing_prerequisite

pytestmark = [pytest.mark.system,
              pytest.mark.skipif(missing_prerequisite() is not None, reason=str(missing_prerequisite()))]

HERE = Path(__file__).resolve().parent


def gone(pid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class SimulatedFailure(Exception):
    pass


def test_a_failing_test_still_powers_the_container_off():
    marker = "/srv/sockact-nspawn-selftest"
    with pytest.raises(SimulatedFailure), Container() as container:
        pid = container.nspawn_pid
        assert container.run(["systemctl", "is-system-running"], check=False).stdout.strip() in (
            "running", "degraded")
        container.write(marker, "only inside")
        assert container.run(["cat", marker]).stdout == "only inside"
        raise SimulatedFailure
    assert pid is not None and gone(pid)
    assert not os.path.exists(marker), "the overlay leaked a write to the host"
    assert not Path(f"/run/systemd/nspawn/propagate/{container.name}").exists()


def test_the_container_dies_with_the_test_process():
    """Even a test process killed outright (no teardown) takes its container down with it."""
    script = ("import os, sys; sys.path.insert(0, sys.argv[1]); from nspawn import Container; "
              "c = Container().start(); print(c.nspawn_pid, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", script, str(HERE)], capture_output=True, text=True,
                         timeout=90, check=True).stdout
    assert gone(int(out)), "systemd-nspawn outlived the process that started it"
