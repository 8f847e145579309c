"""`sockact reload`: the verdict on each state of the wait, its bound, and the command against this
very process standing in for a supervisor (its SIGHUP handler publishes an outcome as one does)."""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Iterator

import pytest

from sockact import cli, reloadctl
from sockact.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from sockact.reloadctl import Verdict, judge
from sockact.systemd.notify import Notifier, ReloadOutcome

PID = 4242


def test_a_later_outcome_of_this_process_answers_the_reload():
    assert judge(PID, 3, ReloadOutcome(4, PID, True), alive=True, waited=0.1, bound=60) == Verdict(EXIT_OK, "")
    failed = judge(PID, 3, ReloadOutcome(4, PID, False, "key 'workers': expected an integer"), True, 0.1, 60)
    assert failed is not None and failed.exit_code == EXIT_FAILURE
    assert failed.message == ("reload failed: key 'workers': expected an integer; "
                              "the running workers keep serving")
    # what the supervisor says it keeps, as the supervisor's outcomes do, is told in place of the guess
    reason = "the new code does not load (worker exit code 5: app 'app:app': ...)"
    failed = judge(PID, 3, ReloadOutcome(4, PID, False, reason, "generation 1"), True, 0.1, 60)
    assert failed is not None and failed.message == f"reload failed: {reason}; keeping generation 1"
    # the text of a reason decides nothing: one that happens to say "; keeping " gets the usual ending
    odd = "key 'x'; keeping is not a setting"
    failed = judge(PID, 3, ReloadOutcome(4, PID, False, odd, ""), True, 0.1, 60)
    assert failed is not None and failed.message == f"reload failed: {odd}; the running workers keep serving"
    # but a supervisor older than the field said what it keeps in its reason, which is told as it is: not twice
    older = "key 'workers': expected an integer; keeping the running settings and workers"
    failed = judge(PID, 3, ReloadOutcome.from_text(f'{{"seq": 4, "pid": {PID}, "ok": false, "reason": "{older}"}}'),
                   True, 0.1, 60)
    assert failed is not None and failed.message == f"reload failed: {older}"


@pytest.mark.parametrize("outcome", [
    None,  # nothing published yet
    ReloadOutcome(3, PID, False, "the reload before"),  # the outcome that was there before the SIGHUP
    ReloadOutcome(9, PID + 1, True),  # left by another process (a supervisor before a restart)
])
def test_anything_else_keeps_waiting(outcome):
    assert judge(PID, 3, outcome, alive=True, waited=1.0, bound=60) is None


def test_a_command_that_left_a_request_waits_for_its_own_answer_not_another_reloads():
    # Another reload that failed at once while this one runs, published for all and to its own requester:
    others = ReloadOutcome(4, PID, False, "key 'workers': expected an integer", answers=(777,))
    assert judge(PID, 3, others, alive=True, waited=1.0, bound=60, own=None, requested=True) is None
    own = ReloadOutcome(5, PID, True, answers=(778,))
    assert judge(PID, 3, others, True, 1.0, 60, own=own, requested=True) == Verdict(EXIT_OK, "")
    # A command that could leave no request takes the shared outcome, as from an older supervisor.
    assert judge(PID, 3, others, True, 1.0, 60, requested=False) is not None


def test_an_answer_that_came_just_before_the_end_still_counts():
    assert judge(PID, 0, ReloadOutcome(1, PID, True), alive=False, waited=99, bound=60) == Verdict(EXIT_OK, "")


def test_a_supervisor_that_exits_fails_the_reload():
    verdict = judge(PID, 0, None, alive=False, waited=0.5, bound=60)
    assert verdict == Verdict(EXIT_FAILURE, f"reload failed: process {PID} exited before the reload finished")


def test_the_wait_is_bounded_and_says_what_it_means():
    assert judge(PID, 0, None, alive=True, waited=59.9, bound=60) is None
    verdict = judge(PID, 0, None, alive=True, waited=60, bound=60)
    assert verdict is not None and verdict.exit_code == EXIT_FAILURE
    assert "within 60s" in verdict.message and "old ones serve" in verdict.message


def test_the_bound_is_timeout_plus_graceful_timeout_of_the_new_settings(tmp_path):
    assert reloadctl.wait_bound({}, None) == 60.0  # the defaults: 30 + 30
    toml = tmp_path / "sockact.toml"
    toml.write_text("timeout = 5\ngraceful_timeout = 7\n")
    assert reloadctl.wait_bound({}, str(toml)) == 12.0
    assert reloadctl.wait_bound({"SOCKACT_TIMEOUT": "20"}, str(toml)) == 27.0
    toml.write_text("timeout = 'soon'\n")
    assert reloadctl.wait_bound({}, str(toml)) == 60.0  # the supervisor fails that reload at once


