"""Keep-alive clients across `systemctl restart`: systemd's fd store, on a clean Debian 12 with the .deb.

The package is installed into a fresh overlay of the cached debootstrapped bookworm (debroot.py),
as in test_deb.py. A client's keep-alive connection, opened before a restart, must get its next
request answered on the same connection by the new supervisor; the store must drop a connection
whose client went away while stored; a connection taken back is sockact's alone (closing it
closes it); and restarts and reloads under load fail no request.
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Iterator

import pytest
from debpkg import installed
from keepalive import KeepAlive, under_load
from nspawn import Container
from sysclient import wait_for
from test_deb import DEMO_PAGE, PORT, _get_or_none

pytestmark = [pytest.mark.system, pytest.mark.slow]

SERVICE = "sockact.service"
# Holds the next instance's start (ExecStartPre=) until the test creates this file, so the test can
# watch the store between two instances without racing them.
GATE = "/run/sockact-test-gate"
GATE_DROP_IN = "/etc/systemd/system/sockact.service.d/gate.conf"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """A fresh overlay of the clean bookworm root with this tree's .deb installed and serving on PORT."""
    with installed(tmp_path_factory.mktemp("debs")) as booted:
        wait_for(lambda: _get_or_none(PORT), timeout=30, what="the service serving")
        yield booted


def _supervisor(text: str) -> str:
    return re.search(r"supervisor_pid: (\d+)", text).group(1)  # type: ignore[union-attr]


def _stored(box: Container) -> int:
    """How many fds systemd holds in sockact.service's store now."""
    return int(box.show(SERVICE, "NFileDescriptorStore"))


def _main_pid(box: Container) -> str:
    return box.show(SERVICE, "MainPID")


def _journal_since(box: Container, cursor: str) -> str:
    return box.run(["journalctl", "-u", SERVICE, "-o", "cat", "--no-pager", f"--after-cursor={cursor}"]).stdout


def _journal_saying(box: Container, cursor: str, text: str) -> str:
    """The journal since ``cursor`` once it holds ``text``: journald writes a little after the sender."""
    return wait_for(lambda: text in (said := _journal_since(box, cursor)) and said, timeout=30, what=repr(text))


def _cursor(box: Container) -> str:
    return box.run("journalctl -n 0 --show-cursor -q").stdout.strip().removeprefix("-- cursor: ")


def test_an_idle_keepalive_client_is_answered_on_the_same_connection_after_a_restart(box: Container) -> None:
    client = KeepAlive(PORT)
    try:
        first = client.get()
        assert first.status == 200 and first.headers.get("connection", "") != "close", first
        old = _supervisor(first.text)
        cursor = _cursor(box)
        box.systemctl("restart", SERVICE)
        assert _main_pid(box) not in ("0", old)
        again = client.get()  # the same connection, never reopened
        assert again.status == 200 and DEMO_PAGE in again.text, again
        assert _supervisor(again.text) == _main_pid(box) != old
        said = _journal_saying(box, cursor, "took back 1 keep-alive connections from systemd's fd store")
        assert "keep-alive connections left in systemd's fd store" in said, said
        # taken back, they are removed from the store at once: sockact is their only holder
        assert _stored(box) == 0
    finally:
        client.close()


def test_a_connection_taken_back_closes_when_sockact_closes_it(box: Container) -> None:
    client = KeepAlive(PORT)
    try:
        client.get()
        box.systemctl("restart", SERVICE)
        last = client.get(close=True)
        assert last.status == 200 and last.headers.get("connection") == "close", last
        # No duplicate left in systemd's store keeps it open: the client sees FIN.
        assert client.at_eof()
    finally:
        client.close()


@pytest.fixture
def gated(box: Container) -> Iterator[None]:
    """The next start of the service waits for GATE; removed after the test however it ends."""
    box.write(GATE_DROP_IN, f"[Service]\nExecStartPre=/bin/sh -c 'while [ ! -e {GATE} ]; do sleep 0.05; done'\n")
    box.run(f"rm -f {GATE} && systemctl daemon-reload")
    try:
        yield
    finally:
        box.run(f"touch {GATE}")
        box.remove(GATE_DROP_IN)
        box.run("systemctl daemon-reload")
        wait_for(lambda: box.show(SERVICE, "ActiveState") == "active", timeout=60, what="the service back")


def test_a_client_that_goes_away_while_stored_is_dropped_or_closed_at_take_back(box: Container,
                                                                              gated: None) -> None:
    """systemd polls stored fds for POLLHUP/POLLERR (FDPOLL): a reset drops one at once. A client's
    FIN only half-closes it, which systemd does not count as hung up; the next instance closes it."""
    staying, resetting, leaving = KeepAlive(PORT), KeepAlive(PORT), KeepAlive(PORT)
    try:
        for client in (staying, resetting, leaving):
            assert client.get().status == 200
        cursor = _cursor(box)
        box.systemctl("restart", "--no-block", SERVICE)
        # the old instance stored all three and exited; the next one waits at the gate
        wait_for(lambda: _stored(box) == 3, timeout=60, what="the three connections in the store")
        resetting.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        resetting.close()  # RST
        wait_for(lambda: _stored(box) == 2, timeout=30, what="systemd dropping the connection that was reset")
        leaving.close()  # FIN
        box.run(f"touch {GATE}")
        response = staying.get()
        assert response.status == 200 and DEMO_PAGE in response.text, response
        _journal_saying(box, cursor, "took back 1 keep-alive connections from systemd's fd store; closed 1 "
                        "half-closed by their clients")
        assert _stored(box) == 0
    finally:
        for client in (staying, resetting, leaving):
            client.close()


def test_stop_then_start_loses_the_store_on_systemd_252(box: Container) -> None:
    """Documented: without FileDescriptorStorePreserve= (255+) a stop empties the store."""
    client = KeepAlive(PORT)
    try:
        client.get()
        box.systemctl("stop", SERVICE)
        assert client.at_eof()  # systemd closed its copies when the service stopped
        assert DEMO_PAGE in wait_for(lambda: _get_or_none(PORT), timeout=30, what="the service again").text
    finally:
        client.close()


def test_restarts_and_reloads_under_load_fail_no_request(box: Container) -> None:
    fresh, kept = under_load(box, SERVICE, ["restart"] * 3 + ["reload"] * 3, PORT)
    print(f"3 restarts + 3 reloads: new connections {dict(fresh.outcomes)}, keep-alive {dict(kept.outcomes)}")
    assert fresh.failures == 0, f"{dict(fresh.outcomes)}: {fresh.errors}"
    assert kept.failures == 0, f"{dict(kept.outcomes)}: {kept.errors}"
    assert kept.outcomes["ok"] > 0
