"""Command line: argv -> Config -> Supervisor. Every flag comes from config.SETTINGS."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sockact import __version__, config, gcpause
from sockact.config import Config
from sockact.config.sandbox import sandboxed_check_line
from sockact.errors import (
    APP_LOAD_ERROR,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    AppLoadError,
    Interrupted,
    SockactError,
)
from sockact.hooks import Loaded, Server
from sockact.hooks import load as load_hooks
from sockact.logs.access import check_file
from sockact.systemd.activation import Listener, describe_passed, parse_bind

log = logging.getLogger("sockact")

DESCRIPTION = """\
sockact serves a WSGI or ASGI app with a pool of forked worker processes. The supervisor
accepts every connection on sockets it gets from systemd (socket activation) or
binds itself (--bind), and hands each one to the least-loaded worker that is not
stalled. A keep-alive connection idle for park_after goes back to the supervisor,
so idle clients wait there, not in a worker."""

EPILOG = """\
Settings come from, in order, later winning: defaults, the TOML file (--config or
$SOCKACT_CONFIG), SOCKACT_<NAME> environment variables, and these flags. The flags
gunicorn users know (-w, -b, -t, -e, --chdir, --pythonpath...) mean what they mean
there, and "sockact -w 4 app:app" is "sockact run -w 4 app:app".

examples:
  sockact run myproject.wsgi:application --workers 4
  sockact run -w 4 -b 127.0.0.1:8000 -b unix:/run/app.sock app:application
  systemd-socket-activate -l 127.0.0.1:8000 sockact run app:application
  sockact check --config /etc/sockact/sockact.toml
  sockact convert gunicorn.conf.py > sockact.toml

Check the app inside the service's own sandbox (the properties of its unit; add your
drop-in's lines as more -p, e.g. -p StateDirectory=myapp; see docs/deploy.md):
  {sandboxed_check}
