"""The one list of settings, and the frozen Config built from it.

Every option is declared once in SETTINGS, with its type, default, flag,
environment variable and help. The CLI, the environment (SOCKACT_*), the TOML
file, ``sockact check`` and the man pages all read this list, so they cannot
drift. Sources are merged in this order, later ones winning:
defaults < TOML file < environment < command line.

Nothing here reads the environment at import time, logs, or exits: callers
pass the environment in and catch ConfigError.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .accesslog import GUNICORN_FORMAT, check_format
from .errors import ConfigError

ENV_PREFIX = "SOCKACT_"
DEFAULT_APP = "sockact.apps.demo:app"

_APP_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


# -- value parsers: each takes a TOML value or a string, returns the value or raises ValueError


def _int(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, str):
            value = int(value.strip(), 0)
        if not isinstance(value, int):
            raise ValueError("expected an integer")
        if value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return value

    parse.__doc__ = f"integer >= {minimum}"
    return parse


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number of seconds")
    if isinstance(value, str):
        value = float(value.strip())
    if not isinstance(value, (int, float)):
        raise ValueError("expected a number of seconds")
    if value <= 0:
        raise ValueError("must be > 0 seconds")
    return float(value)


_seconds.__doc__ = "seconds (> 0)"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected true or false")


_bool.__doc__ = "boolean"


def _app(value: Any) -> str:
    if not isinstance(value, str) or not _APP_RE.match(value.strip()):
        raise ValueError("expected 'module:callable', e.g. 'myproject.wsgi:application'")
    return value.strip()


_app.__doc__ = "module:callable"


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return value.strip().lower()

    parse.__doc__ = "|".join(choices)
    return parse


def _binds(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of addresses like '127.0.0.1:8000' or 'unix:/run/app.sock'")
    return tuple(value)


_binds.__doc__ = "address list"


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a path")
    return value


_path.__doc__ = "path"


@dataclass(frozen=True)
class Setting:
    """One option. ``name`` is the TOML key and the Config attribute."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    section: str = "server"
    per_listener: bool = False  # may also be set in a [listeners.NAME] table
    metavar: str = ""
    cli: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def boolean(self) -> bool:
        """A switch: --flag / --no-flag on the command line."""
        return self.parse is _bool

    @property
    def repeatable(self) -> bool:
        """May be given several times on the command line (a list)."""
        return self.parse is _binds

    @property
    def kind(self) -> str:
        return (self.parse.__doc__ or "").strip()


