"""sd_notify through systemd-python, against a real datagram socket standing in for systemd's."""

import socket

import pytest

from sockact.systemd.notify import Notifier, ReloadOutcome, forget


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def messages(sock: socket.socket) -> list[str]:
    out = []
    sock.settimeout(0.2)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except TimeoutError:
        return out


def test_lifecycle_messages(notify_socket, monkeypatch):
    import os

    n = Notifier(os.environ, os.getpid())
    assert n.enabled
    n.ready("2 workers")
    n.status("busy")
    n.status("busy")  # unchanged: not sent again
    n.reloading()
    n.stopping()
    n.extend_timeout(5)
    n.watchdog()
    got = messages(notify_socket)
    assert got[0] == "READY=1\nSTATUS=2 workers"
    assert got[1] == "STATUS=busy"
    assert got[2].startswith("RELOADING=1\nMONOTONIC_USEC=") and int(got[2].split("=")[-1]) > 0
    assert got[3:] == ["STOPPING=1", "EXTEND_TIMEOUT_USEC=5000000", "WATCHDOG=1"]


def test_no_notify_socket_is_a_no_op():
    n = Notifier({}, 123)
    assert not n.enabled and n.watchdog_interval is None
    n.ready()
    n.watchdog()


@pytest.mark.parametrize("kind", ["missing", "closed"])
def test_unreachable_socket_never_raises(tmp_path, monkeypatch, kind):
    path = tmp_path / "gone"
    if kind == "closed":  # a socket file nobody reads any more: connection refused
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:
            dead.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))  # systemd-python sends to the process's own variable
    n = Notifier({"NOTIFY_SOCKET": str(path)}, 1)
    assert n.enabled  # so the sends below really try, and fail, rather than being no-ops
    assert [n.ready(), n.status("x"), n.watchdog(), n.stopping()] == [None] * 4


@pytest.mark.parametrize(("env", "interval"), [
    ({"WATCHDOG_USEC": "10000000"}, 5.0),
    ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "42"}, 5.0),
    ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "43"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "junk"}, None),
])
def test_watchdog_interval_is_half_for_this_pid_only(env, interval):
    assert Notifier(env, 42).watchdog_interval == interval


def test_workers_forget_the_variables():
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2", "OTHER": "kept"}
    forget(env)
    assert env == {"OTHER": "kept"}


# -- the outcome of a reload, for `sockact reload`


def test_reload_finished_sends_ready_and_publishes_numbered_outcomes(notify_socket, tmp_path):
    import os

    from sockact.systemd.notify import read_reload_outcome

    run = tmp_path / "run"
    run.mkdir()
    n = Notifier({"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"], "RUNTIME_DIRECTORY": f"{run}:/elsewhere"}, 4242)
    n.ready()
    assert read_reload_outcome(str(run)) is None
    n.reload_finished(False, "line 2: bad value")
    assert read_reload_outcome(str(run)) == ReloadOutcome(1, 4242, False, "line 2: bad value")
    n.reload_finished(True, "")
    assert read_reload_outcome(str(run)) == ReloadOutcome(2, 4242, True, "")
    assert messages(notify_socket) == ["READY=1", "READY=1\nSTATUS=reload failed: line 2: bad value", "READY=1"]
    assert [p.name for p in run.iterdir()] == ["reload"]  # no partial file left behind


def test_a_failed_reload_stays_in_front_of_the_status_until_a_reload_succeeds(notify_socket, tmp_path):
    import os

    n = Notifier({"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"]}, 1)
    n.ready()
    n.status("2 workers")
    n.reload_finished(False, "no such module")
    n.status("2 workers, 6 requests served")  # the counts move on; the old generation still serves
    assert messages(notify_socket)[-1] == "STATUS=reload failed: no such module; 2 workers, 6 requests served"
    n.reload_finished(True, "")
    n.status("2 workers, 6 requests served")
    assert messages(notify_socket)[-1] == "STATUS=2 workers, 6 requests served"


def test_a_reload_that_ends_before_the_start_does_not_say_ready(notify_socket, tmp_path):
    import os

    n = Notifier({"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"], "RUNTIME_DIRECTORY": str(tmp_path)}, 1)
    n.reload_finished(True, "")
    n.reload_finished(False, "bad file")
    assert messages(notify_socket) == ["STATUS=reload failed: bad file"]


