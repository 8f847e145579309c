"""Where settings come from, and what is checked once they are together.

The sources merge in this order, later ones winning: defaults < TOML file < environment (SOCKACT_*) <
command line. Every bad key of a file is named at once, each on a line of its own; a setting that is
valid alone but not with another is refused naming both.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sockact.config.sandbox import explain_missing
from sockact.config.settings import BY_NAME, DEFAULT_APP, ENV_PREFIX, LISTENER_KEYS, SETTINGS, Config, Setting
from sockact.errors import ConfigError
from sockact.hooks import Hooks


def _parse(setting: Setting, raw: Any, where: str) -> Any:
    try:
        return setting.parse(raw)
    except ValueError as exc:
        # A repeated flag's values come as a list: shown as typed, not as a Python list.
        shown = ", ".join(map(repr, raw)) if where.startswith("option ") and isinstance(raw, list) else repr(raw)
        raise ConfigError(f"{where}: invalid value {shown}: {exc}") from None


def read_toml(path: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Read a config file: (top-level values, {listener name: values}). Raises ConfigError, one line
    per bad key, naming every bad key of the file at once."""
    if path.endswith(".py") or path.startswith("python:"):  # a gunicorn.conf.py, or gunicorn's python:MODULE
        raise ConfigError(f"config file {path}: is Python, as gunicorn's is; sockact reads TOML: run "
                          f"'sockact convert {path} > sockact.toml', then pass -c sockact.toml")
    import tomllib  # here: a start without a config file does without it

    try:
        with open(path, "rb") as fh:
            text = fh.read().decode()
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except PermissionError:
        raise ConfigError(f"config file {path}: permission denied") from None
    except OSError as exc:  # a directory in its place, an I/O error: at a reload too, never a crash
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8; an editor may save Latin-1 (a comment's 'café')
        line = exc.object[:exc.start].count(b"\n") + 1
        raise ConfigError(f"config file {path}: not valid TOML: line {line} is not UTF-8 (byte "
                          f"0x{exc.object[exc.start]:02x}); save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {_syntax_error(text, str(exc))}") from None
    values: dict[str, Any] = {}
    listeners: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    for key, raw in data.items():
        if key == "listeners":
            if not isinstance(raw, dict):
                errors.append(f"{path}: 'listeners' must be a table of [listeners.NAME] tables")
                continue
            for name, table in raw.items():
                listeners[name] = _read_listener(path, name, table, errors)
            continue
        setting = BY_NAME.get(key)
        if setting is None:
            errors.append(f"{path}: unknown key '{key}'{_suggest(key)}")
            continue
        with _collect(errors):
            values[key] = _parse(setting, raw, f"{path}: key '{key}'")
    if errors:
        raise ConfigError("\n".join(errors))
    return values, listeners


# tomllib's messages end with where: "Cannot overwrite a value (at line 4, column 12)".
_AT_LINE = re.compile(r"\s*\(at line (\d+), column \d+\)$")
_KEY = re.compile(r"\s*([A-Za-z0-9_.-]+)")
_VALUE = re.compile(r"[^=]*=\s*(.*?)\s*(?:#.*)?$")
_NUMBER = re.compile(r"[0-9][0-9_.]*(?=[A-Za-z])")  # the number before a unit, as in 30s
_BARE = re.compile(r"[+-]?[0-9][0-9_.eE+-]*|true|false")  # what TOML writes without quotes


def _syntax_error(text: str, message: str) -> str:
    """tomllib's message with the line's key and what to write: a key set twice names the line that set it
    first, and a string or a boolean written as in Python or gunicorn's file says how TOML writes it."""
    at = _AT_LINE.search(message)
    lines = text.splitlines()
    if at is None or int(at.group(1)) > len(lines):
        return f"not valid TOML: {message}"
    number, what = int(at.group(1)), message[:at.start()]
    where = f"not valid TOML at line {number}"
    key = _KEY.match(lines[number - 1])
    if key is None or lines[number - 1].lstrip().startswith("["):
        return f"{where}: {what}"
    name = key.group(1)
    if what == "Cannot overwrite a value":
        for earlier in range(number - 2, -1, -1):  # back to the table's header: the same key in another is no clash
            if lines[earlier].lstrip().startswith("["):
                break
            if (other := _KEY.match(lines[earlier])) and other.group(1) == name:
                return f"{where}: key '{name}' is set twice (line {earlier + 1} sets it too); keep one"
    value = _VALUE.match(lines[number - 1])
    written = value.group(1) if value else ""
    hint = ""
    if written in ("True", "False"):
        hint = f"; TOML's true and false are lowercase: {name} = {written.lower()}"
    elif written and written[0] not in "\"'[{" and not _BARE.fullmatch(written):
        hint = f'; a string is written in quotes: {name} = "{written}"'
        setting = BY_NAME.get(name)
        bare = _NUMBER.match(written)
        if setting is not None and bare is not None:
            try:
                setting.parse(written)  # "512M" is a size's string; "30s" no number of seconds
            except (ConfigError, ValueError, TypeError):
                hint = f"; a number is written bare, without a unit: {name} = {bare.group(0)}"
    return f"{where}: key '{name}': {what}{hint}"


@contextlib.contextmanager
def _collect(errors: list[str]) -> Iterator[None]:
    """Note a ConfigError and go on, so that one run names every bad key."""
    try:
        yield
    except ConfigError as exc:
        errors.append(str(exc))


def _read_listener(path: str, name: str, table: Any, errors: list[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        errors.append(f"{path}: 'listeners.{name}' must be a table")
        return {}
    out = {}
    for key, raw in table.items():
        if key not in LISTENER_KEYS:
            allowed = ", ".join(sorted(LISTENER_KEYS))
            errors.append(f"{path}: unknown key 'listeners.{name}.{key}' (allowed: {allowed})")
            continue
        with _collect(errors):
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
    """A hint for an unknown key: gunicorn's name for a setting first, else the closest name or flag."""
    import difflib

    from sockact.config.fromgunicorn import hint

    known = hint(key.lower())
    if known:
        return f" ({known})"
    # flag aliases too, as names: keep_alive -> keepalive
    names = {a.lstrip("-").replace("-", "_"): s.name for s in SETTINGS for a in s.aliases if a.startswith("--")}
    names.update({name: name for name in BY_NAME})
    close = difflib.get_close_matches(key.lower(), list(names), n=1)
    return f" (did you mean '{names[close[0]]}'?)" if close else ""


def build(cli_values: Mapping[str, Any], environ: Mapping[str, str], config_file: str | None) -> Config:
    """Merge defaults < TOML < environment < CLI into a Config. Raises ConfigError."""
    values: dict[str, Any] = {}
    listeners: dict[str, dict[str, Any]] = {}
    path = config_file or environ.get(ENV_PREFIX + "CONFIG") or None
    if path:
        values, listeners = read_toml(path)
    in_file = dict(values)
    given = {key: f"in {path}" for key in values}
    for key, value in read_env(environ).items():
        values[key], given[key] = value, f"{BY_NAME[key].env} in the environment"
    for key, raw in cli_values.items():
        if raw is not None:
            where = f"option {BY_NAME[key].flag}"
            values[key], given[key] = _parse(BY_NAME[key], raw, where), where
    if "root_path" not in values and environ.get("SCRIPT_NAME"):
        # gunicorn's way to give the mount prefix; the setting, from any source, wins.
        values["root_path"] = _parse(BY_NAME["root_path"], environ["SCRIPT_NAME"], "environment: SCRIPT_NAME")
        given["root_path"] = "SCRIPT_NAME in the environment"
    overridden = tuple(f"{key} = {toml_value(value)} in {path} is not applied: {given[key]} gives "
                       f"{toml_value(values[key])}, which wins over the file"
                       for key, value in in_file.items() if values[key] != value)
    cfg = Config(**values, listeners=listeners, config_file=path, given=given, overridden=overridden)
    _check_together(cfg, environ)
    return cfg


def check_reload(running: Config, new: Config, names: Sequence[str]) -> None:
    """Settings read anew at a reload that are each valid but would quietly swap what serves: a
    config file found empty (an editor truncating it as it saves), or an app that vanished from the
    settings, which would put the built-in demo app in production's place. Raises ConfigError."""
    if new.config_file and read_toml(new.config_file) == ({}, {}):
        raise ConfigError(f"config file {new.config_file}: empty (truncated while being saved?)")
    for name in names:
        was, now = running.listener(name).app, new.listener(name).app
        if now == DEFAULT_APP and was != DEFAULT_APP:
            raise ConfigError(f"app: the settings read anew name no app for listener {name!r}, which serves "
                              f"{was!r}; set app again to serve it, or to {DEFAULT_APP!r} for the demo")


# Read only to bind sockact's own sockets: under socket activation no restart applies them either.
BIND_SETTINGS = frozenset({"bind", "backlog"})


def unapplied(started: Config, new: Config, activated: bool = False) -> list[str]:
    """The settings read anew at a reload that only a restart applies (Setting.restart) and that differ
    from those this process started with, each as 'key: running value -> file value'. ``activated``:
    systemd passed the sockets, and the start said that BIND_SETTINGS are ignored."""
    def shown(value: Any) -> str:
        return "unset" if value is None else toml_value(value)

    return [f"{s.name}: {shown(getattr(started, s.name))} -> {shown(getattr(new, s.name))}"
            for s in SETTINGS if s.restart and getattr(started, s.name) != getattr(new, s.name)
            and not (activated and s.name in BIND_SETTINGS)]


def _check_together(cfg: Config, environ: Mapping[str, str]) -> None:
    """Settings that are each valid but not together."""
    if cfg.max_threads and cfg.max_threads < cfg.threads:
        raise ConfigError(f"{_from(cfg, 'max_threads')} is below {_from(cfg, 'threads')}; it is the ceiling the "
                          "pool grows to (0: as many as threads)")
    if cfg.reload and cfg.preload:
        raise ConfigError(f"{_from(cfg, 'reload')} cannot be combined with {_from(cfg, 'preload')}: a reload "
                          "re-forks a preloaded app without re-importing it")
    if cfg.reload and environ.get("INVOCATION_ID") and not cfg.reload_under_systemd:
        raise ConfigError("reload: is for development, and systemd runs this sockact (INVOCATION_ID is "
                          "set); deploy with 'systemctl reload', or pass --reload-under-systemd")


def _from(cfg: Config, name: str) -> str:
    """A setting's value and where it came from, for an error that names two: 'threads = 8 (option --threads)'."""
    return f"{name} = {toml_value(getattr(cfg, name))} ({cfg.given.get(name, 'the default')})"


def warnings(cfg: Config, environ: Mapping[str, str], cwd: str, pid: int) -> list[str]:
    """What loads but will not do what it says here: said at start, and by ``sockact check``."""
    out = list(cfg.overridden)
    if "app" not in cfg.given and not any("app" in table for table in cfg.listeners.values()):
        # The demo stays the default (a first `sockact run` serves something), but a forgotten app is no
        # longer told only by a worker's info line.
        out.append(f"no app named (sockact run APP, app in the --config file, or SOCKACT_APP): the built-in demo "
                   f"{DEFAULT_APP} is served; to serve yours: sockact run myproject.wsgi:application")
    activated = "LISTEN_FDS" in environ and environ.get("LISTEN_PID", str(pid)) == str(pid)
    if activated and "bind" in cfg.given:
        out.append("bind: ignored under socket activation (LISTEN_FDS is set): the sockets come from systemd; "
                   "the addresses belong in the .socket unit's ListenStream=")
    for key in ("access_logfile", "error_logfile"):
        path = getattr(cfg, key)
        folder = os.path.dirname(os.path.join(cwd, path or "")) if path and path != "-" else cwd
        if not os.path.isdir(folder):
            out.append(f"{key}: the directory {folder} does not exist: 'sockact run' cannot open {path} unless it is "
                       "made first (systemd makes the unit's LogsDirectory= when the service starts)")
    if "forwarded_allow_ips" not in cfg.given:
        tables = [("", cfg.proxy_protocol)] if cfg.proxy_protocol != "off" else []
        tables += [(f"listeners.{name}: ", table["proxy_protocol"]) for name, table in cfg.listeners.items()
                   if table.get("proxy_protocol", "off") != "off" and "forwarded_allow_ips" not in table]
        for where, version in tables:
            out.append(f"{where}proxy_protocol = {version!r} with the default forwarded_allow_ips, which trusts a "
                       "balancer on this host to set X-Forwarded-*: one in TCP mode passes the clients' own "
                       "through. Set forwarded_allow_ips: '' when the PROXY header alone names the client, or "
                       "the balancer's address when it writes those fields itself (docs/deploy-fleet.md)")
    spools = [("", cfg.body_spool)] + [(f"listeners.{name}: ", table["body_spool"])
                                        for name, table in cfg.listeners.items() if "body_spool" in table]
    for where, spool in spools:
        if 0 < cfg.body_spool_total < spool:
            out.append(f"{where}body_spool = {spool} is above body_spool_total = {cfg.body_spool_total}: a body "
                       "longer than the total is never spooled, but read by the app as it arrives; lower "
                       "body_spool, or raise body_spool_total (the bytes all of a worker's spooled bodies hold)")
    if cfg.config_file is None and os.path.isfile(os.path.join(cwd, "gunicorn.conf.py")):
        out.append("gunicorn.conf.py in the working directory is gunicorn's settings file, and sockact does not "
                   "read it: run 'sockact convert gunicorn.conf.py > sockact.toml', then pass -c sockact.toml")
    return out


def describe(config: Config) -> Iterable[str]:
    """The effective settings as TOML lines, for ``sockact check``."""
    yield f"# effective settings (file: {config.config_file or 'none'})"
    for s in SETTINGS:
        value = getattr(config, s.name)
        if value is None:
            yield f"# {s.name} is not set"
        else:
            yield f"{s.name} = {toml_value(value)}"
    for name, table in sorted(config.listeners.items()):
        yield ""
        yield f"[listeners.{_toml_key(name)}]"
        for key, value in sorted(table.items()):
            yield f"{key} = {toml_value(value)}"


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else toml_value(name)


def toml_value(value: Any) -> str:
    if isinstance(value, Hooks):
        return "{" + ", ".join(f"{name} = {toml_value(spec)}" for name, spec in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def check_virtualenv(path: str) -> str:
    """The site-packages directory of a virtualenv, checked against this interpreter's version."""
    cfg = os.path.join(path, "pyvenv.cfg")
    if not os.path.exists(path):
        raise ConfigError(f"virtualenv {path}: {explain_missing(path)}")
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
