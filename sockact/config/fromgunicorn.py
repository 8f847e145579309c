"""`sockact convert gunicorn.conf.py`: a gunicorn settings file as sockact TOML, and what it cannot carry.

gunicorn's file is Python, run for its names (as gunicorn runs it). Each name that is a gunicorn
setting sockact has lands under sockact's name, its value checked by sockact's parser; each hook
sockact has becomes a [hooks] entry that names the function in that same file (a hook may name a
file: hooks.py); every other gunicorn setting is named, with the reason it is not carried over.
Nothing is carried silently and nothing is dropped silently. The tables here also give the
config's hints for gunicorn's names (config.sources._suggest). docs/from-gunicorn.md has the whole table.
"""

from __future__ import annotations

import ast
import os
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sockact.hooks import HOOK_NAMES
from sockact.http.limits import Limits

# gunicorn's setting -> sockact's, where sockact has one (same name or not).
RENAMED: dict[str, str] = {
    "wsgi_app": "app", "bind": "bind", "backlog": "backlog", "workers": "workers", "threads": "threads",
    "max_requests": "max_requests", "max_requests_jitter": "max_requests_jitter", "timeout": "timeout",
    "graceful_timeout": "graceful_timeout", "keepalive": "keepalive", "limit_request_line": "limit_request_line",
    "limit_request_fields": "limit_request_fields", "limit_request_field_size": "limit_request_field_size",
    "reload": "reload", "preload_app": "preload", "chdir": "chdir", "raw_env": "env", "pythonpath": "pythonpath",
    "forwarded_allow_ips": "forwarded_allow_ips", "accesslog": "access_logfile",
    "access_log_format": "access_logformat", "errorlog": "error_logfile", "loglevel": "log_level",
    "proxy_protocol": "proxy_protocol", "root_path": "root_path", "asgi_lifespan": "lifespan",
    "websocket_max_message_size": "ws_max_size",
}

_TLS = "no TLS in sockact: terminate it in a proxy in front of the socket"
_UNIT = "in the service unit (systemd runs sockact)"
_STRICT = "fixed: sockact parses HTTP/1.1 strictly (docs/http.md)"
_DIRTY = "no separate pool of long-running workers"
_LOGS = "logs go to the journal with structured fields (log_target, log_level)"
_STATSD = "no statsd: Prometheus metrics on the metrics listener (docs/metrics.md)"
_HTTP2 = "HTTP/1.1 only"
_HOOK = "no such hook: "
_CONTROL = "systemctl is the control channel"