def test_publishing_where_it_cannot_write_never_raises(tmp_path):
    n = Notifier({"RUNTIME_DIRECTORY": str(tmp_path / "gone")}, 1)
    n.reload_finished(True, "")  # no NOTIFY_SOCKET and no directory: nothing to do, nothing raised


@pytest.mark.parametrize("text", [
    "", "{", "[]", '{"seq": 1}', '{"seq": "1", "pid": 2, "ok": true, "reason": ""}',
    '{"seq": 1, "pid": 2, "ok": 1, "reason": ""}', '{"seq": 1, "pid": 2, "ok": true, "reason": "", "x": 0}',
    '{"seq": 1, "pid": 2, "ok": false, "reason": "", "kept": 0}',
])
def test_anything_but_an_outcome_reads_as_none(text):
    assert ReloadOutcome.from_text(text) is None


def test_outcome_round_trip():
    outcome = ReloadOutcome(7, 99, False, 'key "workers": expected an integer\nsecond line')
    assert ReloadOutcome.from_text(outcome.to_text()) == outcome
    kept = ReloadOutcome(8, 99, False, "the new code does not load", "generation 3")
    assert ReloadOutcome.from_text(kept.to_text()) == kept
    # one published before outcomes said what they keep still reads, its kept unsaid (None), not empty
    older = '{"seq": 1, "pid": 2, "ok": false, "reason": "x"}'
    assert ReloadOutcome.from_text(older) == ReloadOutcome(1, 2, False, "x", None, None)  # nor any requests taken


def test_a_failed_reload_says_what_it_keeps_in_the_status_and_publishes_it_apart(notify_socket, tmp_path):
    import os

    from sockact.systemd.notify import read_reload_outcome

    n = Notifier({"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"], "RUNTIME_DIRECTORY": str(tmp_path)}, 7)
    n.ready()
    n.reload_finished(False, "the new code does not load", "generation 0")
    assert messages(notify_socket) == ["READY=1", "READY=1\nSTATUS=reload failed: the new code does not load; "
                                       "keeping generation 0"]
    assert read_reload_outcome(str(tmp_path)) == ReloadOutcome(1, 7, False, "the new code does not load",
                                                                "generation 0")


def test_a_halt_reason_is_the_last_status(notify_socket):
    import os

    n = Notifier(os.environ, os.getpid())
    n.status("2 workers")
    n.halted("the app failed to load (worker exit code 5: no module named 'app'); stopping")
    n.status("stopping: 0 workers left, 0 connections")  # the quick stop's counts: not sent
    n.stopping()
    assert messages(notify_socket) == [
        "STATUS=2 workers", "STATUS=the app failed to load (worker exit code 5: no module named 'app'); stopping",
        "STOPPING=1"]


def test_the_requests_a_hup_takes_are_answered_each_in_its_own_file_and_listed_in_the_shared_one(tmp_path):
    from sockact.systemd.notify import read_reload_outcome

    for name in ("reload.501.request", "reload.502.request", "reload.x.request", "reload.9"):
        (tmp_path / name).write_text("")
    n = Notifier({"RUNTIME_DIRECTORY": str(tmp_path)}, 7)
    taken = n.claim_reload_requests()
    assert taken == (501, 502) and n.claim_reload_requests() == ()
    n.reload_finished(False, "empty", answers=(502,), under_way=True)
    assert read_reload_outcome(str(tmp_path), 502) == ReloadOutcome(1, 7, False, "empty", "", (502,))
    assert read_reload_outcome(str(tmp_path), 501) is None  # its reload runs on
    n.reload_finished(True, "", answers=(501,))
    assert read_reload_outcome(str(tmp_path), 501) == ReloadOutcome(2, 7, True, "", "", (501,))
    assert read_reload_outcome(str(tmp_path)) == ReloadOutcome(2, 7, True, "", "", (501,))


def test_a_reload_that_fails_at_once_while_another_runs_sends_no_ready(notify_socket):
    import os

    n = Notifier({"NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"]}, 7)
    n.ready()
    n.reload_finished(False, "empty", under_way=True)
    n.reload_finished(True, "")
    assert messages(notify_socket) == ["READY=1", "STATUS=reload failed: empty", "READY=1"]
