"""The Debian packaging agrees with the code: one version, the units and files it installs exist."""

from __future__ import annotations

import re
from pathlib import Path

import sockact

REPO = Path(__file__).resolve().parents[2]
DEBIAN = REPO / "debian"


def test_changelog_version_is_the_package_version() -> None:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    match = re.match(r"^sockact \(([^)]+)\) \S+; urgency=\w+$", first)
    assert match, first
    # The version lives in sockact/__init__.py; a native package has no Debian revision.
    assert match.group(1) == sockact.__version__
    assert "-" not in match.group(1)
    assert (DEBIAN / "source/format").read_text().strip() == "3.0 (native)"


def test_everything_sockact_install_names_exists() -> None:
    for line in (DEBIAN / "sockact.install").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            source, _dest = line.split()
            assert (REPO / source).is_file(), source


def test_units_go_where_bookworm_debhelper_looks() -> None:
    # dh_installsystemd on bookworm scans only lib/systemd/system/ for units to enable and start.
    for line in (DEBIAN / "sockact.install").read_text().splitlines():
        source, dest = line.split()
        if source.endswith((".socket", ".service")):
            assert dest == "lib/systemd/system/", line


def test_runtime_dependencies_are_debian_packages() -> None:
    control = (DEBIAN / "control").read_text()
    binary = control.split("\nPackage: sockact\n", 1)[1]
    depends = binary.split("\nDepends:", 1)[1].split("\nDescription:", 1)[0]
    for package in ("python3-systemd", "python3-httptools", "${python3:Depends}"):
        assert package in depends


def test_every_lintian_override_says_why() -> None:
    lines = (DEBIAN / "sockact.lintian-overrides").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            assert i > 0 and lines[i - 1].startswith("#"), f"override without a reason: {line}"


def test_process_titles_are_recommended() -> None:
    control = (DEBIAN / "control").read_text()
    recommends = re.search(r"^Recommends:\n((?: .*\n)+)", control, re.M)
    assert recommends and "python3-setproctitle" in recommends.group(1)
