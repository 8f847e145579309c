"""Build sockact's .deb from this tree, as `make deb` does, for tests that install it with apt."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from debroot import SUITE, RootfsError, ensure_rootfs, pip_files
from nspawn import Container, missing_prerequisite

import sockact

REPO = Path(__file__).resolve().parents[2]
VERSION = sockact.__version__
APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q"
DEBS = "/opt/sockact-debs"  # where the .deb goes in a container, whose /tmp is private


def build_deb(outdir: Path, version: str | None = None) -> Path:
    """dist's sockact_VERSION_all.deb, built into ``outdir``; ``version`` overrides the tree's."""
    # nocheck: the unit tests the package build would run are part of this same `make test`
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
           "DEB_BUILD_OPTIONS": "nocheck"}
    if version:
        env["SOCKACT_DEB_VERSION"] = version
    done = subprocess.run([str(REPO / "packaging" / "build-deb.sh"), str(outdir)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"build-deb.sh failed:\n{done.stdout}\n{done.stderr}"
    deb = outdir / f"sockact_{version or VERSION}_all.deb"
    assert deb.is_file(), done.stdout
    return deb


@contextlib.contextmanager
def installed(outdir: Path, suite: str = SUITE) -> Iterator[Container]:
    """A booted overlay of the clean root of ``suite`` with this tree's .deb installed by apt, as a
    new user installs it, and the host's pip options (for what a page installs with pip); skips
    where containers cannot run, fails where no root can be built."""
    import pytest  # only the tests need it, not bench/restarts.py

    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    deb = build_deb(outdir)
    try:
        root = ensure_rootfs(suite)
    except RootfsError as exc:
        pytest.fail(f"no clean Debian root: {exc}")
    with Container(root, overlay=True) as booted:
        for inside, content in pip_files(os.environ).items():
            booted.write(inside, content)
        booted.copy_in(deb, f"{DEBS}/{deb.name}")
        booted.run("apt-get update -q", timeout=300)
        booted.run(f"{APT} install {DEBS}/{deb.name}", timeout=300)
        yield booted
