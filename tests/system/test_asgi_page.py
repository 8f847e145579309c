"""README's pip path and docs/asgi.md, followed as written on a clean Debian 12 and a clean Debian 13.

On each release one container walks both paths in order. First the pip path, on a root with
nothing installed: README's "Install with pip" block runs exactly as written in a copy of this
tree, then the page's app and its pip section; the FastAPI app answers a GET and echoes over a
WebSocket. Without a WebSocket library, the worker says once which command installs one. Then
the .deb path: the package installed with apt, the page's .deb section, the same app and the same
WebSocket from Debian's FastAPI, uvloop and wsproto.

pip inside reaches the package index the way the host's pip does: the host's pip options and the
certificate files they name are copied in (debroot.pip_files).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from debpkg import APT, DEBS, build_deb
from debroot import SUITES, RootfsError, ensure_rootfs, pip_files
from nspawn import Container, missing_prerequisite
from sysclient import UnixHTTPConnection, wait_for
from sysdeploy import steps

from sockact.worker.asgirunner import NO_WEBSOCKET_LIBRARY

websockets_client = pytest.importorskip("websockets.sync.client")
websockets_errors = pytest.importorskip("websockets.exceptions")

pytestmark = [pytest.mark.system, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PAGE = REPO / "docs" / "asgi.md"
SOURCE = "/opt/sockact-src"  # README's "sockact's source directory", inside
PIP_SOCKET = "/run/chat.sock"
JOURNAL_UNITS = ("chat*",)  # the page's own units, beside sockact's
DEB_SOCKET = "/run/sockact/chat.sock"


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if missing_prerequisite():
        pytest.skip(missing_prerequisite() or "")
    return build_deb(tmp_path_factory.mktemp("deb"))


@pytest.fixture(scope="module", params=SUITES)
def box(request: pytest.FixtureRequest) -> Iterator[Container]:
    """A clean Debian root, booted, with this tree's files in SOURCE and the host's pip options."""
    if missing_prerequisite():
        pytest.skip(missing_prerequisite() or "")
    try:
        root = ensure_rootfs(request.param)
    except RootfsError as exc:
        pytest.fail(f"no clean Debian root: {exc}")
    with Container(root, overlay=True) as booted:
        for inside, content in pip_files(os.environ).items():
            booted.write(inside, content)
        booted.copy_in(REPO, SOURCE, ignore=(".git", ".venv", "dist", "build", "__pycache__", ".*_cache"))
        yield booted


def _walk(box: Container, page: Path, heading: str, cwd: str = "/") -> None:
    """Do what a page's section says: write its files, run its ``sh`` blocks as root."""
    for where, text in steps(page, heading):
        if where == "sh":
            box.run(["sh", "-ec", f"cd {cwd}\n{text}"], env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
        else:
            box.write(where, text)


def _get(box: Container, sock: str) -> tuple[int, str]:
    conn = UnixHTTPConnection(str(box.path(sock)), timeout=30)
    try:
        conn.request("GET", "/", headers={"Host": "localhost"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _echo(box: Container, sock: str) -> list[str]:
    """Two messages over the app's WebSocket, and what came back."""
    with websockets_client.unix_connect(str(box.path(sock)), "ws://localhost/echo", open_timeout=30) as ws:
        answers = []
        for text in ("hello", "über 🚀"):
            ws.send(text)
            answers.append(str(ws.recv(timeout=30)))
    return answers


def _serves_fastapi(box: Container, sock: str) -> None:
    status, body = _get(box, sock)
    assert (status, json.loads(body)) == (200, {"hello": "from FastAPI"}), body
    assert _echo(box, sock) == ["echo: hello", "echo: über 🚀"]


def _journal(box: Container, unit: str) -> str:
    return box.run(["journalctl", "-u", unit, "-o", "cat", "--no-pager"]).stdout


def test_readme_pip_path_serves_fastapi_with_a_websocket(box: Container) -> None:
    assert box.run("dpkg-query -W python3-venv gcc", check=False).returncode != 0, "the root is not clean"
    started = time.monotonic()
    _walk(box, README, "## Install with pip", cwd=SOURCE)
    took = time.monotonic() - started
    print(f"README's pip path: {took:.0f} s, apt and the systemd-python build included")
    _walk(box, PAGE, "## The app")
    _walk(box, PAGE, "## With pip")
    _serves_fastapi(box, PIP_SOCKET)
    log = _journal(box, "chat-pip.service")
    assert "serves app:app as ASGI (detected)" in log, log
    # the extras brought uvloop and wsproto; systemd-python was built and takes the journal
    listed = box.run("/opt/sockact-venv/bin/pip list --format=freeze").stdout.lower().replace("_", "-")
    for name in ("systemd-python", "uvloop", "wsproto", "prometheus-client", "setproctitle", "httptools"):
        assert f"{name}==" in listed, listed
    box.systemctl("stop", "chat-pip.service")


def test_without_a_websocket_library_the_fix_is_logged_once(box: Container) -> None:
    box.run("/opt/sockact-venv/bin/pip uninstall -y wsproto", timeout=120)
    sock = "/run/chat-nows.sock"
    box.run(["systemd-run", "--unit=chat-nows", "--working-directory=/srv/chat", "/opt/sockact-venv/bin/sockact",
             "run", "app:app", "--workers", "1", "--bind", f"unix:{sock}"])
    try:
        wait_for(lambda: box.path(sock).exists(), timeout=30, what="the socket bound")
        for _ in range(3):
            # the app's answer to a plain GET of a WebSocket route: FastAPI's 404
            with pytest.raises(websockets_errors.InvalidStatus) as refused:
                _echo(box, sock)
            assert refused.value.response.status_code == 404
        wait_for(lambda: NO_WEBSOCKET_LIBRARY in _journal(box, "chat-nows.service"), timeout=30,
                 what="the fix in the journal")
        assert _journal(box, "chat-nows.service").count(NO_WEBSOCKET_LIBRARY) == 1
    finally:
        box.systemctl("stop", "chat-nows.service", check=False)


def test_the_deb_serves_the_same_app_from_debians_packages(box: Container, deb: Path) -> None:
    box.copy_in(deb, f"{DEBS}/{deb.name}")
    box.run("apt-get update -q", timeout=300)
    box.run(f"{APT} install {DEBS}/{deb.name}", timeout=600)
    _walk(box, PAGE, "## The app")
    _walk(box, PAGE, "## With the .deb")
    _serves_fastapi(box, DEB_SOCKET)
    log = _journal(box, "sockact@chat.service")
    assert "serves app:app as ASGI (detected)" in log, log
    assert NO_WEBSOCKET_LIBRARY not in log
