"""Signals fed straight into the supervisor's dispatch, as its loop does: no process, no fork."""

from __future__ import annotations

import logging
import os
import signal

import pytest

from sockact import config
from sockact.errors import ConfigError
from sockact.policy.states import Phase
from sockact.supervisor import Supervisor
from sockact.systemd.notify import Notifier


def supervisor(reload_error: str | None = None, **settings: str) -> Supervisor:
    def reload_config() -> config.Config:
        if reload_error:
            raise ConfigError(reload_error)
        return config.build(settings, {}, None)

    return Supervisor(config.build(settings, {}, None), [], Notifier({}, os.getpid()), None, reload_config)


def test_term_drains(caplog: pytest.LogCaptureFixture) -> None:
    sup = supervisor()
    with caplog.at_level(logging.INFO):
        sup.dispatch_signal(signal.SIGTERM)
    assert sup.pool.phase is Phase.DRAINING and sup.stopping
    assert "stopping: draining" in caplog.text
    sup.dispatch_signal(signal.SIGTTIN)  # a drain starts nothing, not even a worker asked for
    assert not sup.workers and not sup.pool.members


def test_term_with_drain_delay_serves_on_until_the_delay_is_over(caplog: pytest.LogCaptureFixture) -> None:
    sup = supervisor(drain_delay="5")
    sup.pool.phase = Phase.SERVING
    with caplog.at_level(logging.INFO):
        sup.dispatch_signal(signal.SIGTERM)
    assert sup.pool.phase is Phase.LEAVING and sup.leaving and not sup.stopping
    assert "stopping in 5.0s" in caplog.text
    sup.dispatch_signal(signal.SIGHUP)  # no reload of a host on its way out
    assert sup.pool.current.number == 0
    sup.dispatch_signal(signal.SIGTERM)  # a second TERM: the stop proper, at once
    assert sup.pool.phase is Phase.DRAINING and sup.stopping


def test_hup_with_a_broken_file_fails_the_reload_and_keeps_the_generation(caplog: pytest.LogCaptureFixture) -> None:
    sup = supervisor(reload_error="key 'workers': invalid value")
    sup.pool.phase = Phase.SERVING  # as after the first READY
    with caplog.at_level(logging.ERROR):
        sup.dispatch_signal(signal.SIGHUP)
    assert "reload failed: key 'workers': invalid value" in caplog.text
    assert sup.pool.current.number == 0 and sup.pool.phase is Phase.SERVING


def test_hup_whose_settings_fail_unforeseen_fails_the_reload_and_the_supervisor_lives_on(
        caplog: pytest.LogCaptureFixture) -> None:
    def reload_config() -> config.Config:
        raise ValueError("embedded null byte")  # as os.chdir says, for one

    sup = supervisor()
    sup.reload_config = reload_config
    sup.pool.phase = Phase.SERVING
    with caplog.at_level(logging.ERROR):
        sup.dispatch_signal(signal.SIGHUP)
    assert "reload failed: reading the settings failed: ValueError: embedded null byte" in caplog.text
    assert sup.pool.current.number == 0 and sup.pool.phase is Phase.SERVING


def test_hup_with_changed_hooks_says_they_wait_for_a_restart(caplog: pytest.LogCaptureFixture, tmp_path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sockact.toml"
    path.write_text('[hooks]\non_reload = "os:getcwd"\n')
    sup = supervisor()
    sup.reload_config = lambda: config.build({}, {}, str(path))
    sup.pool.phase = Phase.SERVING
    monkeypatch.setattr(sup, "carry_out", lambda actions: None)  # no workers to start here
    with caplog.at_level(logging.WARNING):
        sup.dispatch_signal(signal.SIGHUP)
    assert ('settings read only at start changed: hooks: {} -> {on_reload = "os:getcwd"}, applied at the next '
            "restart") in caplog.text
    assert sup.pool.current.number == 1  # the reload itself goes on
    caplog.clear()
    sup.reload_config = lambda: config.build({}, {}, None)
    sup.pool.phase = Phase.SERVING
    with caplog.at_level(logging.WARNING):
        sup.dispatch_signal(signal.SIGHUP)  # the hooks in force (none, as the settings say): no word
    assert "hooks" not in caplog.text


def test_a_signal_without_a_handler_is_ignored() -> None:
    sup = supervisor()
    sup.dispatch_signal(signal.SIGALRM)
    assert sup.pool.phase is Phase.STARTING


def test_usr1_reopens_the_logs_and_usr2_and_winch_are_ignored_with_a_word(caplog: pytest.LogCaptureFixture) -> None:
    sup = supervisor()
    sup.pool.phase = Phase.SERVING
    with caplog.at_level(logging.DEBUG, logger="sockact"):
        for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH):
            sup.dispatch_signal(signum)
    assert "reopening log files" in caplog.text
    assert "SIGUSR2 ignored" in caplog.text and "SIGWINCH ignored" in caplog.text
    assert sup.pool.phase is Phase.SERVING and not sup.stopping


