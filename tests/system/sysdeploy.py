"""Install sockact into a booted container the way the Debian package does, and drive it.

``install()`` copies the working tree's package to /usr/lib/python3/dist-packages, writes the
/usr/bin/sockact launcher, the units, the catalog and the default config, so the container's
/usr/bin/python3 (Debian's, with python3-httptools and python3-systemd) runs it under systemd.

``Deployment`` is one test's view of it: it writes configs, drop-ins and test apps, starts units,
reads the journal from where the test began, and puts everything back afterwards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from nspawn import Container
from sysclient import Response, http_get

REPO = Path(__file__).resolve().parents[2]
UNIT_DIR = "/lib/systemd/system"  # where the .deb installs them
ADMIN_DIR = "/etc/systemd/system"  # where admins put drop-ins
UNITS = ("sockact.socket", "sockact.service", "sockact-metrics.socket", "sockact@.socket", "sockact@.service")
CONFIG = "/etc/sockact/sockact.toml"
CATALOG_DIR = "/usr/lib/systemd/catalog"
APPS_DIR = "/srv/sockact-tests"  # the container's /tmp is private; /srv is shared and readable
LAUNCHER = """#!/usr/bin/python3
import sys

from sockact.__main__ import main

sys.exit(main())
"""


def install(container: Container, repo: Path = REPO) -> None:
    """Install the package, launcher, units, catalog and default config, then reload systemd."""
    container.copy_in(repo / "sockact", "/usr/lib/python3/dist-packages/sockact",
                      ignore=("__pycache__", "*.pyc"))
    container.write("/usr/bin/sockact", LAUNCHER, mode=0o755)
    for unit in UNITS:
        container.copy_in(repo / "packaging" / "systemd" / unit, f"{UNIT_DIR}/{unit}")
    container.copy_in(repo / "packaging" / "systemd" / "sockact.catalog", f"{CATALOG_DIR}/sockact.catalog")
    container.copy_in(repo / "packaging" / "sockact.toml", CONFIG)
    container.run(["journalctl", "--update-catalog"])
    container.systemctl("daemon-reload")


# -- the pages that tests follow: docs/drop-ins.md holds the drop-ins that the tests install,
# docs/deploy.md the files and commands of a deployment

_BLOCK_RE = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)
_FILE_RE = re.compile(r"# (/\S+)\n")
FILE_LANGUAGES = ("ini", "toml", "python", "haproxy")


def section(text: str, heading: str) -> str:
    """The part of a Markdown page under ``heading`` (e.g. "## With pip"), up to the next heading
    of that level or above."""
    level = len(heading.split(" ", 1)[0])
    start = text.index(f"\n{heading}\n") + 1
    # a heading, or a fenced block skipped whole: its comment lines start with "#" too
    marks = re.finditer(rf"^```.*?^```$|^(#{{1,{level}}}) ", text[start:], re.M | re.S)
    ends = [m.start() for m in marks if m.group(1)][1:]
    return text[start:start + ends[0]] if ends else text[start:]


def steps(path: Path, heading: str | None = None) -> list[tuple[str, str]]:
    """A page's fenced blocks in order: ("sh", commands) for a ``sh`` block, (path inside, content)
    for an ini/toml/python/haproxy block whose first line is a comment naming the file; others are left out.
    With ``heading``, only the blocks of that section."""
    found: list[tuple[str, str]] = []
    text = path.read_text()
    for m in _BLOCK_RE.finditer(section(text, heading) if heading else text):
        language, body = m.groups()
        named = _FILE_RE.match(body)
        if language == "sh":
            found.append(("sh", body))
        elif language in FILE_LANGUAGES and named:
            found.append((named.group(1), body))
    return found


def cookbook(path: Path = REPO / "docs" / "drop-ins.md") -> dict[str, str]:
    """The files of a page: {path inside: content}."""
    return {where: body for where, body in steps(path) if where != "sh"}


# -- one test's deployment


class Deployment:
    """A test's handle on sockact in the container. ``reset()`` undoes everything it changed."""

    def __init__(self, container: Container) -> None:
        self.c = container
        self.port = 0
        self.cursor = ""
        self._files: list[str] = []

    def begin(self, port: int) -> None:
        """Point sockact.socket at ``port`` and remember where the journal stands."""
        self.port = port
        self.cursor = self.c.run(["journalctl", "-n", "0", "--show-cursor", "-q"]).stdout.strip()
        self.cursor = self.cursor.removeprefix("-- cursor: ")
        self.dropin("sockact.socket", "00-test-port.conf",
                    f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n")

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file inside that reset() removes again."""
        self.c.write(path, text, mode)
        self.track(path)

    def track(self, path: str) -> None:
        """Have reset() remove ``path`` inside (a file or a tree) that the test created."""
        self._files.append(path)

    def dropin(self, unit: str, name: str, text: str) -> None:
        """Add /etc/systemd/system/UNIT.d/NAME; call daemon_reload() (or start()) after."""
        self.write(f"{ADMIN_DIR}/{unit}.d/{name}", text)

    def app(self, module: str, source: str) -> None:
        """Write a test app module under APPS_DIR (on sockact's PYTHONPATH, see use_test_apps)."""
        self.write(f"{APPS_DIR}/{module}.py", source)

    def use_test_apps(self, unit: str = "sockact.service", **env: str) -> None:
        """Make the test apps importable by ``unit``, and set extra environment variables."""
        lines = [f"Environment=PYTHONPATH={APPS_DIR}", *(f"Environment={k}={v}" for k, v in env.items())]
        self.dropin(unit, "00-test-apps.conf", "[Service]\n" + "\n".join(lines) + "\n")

    def config(self, text: str, path: str = CONFIG) -> None:
        """Replace a config file; reset() restores the shipped one."""
        self.write(path, text)

    def daemon_reload(self) -> None:
        self.c.systemctl("daemon-reload")

    def start(self, unit: str = "sockact.socket") -> None:
        """Reload unit files, start ``unit`` and wait until it accepts connections on the port."""
        self.daemon_reload()
        self.c.systemctl("start", unit)

    def get(self, path: str = "/", timeout: float = 10.0) -> Response:
        return http_get(self.port, path, timeout=timeout)

    def show(self, prop: str, unit: str = "sockact.service") -> str:
        return self.c.show(unit, prop)

    def main_pid(self, unit: str = "sockact.service") -> int:
        return int(self.show("MainPID", unit))

    def journal(self, unit: str = "sockact.service", *extra: str) -> list[dict[str, Any]]:
        """This test's journal records of ``unit``, as dicts (journalctl -o json)."""
        args = ["journalctl", "-u", unit, "-o", "json", "--no-pager", *extra]
        if self.cursor:
            args.append(f"--after-cursor={self.cursor}")
        out = self.c.run(args).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def reset(self) -> None:
        """Stop every sockact unit, remove this test's files, restore the config, reload systemd."""
        self.c.systemctl("stop", "sockact.socket", "sockact-metrics.socket", "sockact.service", "sockact@*.socket",
                         "sockact@*.service", check=False)
        for path in reversed(self._files):
            self.c.remove(path)
        for leftover in self.c.path(ADMIN_DIR).glob("sockact*.d"):
            if leftover.is_dir() and not any(leftover.iterdir()):
                leftover.rmdir()
        self._files.clear()
        self.c.copy_in(REPO / "packaging" / "sockact.toml", CONFIG)
        self.c.systemctl("reset-failed", "sockact*", check=False)
        self.c.systemctl("daemon-reload")


def messages(records: Iterable[Mapping[str, Any]]) -> str:
    """The MESSAGE lines of journal records, for assertion messages."""
    return "\n".join(str(r.get("MESSAGE", "")) for r in records)