""".format(sandboxed_check=sandboxed_check_line(config.PACKAGED_CONFIG, width=86).replace("\n", "\n  "))

_SECTIONS = {
    "app": "application",
    "listeners": "listening (dev mode)",
    "workers": "workers",
    "http": "HTTP",
    "logging": "logging",
    "development": "development",
}
COMMANDS = ("run", "check", "convert", "reload")
_SERVED = ("run", "check")  # the commands that take every setting as a flag
# What run and check take besides the settings: one list for their parsers and for their flags.
_SERVED_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("-c", "--config"), {"metavar": "FILE", "help": "TOML settings file (also $SOCKACT_CONFIG)"}),
    (("--check-config",), {"action": "store_true",
                           "help": "do what 'sockact check' does, then exit (as gunicorn's --check-config)"}),
    (("--print-config",), {"action": "store_true",
                           "help": "print the effective settings as TOML and exit, without importing the app"}),
)
_HELP_FLAGS = ("-h", "--help")  # every parser's, from argparse (add_help)
# First arguments that stay with the top-level parser instead of meaning "run".
_TOP_LEVEL = frozenset({"-h", "--help", "--version"})


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's own, given the terminal's width rather than asking shutil for it: argparse makes a
    formatter for each argument it checks, even when it prints nothing, and shutil's import (with
    bz2, lzma and zlib) costs a cold start more than building the parser."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width)


class _Parser(argparse.ArgumentParser):
    """Each command's parser: argparse's, taking no abbreviated flags."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size() finds it: $COLUMNS, else stdout's terminal, else 80."""
    with contextlib.suppress(KeyError, ValueError):
        if (columns := int(os.environ["COLUMNS"])) > 0:
            return columns
    stdout = sys.__stdout__
    try:
        return (os.get_terminal_size(stdout.fileno()).columns if stdout else 0) or 80
    except (ValueError, OSError):  # stdout closed, or not a terminal
        return 80


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI, generated from config.SETTINGS (the man page reads it too). With ``command``,
    only that command's parser: a start builds no other command's settings (argparse costs a
    cold start a few milliseconds per command)."""
    parser = argparse.ArgumentParser(
        prog="sockact", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=_Formatter, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"sockact {__version__}")
    # No abbreviations: '--worker 4' gets 'did you mean --workers?' (unknown_options), not argparse's
    # "ambiguous option" under a page of usage; and a flag added later never changes what one means.
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    wanted = COMMANDS if command is None else (command,)
    served: list[argparse.ArgumentParser] = []
    if "run" in wanted:
        served.append(sub.add_parser("run", help="serve an app", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=_Formatter))
    if "check" in wanted:
        served.append(_add_check(sub))
    if "convert" in wanted:
        _add_convert(sub)
    if "reload" in wanted:
        _add_reload(sub)
    for p in served:
        p.add_argument("app_arg", nargs="?", metavar="APP",
                       help="the WSGI or ASGI app as module:callable, or module for module:application (same as --app)")
        for flags, kwargs in _SERVED_OPTIONS:
            p.add_argument(*flags, **kwargs)
        _add_settings(p)
    return parser


def _add_check(sub: Any) -> argparse.ArgumentParser:
    check: argparse.ArgumentParser = sub.add_parser(
        "check", help="validate the settings, print them and import the app",
        description="Validate the configuration (file, environment and flags), print the effective "
                    "settings as TOML, then import each app in a child process with the settings "
                    "applied (env, chdir, pythonpath, virtualenv). Exits 2 on a bad setting and 5 when "
                    "an app does not import.", epilog=EPILOG, formatter_class=_Formatter)
    return check


def _add_convert(sub: Any) -> None:
    convert = sub.add_parser(
        "convert", help="print a gunicorn.conf.py as sockact TOML, naming what it cannot carry",
        description="Run a gunicorn settings file as gunicorn does and print it as sockact TOML: each "
                    "setting sockact has under sockact's name, each hook sockact has in a [hooks] table "
                    "that names the function in that file, and, as comments at the top and on stderr, "
                    "each setting it does not carry over and why (docs/from-gunicorn.md). Save it with "
                    "'sockact convert gunicorn.conf.py > sockact.toml', then check it with "
                    "'sockact check -c sockact.toml'.")
    convert.add_argument("gunicorn_conf", metavar="GUNICORN_CONF",
                         help="gunicorn's settings file (Python), or python:MODULE as gunicorn's -c takes it")


def _add_reload(sub: Any) -> None:
    from sockact import reloadctl  # here: only `sockact reload` needs it

    reload = sub.add_parser("reload", help="reload a running supervisor and wait for the outcome",
                            description=reloadctl.DESCRIPTION)
    reloadctl.add_arguments(reload)


def _add_settings(parser: argparse.ArgumentParser) -> None:
    groups = {key: parser.add_argument_group(f"{title} settings") for key, title in _SECTIONS.items()}
    for s in config.SETTINGS:
        if not s.cli:
            continue  # a file key and a variable only
        kwargs: dict[str, Any] = {"dest": s.name, "default": None}
        if s.boolean:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = s.metavar or "VALUE"
            if s.repeatable:
                kwargs["action"] = "append"
        default = s.default if not isinstance(s.default, tuple) else " ".join(s.default)
        if isinstance(default, bool):
            default = str(default).lower()  # as TOML spells it: a file takes no "False"
        kwargs["help"] = f"{s.described} [{s.env}; default: {default if default not in (None, '') else 'unset'}]"
        kwargs["help"] = kwargs["help"].replace("%", "%%")
        groups[s.section].add_argument(*s.flags, **kwargs)


def implicit_run(argv: Sequence[str]) -> list[str]:
    """``sockact -w 4 app:app`` as gunicorn takes it: ``sockact run -w 4 app:app``.

    Only when the first argument cannot be anything else: an option other than --help and
    --version, or an app written 'module:callable'. A bare word stays a (maybe mistyped) command.
    """
    args = list(argv)
    if args and args[0] not in COMMANDS and args[0] not in _TOP_LEVEL and (
            args[0].startswith("-") or ":" in args[0]):
        return ["run", *args]
    return args


def unknown_options(words: Sequence[str], extras: Sequence[str], known: Iterable[str]) -> list[str]:
    """A line for each option of ``extras`` (what argparse did not take from ``words``): for one of
    gunicorn's or uvicorn's flags, what sockact has instead; for a typo, the closest flag. argparse alone says
    "unrecognized arguments" and takes the value after an unknown flag for the app."""
    import difflib

    from sockact.config.fromgunicorn import flag_hint, flag_setting
    from sockact.config.fromuvicorn import hint as uvicorn_hint

    said: dict[str, list[str]] = {}  # what to do -> the flags it answers, one line for them all
    for extra in extras:
        if not extra.startswith("-") or extra == "-":
            continue
        flag, given, value = extra.partition("=")
        if not given and not flag.startswith("--") and len(flag) > 2:
            flag, value = flag[:2], flag[2:]  # -kgevent
        elif not given:
            at = words.index(extra) + 1
            value = words[at] if at < len(words) else ""
        hint = flag_hint(flag, value) or uvicorn_hint(flag, words)
        if hint:
            said.setdefault(hint, []).append(f"{flag} {value}" if flag_setting(flag) == "worker_class" else flag)
        else:
            close = difflib.get_close_matches(flag, [f for f in known if f.startswith("--")], n=1, cutoff=0.8)
            said.setdefault(f"unknown option {flag}" + (f" (did you mean {close[0]}?)" if close else ""), [])
    return [f"{', '.join(flags)}: {hint}" if flags else hint for hint, flags in said.items()]


def flags_of(command: str) -> list[str]:
    """Every flag ``command`` takes, from the lists its parser is built from (argparse keeps its own
    list in private attributes): for an unknown option, the flags it may be a typo of."""
    flags = list(_HELP_FLAGS)
    if command in _SERVED:
        flags += (flag for names, _ in _SERVED_OPTIONS for flag in names)
        for s in config.SETTINGS:
            if s.cli:  # a switch is --flag and --no-flag (BooleanOptionalAction)
                flags += (*s.flags, *(f"--no-{f[2:]}" for f in s.flags if s.boolean and f.startswith("--")))
    elif command == "reload":
        from sockact import reloadctl

        flags += (flag for names, _ in reloadctl.OPTIONS for flag in names)
    return flags


def no_command(words: Sequence[str]) -> str | None:
    """The one line for a command line that names no command, or None: nothing at all, or a bare word
    that is no command (gunicorn's ``gunicorn myproject.wsgi`` serves a module; here it must say run)."""
    if not words:
        return "no command: to serve an app, sockact run MODULE:CALLABLE (sockact --help lists the commands)"
    first = words[0]
    if first in COMMANDS or first.startswith("-"):
        return None
    import difflib

    close = difflib.get_close_matches(first, COMMANDS, n=1, cutoff=0.6)
    if close:
        return f"no command '{first}' (did you mean '{close[0]}'?)"
    return (f"no command '{first}' ({', '.join(COMMANDS)}): to serve it as an app, "
            f"sockact run {' '.join(words)}")


def main(argv: Sequence[str] | None = None) -> int:
    words = implicit_run(sys.argv[1:] if argv is None else argv)
    if (wrong := no_command(words)) is not None:
        print(f"sockact: error: {wrong}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser(words[0] if words and words[0] in COMMANDS else None)
    args, extras = parser.parse_known_args(words)
    if extras:
        lines = unknown_options(words, extras, flags_of(args.command))
        if not lines:  # stray words, no option: argparse's own message
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        for line in lines:
            print(f"sockact: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    if args.command != "run":
        gcpause.resume()  # only a serving start keeps collection paused until its first fork
    if args.command == "reload":
        from sockact import reloadctl

        return reloadctl.main(args.pid, args.config, args.max_wait)
    if args.command == "convert":
        return convert_gunicorn(args.gunicorn_conf)
    cli_values = {s.name: getattr(args, s.name) for s in config.SETTINGS if s.cli}
    if args.app_arg:
        cli_values["app"] = args.app_arg

    checking = args.command == "check" or args.check_config or args.print_config

    def load_config() -> Config:
        """The settings from every source, checked; called at start and again at each reload."""
        cfg = config.build(cli_values, os.environ, args.config)
        if cfg.virtualenv:
            config.check_virtualenv(cfg.virtualenv)  # once here, rather than in every worker
        # Serving, the file is opened here as the workers will open it (not in each worker: one line, exit
        # code 2); checking, as the configuring user, nothing is created.
        check_file(cfg.access_logfile, create=not checking)
        return cfg

    try:
        cfg = load_config()
    except SockactError as exc:
        _print_error(exc)
        if not checking:
            from sockact.supervisor.turnaway import start_failed, turn_away_at_start

            turn_away_at_start([], start_failed(), os.environ)
        return exc.exit_code
    if args.print_config:
        print("\n".join(config.describe(cfg)))
        return EXIT_OK
    if args.command == "check" or args.check_config:
        for warning in config.warnings(cfg, os.environ, os.getcwd(), os.getpid()):
            print(f"sockact: warning: {warning}", file=sys.stderr)
        if cfg.config_file is None and os.path.isfile(config.PACKAGED_CONFIG):
            # `sockact check` after editing the packaged file would check the demo app and pass
            print(f"sockact: warning: no --config: checking the defaults and flags alone, not "
                  f"{config.PACKAGED_CONFIG}, which sockact.service reads; to check that: "
                  f"sockact check --config {config.PACKAGED_CONFIG}", file=sys.stderr)
        if cfg.config_file is not None:  # a drop-in's Environment= the service has and this shell has not
            from sockact.systemd.unitenv import unit_note

            if told := unit_note(cfg.config_file, os.environ):
                print(f"sockact: warning: {told}", file=sys.stderr)
        print("\n".join(config.describe(cfg)))
        if _print_passed_sockets() is None:
            try:  # the names `run` would give its listeners: a mistyped metrics_listener shows here
                cfg.check_names([parse_bind(spec)[0] for spec in cfg.bind])
            except SockactError as exc:  # not an error: systemd may pass a socket of that name
                print(f"sockact: warning: {exc}, as bound by 'bind'; a .socket unit's FileDescriptorName= "
                      "may give that name under systemd", file=sys.stderr)
        return check_apps(cfg)

    def reload_config() -> Config:
        new = load_config()
        _prepare(new)  # a reload applies a changed env, chdir or pythonpath, as a restart would
        return new

    return run(cfg, reload_config)


def _print_error(exc: SockactError) -> None:
    """The error's lines (several when a file has several bad keys), then its traceback if it has one."""
    if exc.traceback:
        print(exc.traceback, file=sys.stderr)
    for line in str(exc).splitlines():
        print(f"sockact: error: {line}", file=sys.stderr)


def _print_passed_sockets() -> list[str] | None:
    """Under systemd, the sockets `run` would serve, in place of the bind addresses; None elsewhere."""
    passed = describe_passed(os.environ, os.getpid())
    if passed is not None:
        print("# sockets from systemd (LISTEN_FDS), served instead of 'bind':")
        print("\n".join(f"#   {line}" for line in passed))
    return passed


def convert_gunicorn(path: str) -> int:
    """``sockact convert``: the TOML on stdout; what is not carried over on stderr too."""
    from sockact.config import fromgunicorn

    try:
        # stdout is the TOML file: what the conf (or what it imports) prints goes with the notes.
        with contextlib.redirect_stdout(sys.stderr):
            names = fromgunicorn.run_file(path)
    except SockactError as exc:
        _print_error(exc)
        return exc.exit_code
    parsers = {s.name: s.parse for s in config.SETTINGS}
    with open(names.get("__file__") or path, encoding="utf-8", errors="replace") as fh:
        computed = fromgunicorn.computed_names(fh.read())
    conversion = fromgunicorn.convert(path, names, parsers, computed)
    print("\n".join(fromgunicorn.lines(conversion, path, config.toml_value)))
    for name, why in conversion.not_carried:
        print(f"sockact: convert: {name} is not carried over: {why}", file=sys.stderr)
    for key, note in conversion.notes.items():
        print(f"sockact: convert: {key} = {config.toml_value(conversion.values[key])}: {note}", file=sys.stderr)
    return EXIT_OK


def app_specs(cfg: Config) -> list[str]:
    """Every app the settings name: the default one and each listener table's own."""
    specs = [cfg.app, *(table["app"] for table in cfg.listeners.values() if "app" in table)]
    return list(dict.fromkeys(specs))


def check_apps(cfg: Config) -> int:
    """Import each app in a child process with the service's settings applied; the exit code says
    whether they all load (5 when one does not), and stderr says exactly what failed."""
    from sockact.apploader import add_virtualenv, load_all
    from sockact.asgi.interface import WSGI, choose, contradiction, one_interface

    sys.stdout.flush()
    sys.stderr.flush()
    # The child says "loaded" on this pipe: an exit code of 0 alone may be an os._exit(0) at import.
    loaded_r, loaded_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: it may chdir, change sys.path and run the app's import-time code
        os.close(loaded_r)
        code = EXIT_FAILURE
        try:
            _prepare(cfg)
            add_virtualenv(cfg.virtualenv)
            load_hooks(cfg.hooks)  # first, as at start
            for name, spec in cfg.hooks.items():
                print(f"# hook {name} {spec}: imports and is callable")
            apps = load_all(app_specs(cfg))
            for spec, app in apps.items():
                kind = choose(_interface_of(cfg, spec), app)
                how = cfg.thread_mode() if kind == WSGI else "on each worker's asyncio loop, many requests at a time"
                print(f"# app {spec}: imports and is callable; served as {kind.upper()}, {how}")
                if wrong := contradiction(_interface_of(cfg, spec), app):
                    print(f"sockact: warning: app {spec}: {wrong}", file=sys.stderr)
                if kind != WSGI and (unused := cfg.threads_unused()):
                    print(f"sockact: warning: app {spec}: {unused}", file=sys.stderr)
            # what a worker refuses (exit 5): its listeners' apps on both interfaces; the listeners are
            # those 'bind' names, as `run` from this shell binds them, and each table's (systemd's sockets),
            # but the metrics listener, which the supervisor answers
            names = dict.fromkeys([*(parse_bind(spec)[0] for spec in cfg.bind), *cfg.listeners])
            listeners = [cfg.listener(name) for name in names if cfg.serves(name)]
            one_interface((lc.name, choose(lc.interface, apps[lc.app])) for lc in listeners)
            os.write(loaded_w, b"1")
            code = EXIT_OK
        except SockactError as exc:
            _print_error(exc)
            code = exc.exit_code
        except KeyboardInterrupt:  # the terminal's Ctrl-C reached this child too: the parent says it
            code = EXIT_INTERRUPTED
        except BaseException as exc:
            print(f"sockact: error: importing the app: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = APP_LOAD_ERROR
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(loaded_w)
    reaped = False  # once it is, its pid may be another process's: never signalled again
    try:
        if not _exits_within(pid, cfg.timeout):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            reaped = True
            print(f"sockact: error: importing the app took longer than timeout ({cfg.timeout:g}s), which would "
                  "kill a worker at start too; killed it", file=sys.stderr)
            return APP_LOAD_ERROR
        _, status = os.waitpid(pid, 0)
        reaped = True
        # Not blocking: a process the app forked at import may hold the pipe open still.
        os.set_blocking(loaded_r, False)
        try:
            said_loaded = os.read(loaded_r, 1) == b"1"
        except BlockingIOError:
            said_loaded = False
    except KeyboardInterrupt:
        if not reaped:  # it had the terminal's Ctrl-C too; one that ignores it ends here
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        print("sockact: error: check interrupted (Ctrl-C): nothing was checked", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        os.close(loaded_r)
    if os.WIFSIGNALED(status):
        print(f"sockact: error: importing the app killed the process ({os.WTERMSIG(status)})", file=sys.stderr)
        return APP_LOAD_ERROR
    code = os.waitstatus_to_exitcode(status)
    if code == EXIT_OK and not said_loaded:
        print("sockact: error: importing the app ended its process (exit code 0) before the app loaded; "
              "look for os._exit() or a fork at import", file=sys.stderr)
        return APP_LOAD_ERROR
    return code


def _exits_within(pid: int, timeout: float) -> bool:
    """Whether child ``pid`` exits within ``timeout`` seconds (0: waits for ever), without reaping it."""
    if not timeout:
        return True
    exited = os.pidfd_open(pid)
    try:
        return bool(select.select([exited], [], [], timeout)[0])
    finally:
        os.close(exited)


def _interface_of(cfg: Config, spec: str) -> str:
    """The interface setting that applies to ``spec``: its listener's own, else the global one."""
    for table in cfg.listeners.values():
        if table.get("app", cfg.app) == spec and "interface" in table:
            return str(table["interface"])
    return cfg.interface


def _prepare(cfg: Config) -> None:
    from sockact.apploader import prepare

    prepare(cfg.chdir, cfg.pythonpath, cfg.env)


def run(cfg: Config, reload_config: Callable[[], Config] | None = None) -> int:
    """Start serving ``cfg`` until stopped; returns the exit code. HUP calls ``reload_config``."""
    from sockact.supervisor.turnaway import start_failed

    taken: list[Listener] = []  # the listeners once taken, for a start that fails after
    try:
        return _serve(cfg, reload_config, taken)
    except SockactError as exc:
        return _start_failed(exc, taken, start_failed())
    except KeyboardInterrupt:
        # Ctrl-C before the supervisor's loop takes SIGINT (a --preload import, a hook, a bind): one
        # line and 130, as check says its own, where Python prints a traceback.
        return _start_failed(Interrupted("start interrupted (Ctrl-C): nothing was served"), taken, start_failed())


def _start_failed(exc: SockactError, taken: Sequence[Listener], response: bytes) -> int:
    """A start that fails once ``run`` has begun: the reason, then each client waiting in a backlog
    answered ``response`` (under socket activation, one left there would start the service again at once)."""
    from sockact.supervisor.turnaway import turn_away_at_start

    if logging.getLogger("sockact").handlers:
        log.error("%s", exc.explained())
    else:  # the error log itself could not be set up
        _print_error(exc)
    turn_away_at_start(taken, response, os.environ)  # after the reason: the log reads in order
    return exc.exit_code


def _serve(cfg: Config, reload_config: Callable[[], Config] | None, taken: list[Listener]) -> int:
    from sockact.apploader import add_virtualenv, load_all
    from sockact.logs.journal import setup_logging
    from sockact.proctitle import supervisor_title
    from sockact.supervisor import Supervisor
    from sockact.supervisor.turnaway import app_failed
    from sockact.systemd.activation import bind_all, from_systemd
    from sockact.systemd.notify import Notifier

    setup_logging(cfg.log_level, cfg.log_target, os.environ, cfg.error_logfile)
    for warning in config.warnings(cfg, os.environ, os.getcwd(), os.getpid()):
        log.warning("%s", warning)
    supervisor_title(os.environ, cfg.app)
    # env, chdir and pythonpath apply here, before any worker forks, so every worker inherits them.
    _prepare(cfg)
    hooks = _load_hooks(cfg)
    hooks.call("on_starting", Server(os.getpid(), cfg))
    stored: list[tuple[int, str]] = []  # connections a previous instance left in systemd's fd store
    listeners = from_systemd(os.environ, stored)
    if listeners is None:
        listeners = bind_all(cfg.bind, cfg.backlog)
    taken += listeners
    cfg.check_names([lst.name for lst in listeners])
    apps = None
    if cfg.preload:
        # Collected as it imports, as before: the garbage of an app's import freed at the end, in
        # one go, would leave holes in pages the workers share, which their allocations then fill.
        gcpause.resume()
        add_virtualenv(cfg.virtualenv)
        try:
            apps = load_all(cfg.apps(lst.name for lst in listeners))
        except AppLoadError as exc:
            # Told as the supervisor's halt tells them when its workers cannot load the app.
            return _start_failed(exc, listeners, app_failed())
    if cfg.reload:
        _watch_for_changes(cfg)
    notifier = Notifier(os.environ, os.getpid())
    log.info("sockact %s: %d workers, listening on %s", __version__, cfg.workers,
             ", ".join(f"{lst.name}={lst.address}" for lst in listeners))
    return Supervisor(cfg, listeners, notifier, apps, reload_config, stored, hooks).run()


def _load_hooks(cfg: Config) -> Loaded:
    """Import the hooks (from the virtualenv too, as the app); AppLoadError when one does not import."""
    from sockact.apploader import add_virtualenv

    if cfg.hooks.items():
        add_virtualenv(cfg.virtualenv)
    return load_hooks(cfg.hooks)


def _watch_for_changes(cfg: Config) -> None:
    """--reload: a thread that sends this process SIGHUP when the app's source files change."""
    from sockact.config import check_virtualenv
    from sockact.supervisor.autoreload import Watcher, project_roots

    search = list(sys.path)
    if cfg.virtualenv:
        search.insert(0, check_virtualenv(cfg.virtualenv))
    extra = [cfg.config_file] if cfg.config_file else []
    Watcher(project_roots(app_specs(cfg), search), extra, os.getpid()).start()