def test_every_signal_a_gunicorn_user_sends_has_a_handler() -> None:
    from sockact.supervisor import HANDLED_SIGNALS

    sup = supervisor()
    for name in ("HUP", "TERM", "INT", "QUIT", "USR1", "USR2", "TTIN", "TTOU", "WINCH"):
        assert getattr(signal, f"SIG{name}") in HANDLED_SIGNALS, name
        assert callable(getattr(sup, f"handle_{name.lower()}")), name


def test_hup_to_a_worker_memory_limit_that_cannot_be_enforced_fails_the_reload(
        tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A cgroup tree in a tmp dir whose memory controller is not delegated (the real one is the
    service's; see tests/unit/test_cgroups.py)."""
    from sockact.systemd import cgroups

    service = tmp_path / "system.slice" / "sockact.service"
    service.mkdir(parents=True)
    for where in (tmp_path, service):
        (where / "cgroup.controllers").write_text("cpu pids\n")
    (tmp_path / "cgroup").write_text("0::/system.slice/sockact.service\n")
    monkeypatch.setattr(cgroups, "CGROUP_FS", str(tmp_path))
    monkeypatch.setattr(cgroups, "PROC_CGROUP", str(tmp_path / "cgroup"))
    sup = Supervisor(config.build({}, {}, None), [], Notifier({}, os.getpid()), None,
                     lambda: config.build({"worker_memory_limit": "1G"}, {}, None))
    sup.pool.phase = Phase.SERVING
    with caplog.at_level(logging.ERROR):
        sup.dispatch_signal(signal.SIGHUP)
    assert ("reload failed: worker_memory_limit: the memory controller is not delegated to "
            "/system.slice/sockact.service") in caplog.text
    assert sup.pool.current.number == 0 and sup.pool.phase is Phase.SERVING
    assert not (service / "supervisor").exists()  # nothing moved


def test_every_message_a_worker_sends_has_one_handler_on_the_supervisor_side() -> None:
    from sockact.ipc import handoff

    sup = supervisor()
    kinds = {handoff.READY, handoff.PARK, handoff.DONE, handoff.FAILED, handoff.RECYCLE}
    assert set(sup.channels._handlers) == kinds == handoff._KINDS - {handoff.CONN}  # CONN goes the other way


def test_a_worker_that_sends_a_connection_is_killed_and_the_fd_closed(caplog: pytest.LogCaptureFixture) -> None:
    import subprocess

    from sockact.ipc import handoff
    from sockact.supervisor.workers import WorkerProcess

    sup = supervisor()
    ours, theirs = handoff.channel_pair()
    child = subprocess.Popen(["sleep", "60"])  # stands for the worker: it is what gets the SIGKILL
    try:
        w = WorkerProcess(child.pid, ours, slot=0, generation=0, threads=1)
        r, wr = os.pipe()
        handoff.send(theirs, handoff.Message(handoff.CONN, conn_id=7, fd=r))  # only the supervisor sends CONN
        os.close(r)
        with caplog.at_level(logging.ERROR):
            sup.channels.read(w)
        assert child.wait(timeout=10) == -signal.SIGKILL
        assert "sent a message only the supervisor sends" in caplog.text
        with pytest.raises(BrokenPipeError):  # no read end is left: the copy that came with it is closed
            os.write(wr, b"x")
        os.close(wr)
    finally:
        child.kill()
        ours.close()
        theirs.close()


def test_a_channel_watched_for_room_with_nothing_left_to_send_is_unwatched_at_its_next_event() -> None:
    # A worker's channel is watched for room while connections wait in its outbox. Emptied otherwise (a
    # retire takes what waits), a channel still watched is writable at every turn: the loop would spin.
    import selectors

    from sockact.ipc import handoff
    from sockact.supervisor.workers import WorkerProcess

    sup = supervisor()
    sup.selector = selectors.DefaultSelector()
    ours, theirs = handoff.channel_pair()
    try:
        w = WorkerProcess(os.getpid(), ours, slot=0, generation=0, threads=1)
        sup.selector.register(ours, selectors.EVENT_READ, (sup.channels.read, w))
        sup.switchboard._watch(w, True)  # as when its channel was full
        assert sup.selector.get_key(ours).events & selectors.EVENT_WRITE
        sup.channels.read(w)  # the channel is writable, and nothing waits
        assert sup.selector.get_key(ours).events == selectors.EVENT_READ
    finally:
        sup.selector.close()
        ours.close()
        theirs.close()


def test_a_workers_exit_read_with_the_supervisors_own_stop_signal_comes_after_it(monkeypatch) -> None:
    """A terminal's Ctrl-C reaches the workers first (the kernel signals a group's newest members first):
    the CHLD of their exit comes before the supervisor's INT, in the same read."""
    sup = supervisor()
    seen: list[int] = []
    monkeypatch.setattr(sup.signals, "read", lambda: bytes([signal.SIGCHLD, signal.SIGINT, signal.SIGHUP]))
    monkeypatch.setattr(sup, "dispatch_signal", seen.append)
    sup._on_wakeup(None)
    assert seen == [signal.SIGINT, signal.SIGHUP, signal.SIGCHLD]
