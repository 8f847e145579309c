"""Build sockact's .deb from this tree, as `make deb` does, for tests that install it with apt."""

from __future__ import annotations

import subprocess
from pathlib import Path

import sockact

REPO = Path(__file__).resolve().parents[2]
VERSION = sockact.__version__
APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q"


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
