"""Listeners bound from --bind, and the address parser."""

import socket

import pytest

from sockact.errors import ListenerError
from sockact.systemd.activation import bind_all, from_systemd, parse_bind


@pytest.mark.parametrize(("spec", "expected"), [
    ("127.0.0.1:8000", ("http", socket.AF_INET, ("127.0.0.1", 8000))),
    (":8000", ("http", socket.AF_INET, ("0.0.0.0", 8000))),
    ("[::1]:80", ("http", socket.AF_INET6, ("::1", 80))),
    ("api=unix:/run/api.sock", ("api", socket.AF_UNIX, "/run/api.sock")),
])
def test_parse_bind(spec, expected):
    assert parse_bind(spec) == expected


@pytest.mark.parametrize("spec", ["8000x", "host", "unix:", "1.2.3.4:99999"])
def test_parse_bind_rejects(spec):
    with pytest.raises(ListenerError, match="bind"):
        parse_bind(spec)


def test_nothing_to_bind():
    with pytest.raises(ListenerError, match="nothing to --bind"):
        bind_all([], 16)


def test_bound_unix_socket_is_removed_on_close_and_stale_files_replaced(tmp_path):
    path = tmp_path / "app.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a leftover file nobody listens on
    (listener,) = bind_all([f"unix:{path}"], 16)
    assert listener.owned and path.exists() and listener.address == f"unix:{path}"
    with pytest.raises(ListenerError, match="already in use"):
        bind_all([f"unix:{path}"], 16)
    listener.close()
    assert not path.exists()


def test_refuses_to_replace_a_regular_file(tmp_path):
    path = tmp_path / "not-a-socket"
    path.write_text("data")
    with pytest.raises(ListenerError, match="not a socket"):
        bind_all([f"unix:{path}"], 16)


def test_tcp_listener_is_nonblocking_and_cloexec():
    (listener,) = bind_all(["127.0.0.1:0"], 16)
    assert listener.sock.getblocking() is False
    assert listener.sock.get_inheritable() is False
    listener.close()


def test_tcp_listener_hands_over_a_connection_once_its_client_has_spoken():
    (listener,) = bind_all(["127.0.0.1:0"], 16)
    assert listener.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0
    listener.close()


def test_not_activated_without_listen_fds():
    env = {"PATH": "/bin"}
    assert from_systemd(env) is None


def test_listen_pid_of_another_process_is_ignored_and_cleared():
    env = {"LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "http"}
    assert from_systemd(env) is None
    assert env == {}


@pytest.mark.parametrize("value", ["abc", "-1", "500"])
def test_bad_listen_fds_is_a_one_line_listener_error(monkeypatch, value):
    import os

    # libsystemd reads the process environment itself, so the test sets it there.
    monkeypatch.setenv("LISTEN_FDS", value)
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    with pytest.raises(ListenerError) as err:
        from_systemd(os.environ)
    assert str(err.value).startswith(f"LISTEN_FDS={value!r}: ") and "\n" not in str(err.value)
    assert err.value.exit_code == 3
    assert "LISTEN_FDS" not in os.environ


def test_a_listener_bound_to_one_address_names_its_connections_local_address(tmp_path):
    # A worker then builds an ASGI scope's "server" without a getsockname() per connection.
    one, wildcard, unix = bind_all(["127.0.0.1:0", "0.0.0.0:0", f"unix:{tmp_path}/s.sock"], 16)
    assert one.local == ("127.0.0.1", one.sock.getsockname()[1])
    assert wildcard.local is None and unix.local is None  # each connection has its own, or none
    for listener in (one, wildcard, unix):
        listener.close()
    if socket.has_ipv6:
        for spec in ("[::]:0", "[::ffff:0.0.0.0]:0"):
            try:
                (any6,) = bind_all([spec], 16)
            except (ListenerError, OSError):
                continue  # no IPv6 here
            assert any6.local is None
            any6.close()
