"""The command line: gunicorn's flags under their names, all from the one settings list."""

from __future__ import annotations

import re

import pytest

from sockact import cli, config


def parse(*argv: str):
    return cli.build_parser().parse_args(cli.implicit_run(list(argv)))


def test_a_gunicorn_command_line():
    args = parse("run", "-w", "4", "-b", "127.0.0.1:8001", "-b", "unix:/run/a.sock", "-t", "0",
                 "--keep-alive", "5", "-e", "A=1", "-e", "B=2", "--chdir", "/srv/app", "--pythonpath", "/x,/y",
                 "--threads", "2", "--max-requests", "100", "--max-requests-jitter", "10", "--preload",
                 "--graceful-timeout", "5", "--log-level", "debug", "app:app")
    assert args.app_arg == "app:app"  # not the 4 after -w
    assert (args.workers, args.bind, args.timeout, args.keepalive) == ("4", ["127.0.0.1:8001", "unix:/run/a.sock"],
                                                                      "0", "5")
    assert (args.env, args.chdir, args.pythonpath, args.threads) == (["A=1", "B=2"], "/srv/app", "/x,/y", "2")
    assert args.preload is True and args.log_level == "debug"
    cfg = config.build({s.name: getattr(args, s.name) for s in config.SETTINGS if s.cli}, {}, None)
    assert cfg.workers == 4 and cfg.bind == ("127.0.0.1:8001", "unix:/run/a.sock") and cfg.timeout == 0


@pytest.mark.parametrize(("argv", "expected"), [
    (["-w", "4", "app:app"], ["run", "-w", "4", "app:app"]),
    (["app:app"], ["run", "app:app"]),
    (["check", "app"], ["check", "app"]),
    (["--version"], ["--version"]),
    (["--help"], ["--help"]),
    (["chek"], ["chek"]),  # a mistyped command stays one, and argparse says so
    ([], []),
])
def test_run_is_implied_only_when_unambiguous(argv, expected):
    assert cli.implicit_run(argv) == expected


def test_every_setting_and_alias_is_a_flag_of_run_and_check():
    parser = cli.build_parser()
    for command in ("run", "check"):
        sub = next(a for a in parser._actions if a.dest == "command").choices[command]
        flags = {opt for action in sub._actions for opt in action.option_strings}
        for s in config.SETTINGS:
            # a setting with no flag (the [hooks] table) is a file key and a variable only
            assert set(s.flags) <= flags if s.cli else s.flag not in flags, (command, s.name)
        assert {"--check-config", "--print-config", "--config"} <= flags


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_the_flags_an_unknown_option_is_matched_against_are_the_ones_its_command_takes(command):
    """flags_of builds them from sockact's own lists; argparse's (private) list of them must agree."""
    sub = next(a for a in cli.build_parser(command)._actions if a.dest == "command").choices[command]
    assert sorted(cli.flags_of(command)) == sorted(sub._option_string_actions)


@pytest.mark.parametrize(("argv", "line"), [
    (["run", "--no-preloda", "app:app"], "unknown option --no-preloda (did you mean --no-preload?)"),
    (["check", "--print-confg"], "unknown option --print-confg (did you mean --print-config?)"),
    (["reload", "--pid", "5", "--max-wiat", "3"], "unknown option --max-wiat (did you mean --max-wait?)"),
    (["reload", "--pid", "5", "--wokers", "3"], "unknown option --wokers"),  # a setting: not reload's
])
def test_a_mistyped_flag_is_matched_against_its_own_commands_flags(capsys, argv, line):
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == f"sockact: error: {line}\n"


def test_print_config(capsys):
    assert cli.main(["run", "-w", "3", "--print-config", "myproject.wsgi"]) == 0
    out = capsys.readouterr().out
    assert "workers = 3" in out and 'app = "myproject.wsgi:application"' in out


@pytest.mark.parametrize(("argv", "lines"), [
    (["run", "-k", "uvicorn.workers.UvicornWorker", "-b", "127.0.0.1:8000", "main:app"],
     ["-k uvicorn.workers.UvicornWorker: sockact needs no worker class for an ASGI app: drop it; an async app is "
      "served as ASGI (--interface auto, the default; --interface asgi to insist)"]),
    (["-w", "4", "--worker-class=gthread", "--threads", "4", "app:app"],
     ["--worker-class gthread: drop it: sockact's workers take --threads N as gthread's do (and --max-threads "
      "to grow)"]),
    (["run", "-kgevent", "app:app"],
     ["-k gevent: sockact has one worker model: forked workers with app threads for WSGI (--threads, "
      "--max-threads), an asyncio loop for ASGI"]),
    (["run", "-D", "-p", "/run/app.pid", "app:app"],
     ["-D: gunicorn's daemon setting has no sockact counterpart: systemd runs sockact",
      "-p: gunicorn's pidfile setting has no sockact counterpart: systemd knows the main PID"]),
    (["check", "--asgi-lifespan", "on", "app:app"], ["--asgi-lifespan: sockact's flag is --lifespan"]),
    (["run", "--wokers", "4", "app:app"], ["unknown option --wokers (did you mean --workers?)"]),
    # uvicorn's habits: one -b address for --host and --port, one line for flags with one answer
    (["main:app", "--host", "0.0.0.0", "--port", "9000", "--workers", "4"],
     ["--host, --port: sockact binds host and port together: -b 0.0.0.0:9000 (under systemd, ListenStream= of "
      "the .socket unit)"]),
    (["main:app", "--port=9000", "--ssl-keyfile", "k.pem", "--ssl-certfile", "c.pem"],
     ["--port: sockact binds host and port together: -b 127.0.0.1:9000 (under systemd, ListenStream= of the "
      ".socket unit)",
      "--ssl-keyfile, --ssl-certfile: no TLS in sockact: terminate it in a proxy in front of the socket"]),
    (["main:app", "--host", "::"], ["--host: sockact binds host and port together: -b [::]:8000 (under systemd, "
                                    "ListenStream= of the .socket unit)"]),
    (["run", "--hots", "x", "app:app"], ["unknown option --hots"]),  # no far-fetched guess
])
def test_an_option_sockact_does_not_take_is_one_line_naming_it_and_what_to_write(capsys, argv, lines):
    """argparse alone says 'unrecognized arguments: -k main:app', the worker class taken for the app."""
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"sockact: error: {line}" for line in lines] and captured.out == ""


