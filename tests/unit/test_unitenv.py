"""What sockact.service's environment sets, read from `systemctl show` for `sockact check`: no systemd."""

from __future__ import annotations

import subprocess

from sockact.systemd.unitenv import note, parse_show, runs_file, unit_note

SHOWN = """\
LoadState=loaded
ExecStart={ path=/usr/bin/sockact ; argv[]=/usr/bin/sockact run --config /etc/sockact/sockact.toml ; \
ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }
Environment=PYTHONDONTWRITEBYTECODE=1 SOCKACT_WORKERS=8 "SOCKACT_ENV=A=1 B=2"
"""


def test_the_units_environment_and_command_line_are_read_from_systemctl_show():
    env, argv = parse_show(SHOWN)  # type: ignore[misc]
    assert env == {"PYTHONDONTWRITEBYTECODE": "1", "SOCKACT_WORKERS": "8", "SOCKACT_ENV": "A=1 B=2"}
    assert argv == ["/usr/bin/sockact", "run", "--config", "/etc/sockact/sockact.toml"]
    assert parse_show("LoadState=not-found\nEnvironment=\nExecStart=\n") is None  # no such unit


def test_the_unit_counts_only_when_it_runs_the_file_being_checked(tmp_path):
    cfg = tmp_path / "s.toml"
    assert runs_file(["sockact", "run", "--config", str(cfg)], str(cfg))
    assert runs_file(["sockact", "run", f"--config={cfg}"], str(cfg))
    assert not runs_file(["sockact", "run", "--config", "/etc/sockact/sockact.toml"], str(cfg))
    assert not runs_file(["sockact", "run"], str(cfg))


def test_one_line_names_what_the_unit_sets_otherwise_than_the_shell():
    unit = {"PYTHONDONTWRITEBYTECODE": "1", "SOCKACT_WORKERS": "8", "SOCKACT_TIMEOUT": "60"}
    told = note(unit, {"SOCKACT_TIMEOUT": "60"})
    assert told.startswith("sockact.service sets SOCKACT_WORKERS=8 in its environment")
    assert "TIMEOUT" not in told and "PYTHON" not in told
    assert note(unit, {"SOCKACT_TIMEOUT": "60", "SOCKACT_WORKERS": "8"}) == ""


def test_no_systemd_or_no_answer_says_nothing():
    def failing(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess([], 1, "", "System has not been booted with systemd as init system")

    def hanging(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired("systemctl", 1.0)

    def absent(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError("systemctl")

    for run in (failing, hanging, absent):
        assert unit_note("/etc/sockact/sockact.toml", {}, run) == ""