# gunicorn's settings sockact has no counterpart for, and why (docs/from-gunicorn.md says more).
NOT_CARRIED: dict[str, str] = {
    "config": "this file is what is being converted", "worker_class": "one worker model (interface: wsgi or asgi)",
    "worker_connections": "idle connections wait in the supervisor (queue_size)",
    "reload_engine": "one engine: modification times", "reload_extra_files": "--reload watches the app and --config",
    "spew": "use a debugger", "check_config": "sockact check", "print_config": "sockact --print-config",
    "sendfile": "always used for wsgi.file_wrapper", "reuse_port": "ReusePort= in the .socket unit",
    "daemon": "systemd runs sockact", "pidfile": "systemd knows the main PID",
    "worker_tmp_dir": "workers report in shared memory",
    "user": "User= " + _UNIT, "group": "Group= " + _UNIT, "umask": "UMask= " + _UNIT,
    "initgroups": "SupplementaryGroups= " + _UNIT, "tmp_upload_dir": "bodies spool to $TMPDIR (body_spool)",
    "secure_scheme_headers": "part of forwarded_allow_ips", "forwarder_headers": "part of forwarded_allow_ips",
    "disable_redirect_access_to_syslog": _LOGS, "capture_output": "the app's stdout and stderr go to the journal",
    "logger_class": _LOGS, "logconfig": _LOGS, "logconfig_dict": _LOGS, "logconfig_json": _LOGS,
    "syslog_addr": _LOGS, "syslog": _LOGS, "syslog_prefix": _LOGS, "syslog_facility": "SyslogFacility= " + _UNIT,
    "enable_stdio_inheritance": "workers always inherit stdout and stderr",
    "statsd_host": _STATSD, "dogstatsd_tags": _STATSD, "statsd_prefix": _STATSD, "enable_backlog_metric": _STATSD,
    "proc_name": "process titles are fixed", "default_proc_name": "process titles are fixed",
    "paste": "no PasteDeploy: point app at a module that builds the app", "raw_paste_global_conf": "no PasteDeploy",
    "pre_fork": _HOOK + "post_fork runs in the worker", "post_worker_init": _HOOK + "use post_fork",
    "worker_int": _HOOK + "use worker_exit", "worker_abort": _HOOK + "a timeout logs the stuck stack",
    "pre_exec": _HOOK + "a restart is systemd's", "pre_request": _HOOK + "use a WSGI or ASGI middleware",
    "post_request": _HOOK + "use a WSGI or ASGI middleware", "child_exit": _HOOK + "use worker_exit (in the worker)",
    "nworkers_changed": _HOOK, "on_exit": _HOOK + "ExecStopPost= in the service unit", "ssl_context": _TLS,
    "proxy_allow_ips": "a proxy_protocol listener requires the header from every client",
    "protocol": "HTTP only", "uwsgi_allow_ips": "HTTP only", "keyfile": _TLS, "certfile": _TLS,
    "ssl_version": _TLS, "cert_reqs": _TLS, "ca_certs": _TLS, "suppress_ragged_eofs": _TLS,
    "do_handshake_on_connect": _TLS, "ciphers": _TLS, "http_protocols": _HTTP2, "http2_cleartext": _HTTP2,
    "http2_max_concurrent_streams": _HTTP2, "http2_initial_window_size": _HTTP2, "http2_max_frame_size": _HTTP2,
    "http2_max_header_list_size": _HTTP2, "permit_obsolete_folding": _STRICT, "strip_header_spaces": _STRICT,
    "permit_unconventional_http_method": _STRICT, "permit_unconventional_http_version": _STRICT,
    "casefold_http_method": _STRICT, "header_map": "fixed: a header name with '_' is dropped",
    "asgi_loop": "uvloop where installed, else asyncio", "asgi_disconnect_grace_period": "not configurable",
    "http_parser": "sockact's own parser",
    "dirty_apps": _DIRTY, "dirty_workers": _DIRTY, "dirty_timeout": _DIRTY, "dirty_threads": _DIRTY,
    "dirty_graceful_timeout": _DIRTY, "on_dirty_starting": _DIRTY, "dirty_post_fork": _DIRTY,
    "dirty_worker_init": _DIRTY, "dirty_worker_exit": _DIRTY, "control_socket": _CONTROL,
    "control_socket_mode": _CONTROL, "control_socket_disable": _CONTROL,
}


def hint(key: str) -> str | None:
    """For a key sockact does not know that is gunicorn's: what to write instead, or why there is none."""
    if key in RENAMED and RENAMED[key] != key:
        return f"gunicorn's {key} is sockact's '{RENAMED[key]}'"
    if key in HOOK_NAMES:
        return f"a hook: hooks.{key} = \"module:{key}\""
    if key in NOT_CARRIED:
        return f"gunicorn's {key} has no sockact setting: {NOT_CARRIED[key]}"
    return None


def _bool_to_proxy_protocol(value: Any) -> Any:
    # gunicorn's proxy_protocol is a switch (newer ones take 'v1'/'v2'/'auto' too); on means either version
    return {True: "auto", False: "off"}.get(value, value) if isinstance(value, bool) else value


def _loglevel(value: Any) -> Any:
    return "error" if isinstance(value, str) and value.lower() == "critical" else value


# gunicorn's worker classes that serve ASGI: uvicorn's, in uvicorn and in the uvicorn-worker package.
ASGI_WORKERS = frozenset({"uvicorn.workers.UvicornWorker", "uvicorn.workers.UvicornH11Worker",
                          "uvicorn_worker.UvicornWorker", "uvicorn_worker.UvicornH11Worker"})

