"""The ASGI and worker-death tests again, on Debian 13's own Python (3.13) and its packaged libraries.

The rest of the suite runs on Debian 12's Python 3.11. From 3.12 an ASGI call starts as an eager task
(asgirunner's ``_EAGER``): its first step runs at once, without a turn of the loop, a path 3.11 never
takes. Debian 13 users meet it through the .deb, so its behaviour is tested here with the interpreter
and the libraries (httptools, uvloop, wsproto, websockets, anyio) that apt installs there, in a fresh
overlay of the clean trixie root (debroot.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from debroot import RootfsError, ensure_rootfs
from nspawn import Container, missing_prerequisite

pytestmark = [pytest.mark.system, pytest.mark.slow]

TREE = Path(__file__).resolve().parents[2]
# What the .deb depends on or recommends, and what the tests themselves import, all Debian's.
PACKAGES = ("python3-pytest", "python3-httptools", "python3-systemd", "python3-uvloop", "python3-wsproto",
            "python3-websockets", "python3-anyio", "python3-sniffio", "python3-prometheus-client",
            "python3-setproctitle")
TESTS = ("tests/integration/test_asgi.py", "tests/integration/test_asgi_limits.py",
         "tests/integration/test_worker_death.py", "tests/integration/test_short_responses.py",
         "tests/unit/test_asgi_cycle.py")


@pytest.fixture(scope="module")
def trixie() -> Iterator[Container]:
    if missing_prerequisite():
        pytest.skip(missing_prerequisite() or "")
    try:
        root = ensure_rootfs("trixie")
    except RootfsError as exc:
        pytest.fail(f"no clean Debian 13 root: {exc}")
    with Container(root, overlay=True) as booted:
        booted.run("apt-get update -q", timeout=300)
        booted.run(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q {' '.join(PACKAGES)}", timeout=600)
        for part in ("sockact", "tests", "pyproject.toml"):
            booted.copy_in(TREE / part, f"/src/{part}", ignore=("__pycache__", "*.pyc", "system"))
        yield booted


def test_the_asgi_and_worker_death_tests_pass_on_debian_13s_python(trixie: Container) -> None:
    version = trixie.run("python3 -c 'import sys; print(sys.version_info[:2] >= (3, 12))'").stdout.strip()
    assert version == "True", "Debian 13's python3 is 3.13: the eager-task path is the one under test"
    # The million-fragment message is the WebSocket library's memory, not the eager-task path: the
    # integration suite runs it, and here it would take a third of the time.
    done = trixie.run(f"cd /src && python3 -m pytest -q -p no:cacheprovider -k 'not million' {' '.join(TESTS)}",
                      env={"PYTHONPATH": "/src"}, check=False, timeout=900)
    tail = "\n".join(done.stdout.splitlines()[-40:])
    assert done.returncode == 0, f"{tail}\n{done.stderr[-2000:]}"
    passed = re.search(r"(\d+) passed", tail)
    assert passed and int(passed.group(1)) >= 100 and " failed" not in tail, tail  # collected and run, not skipped
    print(tail)