@pytest.mark.parametrize("pid", ["0", "1", "-1", "x"])
def test_a_pid_that_would_signal_others_is_refused(pid, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["reload", "--pid", pid])
    assert exit_info.value.code == EXIT_USAGE
    error = capsys.readouterr().err
    assert "argument --pid: not a " in error and "_supervisor_pid" not in error, error


def test_without_a_runtime_directory_it_says_why_and_signals_nobody():
    err = io.StringIO()
    assert reloadctl.main(os.getpid(), environ={}, err=err) == EXIT_USAGE
    assert "RUNTIME_DIRECTORY is not set" in err.getvalue()


# -- the command against a stand-in supervisor: this process, whose SIGHUP handler publishes


def stand_in(pid: int) -> str:
    """This process's command line as a supervisor's title, its parent's another's."""
    return "sockact: supervisor [test]" if pid == os.getpid() else "pytest"


@pytest.fixture
def supervisor(tmp_path) -> Iterator[tuple[dict[str, str], list[tuple[bool, str] | tuple[bool, str, str]]]]:
    """(environ, outcomes): each SIGHUP to this process publishes the next of ``outcomes``."""
    environ = {"RUNTIME_DIRECTORY": str(tmp_path)}
    notifier = Notifier(environ, os.getpid())
    outcomes: list[tuple[bool, str] | tuple[bool, str, str]] = []

    def on_hup(signum: int, frame: object) -> None:
        if outcomes:  # as the supervisor does: the requests waiting at the HUP are this reload's
            notifier.reload_finished(*outcomes.pop(0), answers=notifier.claim_reload_requests())

    previous = signal.signal(signal.SIGHUP, on_hup)
    try:
        yield environ, outcomes
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_reload_succeeds_quietly(supervisor):
    environ, outcomes = supervisor
    outcomes += [(True, ""), (True, "")]
    for _ in range(2):  # the second reload is answered by the second outcome, not the first
        err = io.StringIO()
        assert reloadctl.main(os.getpid(), max_wait=10, environ=environ, err=err, command=stand_in) == EXIT_OK
        assert err.getvalue() == ""


@pytest.mark.parametrize(("outcome", "said"), [
    ((False, "/etc/sockact/sockact.toml: key 'workers': expected an integer"),
     "/etc/sockact/sockact.toml: key 'workers': expected an integer; the running workers keep serving"),
    # what the supervisor keeps, as it published it
    ((False, "the new code does not load (worker exit code 5: app 'app:app': ...)", "generation 1"),
     "the new code does not load (worker exit code 5: app 'app:app': ...); keeping generation 1"),
], ids=["kept-unsaid", "kept-said"])
def test_a_failed_reload_exits_1_with_the_reason(supervisor, outcome, said):
    environ, outcomes = supervisor
    outcomes.append(outcome)
    err = io.StringIO()
    assert reloadctl.main(os.getpid(), max_wait=10, environ=environ, err=err, command=stand_in) == EXIT_FAILURE
    assert err.getvalue() == f"sockact: reload failed: {said}\n"


def test_no_answer_ends_at_the_bound(supervisor):
    environ, _ = supervisor  # no outcome queued: the stand-in never answers
    now = [0.0]
    err = io.StringIO()
    code = reloadctl.main(os.getpid(), max_wait=2, environ=environ, err=err, command=stand_in,
                          clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert code == EXIT_FAILURE and "within 2s" in err.getvalue()
    assert now[0] >= 2


@pytest.mark.parametrize(("command", "parent_command", "said"), [
    ("sleep 60", "bash", "process 42 is not sockact (it runs 'sleep 60'); nothing was sent: give the supervisor's"),
    ("sockact: worker 1 [app]", "sockact: supervisor [app]", "process 42 is a worker of sockact, not its supervisor; "
                                                            "nothing was sent: sockact reload --pid 7"),
    # without setproctitle a worker runs its supervisor's command line
    ("python3 /usr/bin/sockact run", "python3 /usr/bin/sockact run", "process 42 is a worker of sockact"),
    ("python3 /usr/bin/sockact run", "/usr/lib/systemd/systemd", None),
    ("sockact: supervisor [sockact.service]", "/sbin/init", None),
    (None, None, None),  # /proc would not say: sent, as before
])
def test_a_pid_that_is_no_supervisor_is_told_apart(command, parent_command, said):
    refusal = reloadctl.not_a_supervisor(42, command, 7, parent_command)
    assert refusal == said if said is None else refusal.startswith(said), refusal