def test_every_flag_of_gunicorn_that_sockact_lacks_has_its_hint():
    gunicorn_config = pytest.importorskip("gunicorn.config")
    from sockact.config.fromgunicorn import flag_hint, flag_setting

    sub = next(a for a in cli.build_parser()._actions if a.dest == "command").choices["run"]
    ours = set(sub._option_string_actions)
    for s in gunicorn_config.KNOWN_SETTINGS:
        for flag in s.cli or ():
            if flag not in ours:
                assert flag_setting(flag) == s.name and flag_hint(flag, "x"), flag



def test_gunicorns_websocket_message_size_is_ws_max_size():
    # the same setting (16 MiB, 1009 past it): convert carries it, and the flag names sockact's
    from sockact.config import fromgunicorn

    parsers = {s.name: s.parse for s in config.SETTINGS}
    carried = fromgunicorn.convert("gunicorn.conf.py", {"websocket_max_message_size": 1 << 20}, parsers)
    assert carried.values == {"ws_max_size": 1 << 20} and carried.not_carried == []
    assert fromgunicorn.flag_hint("--websocket-max-message-size", "1") == "sockact's flag is --ws-max-size"
    # gunicorn's 0 is no limit, which sockact does not have: named, not carried
    unlimited = fromgunicorn.convert("gunicorn.conf.py", {"websocket_max_message_size": 0}, parsers)
    assert unlimited.values == {} and [name for name, _ in unlimited.not_carried] == ["websocket_max_message_size"]

def test_every_flag_of_uvicorn_that_sockact_lacks_has_its_hint():
    pytest.importorskip("uvicorn")
    import importlib

    from sockact.config import fromuvicorn
    from sockact.config.fromgunicorn import flag_hint

    command = vars(importlib.import_module("uvicorn.main"))["main"]  # the click command (the package
    # exports a function of that name too)
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command").choices["run"]
    ours = {*sub._option_string_actions, "--version"}  # --version is the top level's
    for param in command.params:
        for flag in (*param.opts, *param.secondary_opts):
            if flag.startswith("-") and flag not in ours:
                assert fromuvicorn.hint(flag, []) or flag_hint(flag, ""), flag  # --log-config is both's


def test_check_without_config_where_the_package_has_one_says_it_checks_the_defaults(capsys, monkeypatch, tmp_path):
    """After editing /etc/sockact/sockact.toml, `sockact check` alone would pass on the demo app."""
    packaged = tmp_path / "sockact.toml"
    packaged.write_text('app = "myproject.wsgi:application"\n')
    monkeypatch.setattr(config, "PACKAGED_CONFIG", str(packaged))
    monkeypatch.delenv("SOCKACT_CONFIG", raising=False)
    assert cli.main(["check", "--print-config"]) == 0  # printing the settings alone: no check, no warning
    assert capsys.readouterr().err == ""
    assert cli.main(["check", "sockact.apps.hello:app"]) == 0
    assert (f"sockact: warning: no --config: checking the defaults and flags alone, not {packaged}, which "
            f"sockact.service reads; to check that: sockact check --config {packaged}") in capsys.readouterr().err
    assert cli.main(["check", "--config", str(packaged), "--print-config"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_help_gives_each_default_as_the_file_and_the_environment_take_it(tmp_path):
    # an operator copies "default: ..." into sockact.toml: TOML spells a boolean true or false
    run = next(a for a in cli.build_parser()._actions if a.dest == "command").choices["run"]
    text = " ".join(run.format_help().split())
    for s in config.SETTINGS:
        if s.cli and isinstance(s.default, bool):
            shown = re.search(rf"\[{s.env}; default: (\S+)\]", text)
            assert shown, s.name
            (tmp_path / "s.toml").write_text(f"{s.name} = {shown.group(1)}\n")
            assert config.read_toml(str(tmp_path / "s.toml"))[0] == {s.name: s.default}, s.name
