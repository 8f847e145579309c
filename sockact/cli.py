"""Command line: argv -> Config -> Supervisor. Every flag comes from config.SETTINGS."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__, config, reloadctl
from .accesslog import check_file
from .errors import EXIT_OK, SockactError

log = logging.getLogger("sockact")

DESCRIPTION = """\
sockact serves a WSGI app with a pool of forked worker processes. The supervisor
accepts every connection on sockets it gets from systemd (socket activation) or
binds itself (--bind), and hands each one to an idle worker. Idle keep-alive
connections wait in the supervisor, never in a worker."""

EPILOG = """\
Settings come from, in order, later winning: defaults, the TOML file (--config or
$SOCKACT_CONFIG), SOCKACT_<NAME> environment variables, and these flags.

examples:
  sockact run myproject.wsgi:application --workers 4
  sockact run --bind 127.0.0.1:8000 --bind unix:/run/app.sock app:application
  systemd-socket-activate -l 127.0.0.1:8000 sockact run app:application
  sockact check --config /etc/sockact/sockact.toml
"""

_SECTIONS = {
    "app": "application",
    "listeners": "listening (dev mode)",
    "workers": "workers",
    "http": "HTTP",
    "logging": "logging",
}


def build_parser() -> argparse.ArgumentParser:
    """The whole CLI, generated from config.SETTINGS (the man page reads it too)."""
    parser = argparse.ArgumentParser(
        prog="sockact", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"sockact {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    run = sub.add_parser("run", help="serve an app", description=DESCRIPTION, epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    check = sub.add_parser("check", help="validate the settings and print the effective ones",
                           description="Validate the configuration (file, environment and flags) and "
                                       "print the effective settings as TOML. Exits 2 on an error.")
    reload = sub.add_parser("reload", help="reload a running supervisor and wait for the outcome",
                            description=reloadctl.DESCRIPTION)
    reloadctl.add_arguments(reload)
    for p in (run, check):
        p.add_argument("app_arg", nargs="?", metavar="APP",
                       help="the WSGI app as module:callable (same as --app)")
        p.add_argument("-c", "--config", metavar="FILE", help="TOML settings file (also $SOCKACT_CONFIG)")
        _add_settings(p)
    return parser


def _add_settings(parser: argparse.ArgumentParser) -> None:
    groups = {key: parser.add_argument_group(f"{title} settings") for key, title in _SECTIONS.items()}
    for s in config.SETTINGS:
        kwargs: dict[str, Any] = {"dest": s.name, "default": None}
        if s.boolean:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = s.metavar or "VALUE"
            if s.repeatable:
                kwargs["action"] = "append"
        default = s.default if not isinstance(s.default, tuple) else " ".join(s.default)
        kwargs["help"] = f"{s.help} [{s.env}; default: {default if default is not None else 'unset'}]"
        kwargs["help"] = kwargs["help"].replace("%", "%%")
        groups[s.section].add_argument(s.flag, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "reload":
        return reloadctl.main(args.pid, args.config, args.max_wait)
    cli_values = {s.name: getattr(args, s.name) for s in config.SETTINGS}
    if args.app_arg:
        cli_values["app"] = args.app_arg

    def load_config() -> Any:
        """The settings from every source, checked; called at start and again at each reload."""
        cfg = config.build(cli_values, os.environ, args.config)
        if cfg.virtualenv:
            config.check_virtualenv(cfg.virtualenv)  # once here, rather than in every worker
        check_file(cfg.access_logfile)
        return cfg

    try:
        cfg = load_config()
    except SockactError as exc:
        print(f"sockact: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.command == "check":
        print("\n".join(config.describe(cfg)))
        return EXIT_OK
    try:
        return run(cfg, load_config)
    except SockactError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK


def run(cfg: Any, reload_config: Callable[[], Any] | None = None) -> int:
    """Start serving ``cfg`` until stopped; returns the exit code. HUP calls ``reload_config``."""
    from .activation import bind_all, from_systemd
    from .apploader import add_virtualenv, load_all
    from .journal import setup_logging
    from .notify import Notifier
    from .supervisor import Supervisor

    setup_logging(cfg.log_level, cfg.log_target, os.environ, cfg.error_logfile)
    # Like `python -m`, import the app from the working directory first.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    listeners = from_systemd(os.environ)
    if listeners is None:
        listeners = bind_all(cfg.bind, cfg.backlog)
    apps = None
    if cfg.preload:
        add_virtualenv(cfg.virtualenv)
        apps = load_all(cfg.listener(lst.name).app for lst in listeners)
    notifier = Notifier(os.environ, os.getpid())
    log.info("sockact %s: %d workers, listening on %s", __version__, cfg.workers,
             ", ".join(f"{lst.name}={lst.address}" for lst in listeners))
    return Supervisor(cfg, listeners, notifier, apps, reload_config).run()