SETTINGS: tuple[Setting, ...] = (
    Setting("app", _app, DEFAULT_APP,
            "The WSGI application to serve, as 'module:callable'. A listener without its own "
            "[listeners.NAME] table serves this one.", section="app", per_listener=True, metavar="MODULE:CALLABLE"),
    Setting("virtualenv", _path, None,
            "A virtualenv whose site-packages are added to the path before the app is imported. "
            "Its Python version must match sockact's.", section="app", metavar="DIR"),
    Setting("preload", _bool, False,
            "Import the app once in the supervisor before forking workers (less memory per worker; "
            "a reload then re-forks but does not re-import).", section="app"),
    Setting("bind", _binds, ("127.0.0.1:8000",),
            "Addresses to listen on when systemd passes no sockets: HOST:PORT, [V6]:PORT or unix:PATH. "
            "Ignored under socket activation.", section="listeners", metavar="ADDR"),
    Setting("backlog", _int(1), 1024,
            "listen() backlog for sockets bound with --bind.", section="listeners", metavar="N"),
    Setting("workers", _int(1), 2,
            "Number of worker processes; each holds many connections and serves `threads` requests at a time.",
            section="workers", metavar="N"),
    Setting("threads", _int(1), 1,
            "App threads per worker; 1 serves one request at a time per worker, as a sync worker.",
            section="workers", metavar="N"),
    Setting("handback_after", _seconds, 0.05,
            "When every app thread of a worker has been in one call this long, its other connections "
            "go back to the supervisor.", section="workers", metavar="SECONDS"),
    Setting("max_requests", _int(0), 0,
            "Recycle a worker after this many requests (0: never).", section="workers", metavar="N"),
    Setting("max_requests_jitter", _int(0), 0,
            "Add a random 0..N to max_requests per worker, so workers do not recycle together.",
            section="workers", metavar="N"),
    Setting("queue_size", _int(1), 1024,
            "Connections held in the supervisor while every worker is busy. When full, sockact stops "
            "accepting and the kernel backlog holds new clients.", section="workers", metavar="N"),
    Setting("timeout", _seconds, 30.0,
            "A worker busy on one request for longer is killed (SIGABRT, then SIGKILL) and replaced; "
            "the watchdog stops while one is overdue.", section="workers", metavar="SECONDS"),
    Setting("graceful_timeout", _seconds, 30.0,
            "On stop or reload, how long in-flight requests may take to finish.", section="workers",
            metavar="SECONDS"),
    Setting("keepalive", _seconds, 75.0,
            "Close a parked keep-alive connection after this many idle seconds.", section="http",
            per_listener=True, metavar="SECONDS"),
    Setting("park_after", _seconds, 0.1,
            "A connection idle at a request boundary this long goes back to the supervisor.",
            section="http", per_listener=True, metavar="SECONDS"),
    Setting("header_timeout", _seconds, 10.0,
            "A request head must arrive within this many seconds (slowloris guard).", section="http",
            per_listener=True, metavar="SECONDS"),
    Setting("limit_request_line", _int(16), 8190,
            "Longest request line in bytes (else 414).", section="http", per_listener=True, metavar="BYTES"),
    Setting("limit_request_fields", _int(1), 100,
            "Most header fields in a request (else 431).", section="http", per_listener=True, metavar="N"),
    Setting("limit_request_field_size", _int(16), 8190,
            "Longest header field, name and value, in bytes (else 431).", section="http", per_listener=True,
            metavar="BYTES"),
    Setting("limit_request_head", _int(256), 65536,
            "Largest request head in total, in bytes (else 431).", section="http", per_listener=True,
            metavar="BYTES"),
    Setting("limit_request_body", _int(0), 100 * 1024 * 1024,
            "Largest request body in bytes (else 413); 0 means no limit.", section="http", per_listener=True,
            metavar="BYTES"),
    Setting("access_log", _bool, True,
            "Log one line per request.", section="logging", per_listener=True),
    Setting("access_logfile", _path, None,
            "Write access lines to this file (opened with O_APPEND, reopened when rotated away), or "
            "'-' for stderr; unset, they go where the other logs go (log_target).",
            section="logging", metavar="PATH"),
    Setting("access_logformat", check_format, GUNICORN_FORMAT,
            "Access line format with gunicorn's atoms (%(h)s client, %(r)s request line, %(s)s status, "
            "%(b)s bytes, %(D)s microseconds, %({header}i)s, ...), or 'json' for one JSON object per line.",
            section="logging", metavar="FORMAT"),
    Setting("error_logfile", _path, None,
            "Write sockact's own log lines to this file, or '-' for stderr; unset, log_target decides.",
            section="logging", metavar="PATH"),
    Setting("log_level", _choice("debug", "info", "warning", "error"), "info",
            "Least severe level logged.", section="logging", metavar="LEVEL"),
    Setting("log_target", _choice("auto", "journal", "stderr"), "auto",
            "Where logs go: 'auto' uses journald when stderr is connected to it, else stderr.",
            section="logging", metavar="TARGET"),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
LISTENER_KEYS: frozenset[str] = frozenset(s.name for s in SETTINGS if s.per_listener)


def _listener(self: Any, name: str) -> Any:
    """The effective settings of the listener called ``name`` (fd name or bind address)."""
    values = {key: getattr(self, key) for key in LISTENER_KEYS}
    values.update(self.listeners.get(name, {}))
    return ListenerConfig(name=name, **values)


# Both classes are generated from SETTINGS, so a setting is declared in exactly one place.
Config = dataclasses.make_dataclass(
    "Config",
    [(s.name, Any, field(default=s.default)) for s in SETTINGS]
    + [
        # per-listener overrides by fd name, e.g. {"api": {"app": "api.wsgi:app", "keepalive": 5.0}}
        ("listeners", Mapping[str, Mapping[str, Any]], field(default_factory=dict)),
        ("config_file", "str | None", field(default=None)),
    ],
    frozen=True,
    namespace={"listener": _listener, "__module__": __name__},
)
Config.__doc__ = "The effective settings: SETTINGS merged from every source."

ListenerConfig = dataclasses.make_dataclass(
    "ListenerConfig",
    [("name", str)] + [(s.name, Any) for s in SETTINGS if s.per_listener],
    frozen=True,
    namespace={"__module__": __name__},
)
ListenerConfig.__doc__ = "Settings of one named listener: the defaults overlaid with its [listeners.NAME] table."


def _parse(setting: Setting, raw: Any, where: str) -> Any:
    try:
        return setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: invalid value {raw!r}: {exc}") from None


def read_toml(path: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Read a config file: (top-level values, {listener name: values}). Raises ConfigError."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except PermissionError:
        raise ConfigError(f"config file {path}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    listeners: dict[str, dict[str, Any]] = {}
    for key, raw in data.items():
        if key == "listeners":
            if not isinstance(raw, dict):
                raise ConfigError(f"{path}: 'listeners' must be a table of [listeners.NAME] tables")
            for name, table in raw.items():
                listeners[name] = _read_listener(path, name, table)
            continue
        setting = BY_NAME.get(key)
        if setting is None:
            raise ConfigError(f"{path}: unknown key '{key}'{_suggest(key)}")
        values[key] = _parse(setting, raw, f"{path}: key '{key}'")
    return values, listeners


def _read_listener(path: str, name: str, table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: 'listeners.{name}' must be a table")
    out = {}
    for key, raw in table.items():
        if key not in LISTENER_KEYS:
            allowed = ", ".join(sorted(LISTENER_KEYS))
            raise ConfigError(f"{path}: unknown key 'listeners.{name}.{key}' (allowed: {allowed})")
        out[key] = _parse(BY_NAME[key], raw, f"{path}: key 'listeners.{name}.{key}'")
    return out


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Values from SOCKACT_* variables. Unknown SOCKACT_ variables are errors, so typos show."""
    values = {}
    by_env = {s.env: s for s in SETTINGS}
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX) or var in _ENV_NOT_SETTINGS:
            continue
        setting = by_env.get(var)
        if setting is None:
            raise ConfigError(f"environment: unknown variable {var}{_suggest(var[len(ENV_PREFIX):].lower())}")
        values[setting.name] = _parse(setting, raw, f"environment: {var}")
    return values


# SOCKACT_CONFIG names the file; it is not itself a setting.
_ENV_NOT_SETTINGS = frozenset({ENV_PREFIX + "CONFIG"})


def _suggest(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key.lower(), list(BY_NAME), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def build(cli_values: Mapping[str, Any], environ: Mapping[str, str], config_file: str | None) -> Config:
    """Merge defaults < TOML < environment < CLI into a Config. Raises ConfigError."""
    values: dict[str, Any] = {}
    listeners: dict[str, dict[str, Any]] = {}
    path = config_file or environ.get(ENV_PREFIX + "CONFIG") or None
    if path:
        values, listeners = read_toml(path)
    values.update(read_env(environ))
    for key, raw in cli_values.items():
        if raw is not None:
            values[key] = _parse(BY_NAME[key], raw, f"option {BY_NAME[key].flag}")
    return Config(**values, listeners=listeners, config_file=path)


def describe(config: Config) -> Iterable[str]:
    """The effective settings as TOML lines, for ``sockact check``."""
    yield f"# effective settings (file: {config.config_file or 'none'})"
    for s in SETTINGS:
        value = getattr(config, s.name)
        if value is None:
            yield f"# {s.name} is not set"
        else:
            yield f"{s.name} = {_toml_value(value)}"
    for name, table in sorted(config.listeners.items()):
        yield ""
        yield f"[listeners.{_toml_key(name)}]"
        for key, value in sorted(table.items()):
            yield f"{key} = {_toml_value(value)}"


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _toml_value(name)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def check_virtualenv(path: str) -> str:
    """The site-packages directory of a virtualenv, checked against this interpreter's version."""
    cfg = os.path.join(path, "pyvenv.cfg")
    if not os.path.isfile(cfg):
        raise ConfigError(f"virtualenv {path}: no pyvenv.cfg there; point 'virtualenv' at the venv's root")
    want = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = os.path.join(path, "lib", want, "site-packages")
    if not os.path.isdir(site):
        found = sorted(d for d in os.listdir(os.path.join(path, "lib")) if d.startswith("python")) \
            if os.path.isdir(os.path.join(path, "lib")) else []
        raise ConfigError(
            f"virtualenv {path}: built for {', '.join(found) or 'another Python'}, but sockact runs on "
            f"{want}; recreate it with {sys.executable}")
    return site