# gunicorn's command-line flags other than '--' and the setting's name with dashes (those are found by name).
_FLAGS: dict[str, str] = {
    "-k": "worker_class", "-D": "daemon", "-p": "pidfile", "--pid": "pidfile", "-u": "user", "-g": "group",
    "-m": "umask", "-n": "proc_name", "--name": "proc_name", "-R": "enable_stdio_inheritance",
    "--no-sendfile": "sendfile", "--log-config": "logconfig", "--log-config-json": "logconfig_json",
    "--log-syslog-to": "syslog_addr", "--log-syslog": "syslog", "--log-syslog-prefix": "syslog_prefix",
    "--log-syslog-facility": "syslog_facility", "--paster": "paste", "--proxy-allow-from": "proxy_allow_ips",
    "--uwsgi-allow-from": "uwsgi_allow_ips", "--reload-extra-file": "reload_extra_files",
    "--paste-global": "raw_paste_global_conf", "--dirty-app": "dirty_apps",
    "--no-control-socket": "control_socket_disable",
}

# What to write instead of gunicorn's worker classes that sockact's workers already are.
_WORKER_CLASSES: dict[str, str] = {
    **dict.fromkeys(ASGI_WORKERS, "sockact needs no worker class for an ASGI app: drop it; an async app is "
                                  "served as ASGI (--interface auto, the default; --interface asgi to insist)"),
    "sync": "drop it: a sockact worker with --threads 1 (the default) is gunicorn's sync worker",
    "gthread": "drop it: sockact's workers take --threads N as gthread's do (and --max-threads to grow)",
}


def flag_setting(flag: str) -> str | None:
    """The gunicorn setting that a flag of gunicorn's command line sets, or None for no flag of gunicorn's."""
    if flag in _FLAGS:
        return _FLAGS[flag]
    name = flag[2:].replace("-", "_") if flag.startswith("--") else ""
    return name if name in NOT_CARRIED or name in RENAMED else None


def flag_hint(flag: str, value: str) -> str | None:
    """For a flag sockact does not take that is gunicorn's: what to write instead, or why there is none.
    ``value`` is what followed it (the worker class of ``-k``)."""
    name = flag_setting(flag)
    if name is None:
        return None
    if name == "worker_class":
        return _WORKER_CLASSES.get(value, "sockact has one worker model: forked workers with app threads for "
                                          "WSGI (--threads, --max-threads), an asyncio loop for ASGI")
    if name in RENAMED:
        return f"sockact's flag is --{RENAMED[name].replace('_', '-')}"
    return f"gunicorn's {name} setting has no sockact counterpart: {NOT_CARRIED[name]}"


# gunicorn's 0 is "unlimited" for these; sockact has no unlimited, and its largest useful value is the
# request head's own bound (Limits.head), which the line or a field can never pass anyway.
_UNLIMITED: dict[str, int] = {"limit_request_line": Limits.head, "limit_request_field_size": Limits.head}


def _unlimited(name: str, value: Any) -> tuple[Any, str | None]:
    """gunicorn's 0 for an unlimited size as sockact's largest, with the note that says so."""
    if name in _UNLIMITED and value == 0 and not isinstance(value, bool):
        return _UNLIMITED[name], (f"gunicorn's {name} = 0 is unlimited; sockact has no unlimited, and "
                                  f"{_UNLIMITED[name]} is the request head's own bound")
    return value, None


# Values whose gunicorn form sockact spells otherwise.
_VALUES: dict[str, Callable[[Any], Any]] = {
    "proxy_protocol": _bool_to_proxy_protocol, "loglevel": _loglevel,
}


