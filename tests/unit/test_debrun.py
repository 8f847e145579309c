"""`make run`'s tool: its state is per checkout, and its port probe sees TIME-WAIT ports as free."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_debrun():
    spec = importlib.util.spec_from_file_location("debrun", ROOT / "tools" / "debrun.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = path
    return module


def test_state_is_kept_per_checkout(tmp_path):
    debrun = load_debrun()
    one, two = tmp_path / "one" / "sockact", tmp_path / "two" / "sockact"
    one.mkdir(parents=True)
    two.mkdir(parents=True)
    assert debrun.state_dir(one) != debrun.state_dir(two)
    assert debrun.state_dir(one) == debrun.state_dir(one / ".")
    assert debrun.state_dir(one).name.startswith("sockact-")
    assert debrun.STATE.parent == debrun.state_dir(ROOT)


def test_a_port_in_time_wait_is_free():
    debrun = load_debrun()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    assert not debrun.port_is_free(port)  # a listener holds it
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    served.close()  # the server closes first: its side of the port goes into TIME-WAIT
    client.recv(1)
    client.close()
    listener.close()
    assert debrun.port_is_free(port)
