"""The fd store: names, taking stored connections back, and the FDSTORE/FDSTOREREMOVE/BARRIER messages.

Real sockets throughout: loopback TCP connections for the stored fds, and a datagram socket
standing in for systemd's notification socket.
"""

from __future__ import annotations

import array
import os
import resource
import socket
import threading
from collections.abc import Iterator

import pytest

from sockact.systemd.fdstore import conn_name, listener_of, take_back
from sockact.systemd.notify import Notifier


def test_a_connection_name_points_at_its_listener_and_a_listener_name_at_none() -> None:
    assert conn_name("http") == "sockact-conn.http"
    assert listener_of(conn_name("admin")) == "admin"
    assert listener_of("http") is None


@pytest.fixture
def server() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        yield srv


def _pair(server: socket.socket) -> tuple[socket.socket, socket.socket]:
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    return client, accepted


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_take_back_parks_live_connections_and_closes_every_other_kind_once(server: socket.socket) -> None:
    live_client, live = _pair(server)
    gone_client, gone = _pair(server)
    gone_client.shutdown(socket.SHUT_WR)  # the client half-closed while stored
    _, other = _pair(server)
    pipe_r, pipe_w = os.pipe()
    os.close(pipe_w)
    listening = socket.create_server(("127.0.0.1", 0))
    stored = [(live.detach(), conn_name("http")), (gone.detach(), conn_name("http")),
              (other.detach(), conn_name("gone-listener")), (pipe_r, conn_name("http")),
              (listening.detach(), conn_name("http"))]
    found = take_back(stored, ["admin", "http"], first_id=7)
    assert [(c.id, c.listener, c.peer) for c in found.conns] == [(7, 1, live_client.getsockname())]
    assert found.names == {conn_name("http"), conn_name("gone-listener")}
    assert found.closed == {"half-closed by their clients": 1, "for a listener this instance has not": 1,
                            "that were not sockets": 1, "that were listening sockets": 1}
    assert [_is_open(fd) for fd, _ in stored] == [True, False, False, False, False]
    summary = found.summary()
    assert summary.startswith("took back 1 keep-alive connections") and "1 half-closed by their clients" in summary
    # the connection taken back still carries the client's bytes
    live_client.sendall(b"GET / HTTP/1.1\r\n\r\n")
    assert os.read(found.conns[0].fd, 100) == b"GET / HTTP/1.1\r\n\r\n"
    os.close(found.conns[0].fd)
    assert live_client.recv(10) == b""  # our copy was the last: the client sees FIN
    for sock in (live_client, gone_client):
        sock.close()


@pytest.fixture
def systemd_socket(tmp_path, monkeypatch) -> Iterator[socket.socket]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)  # systemd-python sends to the process's own variable
    yield sock
    sock.close()


def _receive(sock: socket.socket) -> tuple[str, list[int]]:
    data, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(4 * array.array("i").itemsize))
    fds = array.array("i")
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return data.decode(), list(fds)


def test_store_sends_a_duplicate_with_its_name_and_remove_names_it(systemd_socket: socket.socket,
                                                                  server: socket.socket) -> None:
    n = Notifier({"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"]}, os.getpid())
    assert n.can_store_fds
    client, accepted = _pair(server)
    assert n.store_fd(accepted.fileno(), conn_name("http"))
    text, fds = _receive(systemd_socket)
    assert text == "FDSTORE=1\nFDNAME=sockact-conn.http" and len(fds) == 1
    accepted.close()
    # "systemd" holds a duplicate: the client sees no FIN until that one is closed too
    client.setblocking(False)
    with pytest.raises(BlockingIOError):
        client.recv(1)
    os.close(fds[0])
    client.setblocking(True)
    assert client.recv(1) == b""
    n.remove_stored(conn_name("http"))
    assert _receive(systemd_socket) == ("FDSTOREREMOVE=1\nFDNAME=sockact-conn.http", [])
    client.close()


@pytest.mark.parametrize("high_fds", [False, True], ids=["low-fds", "fds-above-1024"])
def test_the_barrier_returns_once_systemd_has_read_what_was_sent(systemd_socket: socket.socket,
                                                                  high_fds: bool) -> None:
    n = Notifier({"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"]}, os.getpid())
    filler = _fds_up_to(1100) if high_fds else []  # a supervisor holding many clients: the pipe's fd is above 1024
    got: list[str] = []

    def systemd() -> None:
        text, fds = _receive(systemd_socket)
        got.append(text)
        for fd in fds:
            os.close(fd)  # what systemd does with the barrier's pipe once the message is read

    reader = threading.Thread(target=systemd)
    reader.start()
    try:
        assert n.barrier(timeout=10)
    finally:
        for fd in filler:
            os.close(fd)
    reader.join()
    assert got == ["BARRIER=1"]


def _fds_up_to(n: int) -> list[int]:
    """Open fds until the next one is numbered ``n`` or more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 16:
        if hard != resource.RLIM_INFINITY and hard < n + 16:
            pytest.skip(f"RLIMIT_NOFILE's hard limit {hard} is below {n + 16}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 16, hard))
    opened = [os.open("/dev/null", os.O_RDONLY)]
    while opened[-1] < n:
        opened.append(os.open("/dev/null", os.O_RDONLY))
    return opened


def test_the_barrier_gives_up_when_nobody_reads(systemd_socket: socket.socket) -> None:
    n = Notifier({"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"]}, os.getpid())
    assert not n.barrier(timeout=0.2)  # the unread message holds the pipe's write end open


def test_without_systemd_or_with_a_zero_store_nothing_is_stored() -> None:
    assert not Notifier({}, 1).can_store_fds
    assert not Notifier({}, 1).barrier(timeout=0.1)
    assert not Notifier({"NOTIFY_SOCKET": "/nowhere", "FDSTORE": "0"}, 1).can_store_fds