@dataclass
class Conversion:
    """The TOML lines, and each name of the file that is not carried, with why."""

    values: dict[str, Any] = field(default_factory=dict)  # sockact setting -> parsed value
    hooks: dict[str, str] = field(default_factory=dict)  # hook -> "path:function"
    not_carried: list[tuple[str, str]] = field(default_factory=list)  # (gunicorn name, why)
    notes: dict[str, str] = field(default_factory=dict)  # sockact setting -> what to know of its value


def convert(path: str, names: Mapping[str, Any], settings: Mapping[str, Callable[[Any], Any]],
            computed: Mapping[str, str] | None = None) -> Conversion:
    """Sort the names a gunicorn.conf.py defined. ``settings`` maps sockact's setting names to their parsers;
    ``computed`` maps a name the file computes (not a literal) to its expression (see ``computed_names``)."""
    out = Conversion()
    for name, value in names.items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue  # the file's own imports and private names
        if name in HOOK_NAMES and callable(value):
            out.hooks[name] = f"{hook_module(path)}:{name}"
        elif name == "worker_class" and value in ASGI_WORKERS:
            out.values["interface"] = settings["interface"]("asgi")
            out.notes["interface"] = f"gunicorn's worker_class = {value!r} serves ASGI"
        elif name in RENAMED:
            target = RENAMED[name]
            value, note = _unlimited(name, value)
            try:
                out.values[target] = settings[target](_VALUES.get(name, _same)(value))
            except ValueError as exc:
                out.not_carried.append((name, f"{value!r} is not a valid {target}: {exc}"))
                continue
            if (expression := (computed or {}).get(name)) is not None:
                note = f"computed by the conf on the machine it was converted on: {expression}"
            if note:
                out.notes[target] = note
        elif name in NOT_CARRIED:
            out.not_carried.append((name, NOT_CARRIED[name]))
        elif callable(value) or isinstance(value, type):
            continue  # a helper function or class of the file's own
        else:
            out.not_carried.append((name, "not a gunicorn setting"))
    return out


def _same(value: Any) -> Any:
    return value


def computed_names(source: str) -> dict[str, str]:
    """Each top-level name the file assigns with an expression that is not a literal, with the expression:
    its value (``multiprocessing.cpu_count() * 2 + 1``) is this machine's, not the server's."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}  # run_file has said so already
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            try:
                ast.literal_eval(node.value)
                continue
            except ValueError:
                expression = ast.unparse(node.value)
            out.update({t.id: expression for t in targets if isinstance(t, ast.Name)})
    return out


# gunicorn's -c python:MODULE: its settings in a module on the import path rather than in a file.
MODULE_PREFIX = "python:"


def run_file(path: str) -> dict[str, Any]:
    """The names a gunicorn.conf.py (or a ``python:MODULE``) defines, run as gunicorn runs it. Raises
    AppLoadError with where it failed."""
    from sockact.apploader import load_module

    if path.startswith(MODULE_PREFIX):
        # gunicorn imports it with its working directory (its chdir) first on the path
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = load_module(path[len(MODULE_PREFIX):], what="gunicorn settings")
    else:
        module = load_module(path, what="gunicorn settings")
    return dict(vars(module))


def hook_module(path: str) -> str:
    """What a [hooks] entry names for a function of the converted file: the module, or the file's path."""
    return path[len(MODULE_PREFIX):] if path.startswith(MODULE_PREFIX) else os.path.abspath(path)


def lines(conversion: Conversion, path: str, toml_value: Callable[[Any], str]) -> Iterator[str]:
    """The TOML file: the settings carried over, then the hooks, with what was not carried as comments."""
    yield f"# converted from {path} by sockact convert"
    for name, why in conversion.not_carried:
        yield f"# not carried over: {name} ({why})"
    for key, value in conversion.values.items():
        note = conversion.notes.get(key)
        yield f"{key} = {toml_value(value)}" + (f"  # {note}" if note else "")
    if conversion.hooks:
        yield ""
        yield "[hooks]  # called as gunicorn calls them: server and worker carry pid, cfg and log (docs/hooks.md)"
        for name, spec in conversion.hooks.items():
            yield f"{name} = {toml_value(spec)}"
