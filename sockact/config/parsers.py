"""How a setting's value is read: each parser takes a TOML value or a string (environment,
command line) and returns the value, or raises ValueError saying what was expected.

A parser's docstring names its kind for --help and the man page. config.SETTINGS pairs each
setting with one of these.
"""

from __future__ import annotations

import ast
import ipaddress
import math
import re
import socket
from collections.abc import Callable
from typing import Any

# module, module:callable, or gunicorn's module:factory(ARGS), whose arguments are Python literals.
_APP_RE = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*(\(.*\))?)?$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")



def integer(minimum: int, maximum: int | None = None, zero: str = "") -> Callable[[Any], int]:
    """An integer from ``minimum`` to ``maximum``; ``zero``: why 0 is refused, where another server takes it
    for a meaning of its own (gunicorn's unlimited)."""
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, str):
            try:
                value = int(value.strip(), 0)
            except ValueError:
                raise ValueError("expected an integer") from None
        if not isinstance(value, int):
            raise ValueError("expected an integer")
        if value == 0 and zero:
            raise ValueError(zero)
        if value < minimum:
            raise ValueError(f"must be >= {minimum}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be <= {maximum}")
        return value

    parse.__doc__ = f"integer >= {minimum}" if maximum is None else f"integer {minimum}..{maximum}"
    return parse


# The longest time a setting may name: far past any real timeout (over three years), and far below
# where a wait on it fails (time.sleep and a lock's timeout raise OverflowError past ~292 years,
# so handback_after = 1e12 made a worker's monitor thread fail once a second).
MAX_SECONDS = 1e8


def number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number of seconds")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError("expected a number of seconds") from None
    if not isinstance(value, (int, float)):
        raise ValueError("expected a number of seconds")
    # NaN makes every deadline comparison false and inf never comes; both would also crash a poll().
    if not math.isfinite(value):
        raise ValueError("expected a finite number of seconds")
    if value > MAX_SECONDS:
        raise ValueError(f"must be at most {MAX_SECONDS:.0f} seconds (over three years)")
    return float(value)


def seconds(value: Any) -> float:
    seconds = number(value)
    if seconds <= 0:
        raise ValueError("must be > 0 seconds")
    return seconds


seconds.__doc__ = "seconds (> 0)"


def seconds_or_off(value: Any) -> float:
    seconds = number(value)
    if seconds < 0:
        raise ValueError("must be >= 0 seconds (0 turns it off)")
    return seconds


seconds_or_off.__doc__ = "seconds (0: off)"

_SIZE_RE = re.compile(r"(\d+)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size_or_off(value: Any) -> int:
    """Bytes, from an integer or a size with a binary unit such as '512M' or '2G' (as systemd's
    MemoryMax=); 0 for off."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError("expected a size such as '512M' or '2G' (K, M, G, T: powers of 1024), or 0 for off")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]


size_or_off.__doc__ = "size, e.g. 512M (0: off)"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected true or false")


boolean.__doc__ = "boolean"


def app_spec(value: Any) -> str:
    if isinstance(value, str) and (hint := _path_hint(value.strip())):
        raise ValueError(hint)
    if not isinstance(value, str) or not _APP_RE.match(value.strip()):
        raise ValueError("expected 'module:callable' or 'module', e.g. 'myproject.wsgi:application', or an app "
                         "factory's call, e.g. 'myproject:create_app()'")
    spec = value.strip()
    app_call(spec)  # a factory's arguments must be literals
    # As gunicorn: a bare module serves its 'application'.
    return spec if ":" in spec else spec + ":application"


app_spec.__doc__ = "module:callable"


def _path_hint(spec: str) -> str | None:
    """For a file's path in another folder ('src/app.py:app', as `flask run` takes), what to write instead:
    its module, from its folder. A module imported by name finds its neighbours (``import models``), where a
    file loaded by path would not."""
    path, _, attr = spec.partition(":")
    folder, slash, file = path.rpartition("/")
    if not slash or not file.endswith(".py") or not file[:-3].isidentifier():
        return None
    return (f"expected a module, not a file's path: set chdir to {folder or '/'!r} and the app to "
            f"{file[:-3] + ':' + (attr or 'application')!r}")


def app_call(spec: str) -> tuple[str, tuple[Any, ...], dict[str, Any]] | None:
    """For an app spec that calls a factory, as gunicorn's 'module:create_app("prod", debug=False)' does:
    the spec of the factory and the arguments to call it with; None for a spec that names the app.
    ValueError for arguments that are not Python literals."""
    module, _, target = spec.partition(":")
    name, paren, rest = target.partition("(")
    if not paren:
        return None
    try:
        call = ast.parse(f"f({rest}", mode="eval").body
        assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name)  # one call: not f(1)(2)
        args = tuple(ast.literal_eval(arg) for arg in call.args)
        kwargs = {str(kw.arg): ast.literal_eval(kw.value) for kw in call.keywords}
    except (SyntaxError, ValueError, TypeError, AssertionError):
        raise ValueError(f"{name}({rest}: an app factory's arguments must be Python literals, "
                         "e.g. create_app('production', debug=False)") from None
    if any(kw.arg is None for kw in call.keywords):
        raise ValueError(f"{name}({rest}: an app factory's arguments must be Python literals, without **")
    return f"{module}:{name}", args, kwargs


def choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return value.strip().lower()

    parse.__doc__ = "|".join(choices)
    return parse


def _strings(value: Any, split: str) -> list[str]:
    """A TOML list of strings, or a string split on ``split`` (a regex)."""
    if isinstance(value, str):
        value = [v for v in re.split(split, value) if v]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of strings")
    for v in value:
        _no_nul(v)
    return value


def _no_nul(value: str) -> None:
    # TOML's "\u0000" gets a NUL into a string; a path or a variable with one is refused by the OS
    # calls that use it (a ValueError, not an OSError), so here instead, as a settings error.
    if "\0" in value:
        raise ValueError("contains a NUL byte")


DEFAULT_LISTENER = "http"  # the name of a socket that systemd or --bind gives no name


def bind_address(spec: str) -> tuple[str, int, str | tuple[str, int]]:
    """'[NAME=]ADDR' as (name, family, address); ADDR is HOST:PORT, [V6]:PORT, :PORT or unix:PATH.

    Raises ValueError saying what is wrong. Read when the settings are, so `sockact check` refuses
    what `sockact run` could not bind.
    """
    name, sep, addr = spec.partition("=")
    if not sep:
        name, addr = DEFAULT_LISTENER, spec
    if addr.startswith("unix:"):
        path = addr[5:]
        if not path:
            raise ValueError(f"bind '{spec}': empty Unix socket path")
        return name, socket.AF_UNIX, path
    host, colon, port_s = addr.rpartition(":")
    if not colon and addr.isdigit():  # a port alone, as `uvicorn --port` takes it
        raise ValueError(f"bind '{spec}': a port alone: write 127.0.0.1:{addr} for this machine, "
                         f":{addr} for every address")
    if not colon or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"bind '{spec}': expected HOST:PORT (a port from 0 to 65535), [IPV6]:PORT or unix:PATH")
    if host.startswith("[") and host.endswith("]"):
        return name, socket.AF_INET6, (host[1:-1], int(port_s))
    return name, socket.AF_INET, (host or "0.0.0.0", int(port_s))


def binds(value: Any) -> tuple[str, ...]:
    try:
        specs = tuple(_strings(value, r"[,\s]+"))
    except ValueError:
        raise ValueError("expected a list of addresses like '127.0.0.1:8000' or 'unix:/run/app.sock'") from None
    if not specs:  # an empty value set on purpose: run would have nothing to listen on without systemd
        raise ValueError("empty: name an address like '127.0.0.1:8000', or unset it for the default")
    for spec in specs:
        bind_address(spec)
    return specs


binds.__doc__ = "address list"


def dirs(value: Any) -> tuple[str, ...]:
    # gunicorn's --pythonpath is one comma-separated string.
    return tuple(d.strip() for d in _strings(value, r",") if d.strip())


dirs.__doc__ = "comma-separated directories"


def env_pairs(value: Any) -> tuple[str, ...]:
    pairs = _strings(value, r"\s+")
    for pair in pairs:
        key, sep, _ = pair.partition("=")
        if not sep or not _ENV_KEY_RE.match(key):
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
    return tuple(pairs)


env_pairs.__doc__ = "KEY=VALUE list"


def _string(kind: str, expected: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected {expected}")
        _no_nul(value)
        return value

    parse.__doc__ = kind
    return parse


path = _string("path", "a path")
log_file = _string("path, or - for stderr", "a path, or '-' for stderr")
listener_name = _string("listener name", "a listener name")


def mount(value: Any) -> str:
    if not isinstance(value, str) or (value and not value.startswith("/")):
        raise ValueError("expected a path prefix starting with '/', e.g. '/app'")
    return value.rstrip("/")


mount.__doc__ = "URL path prefix"


def url_path(value: Any) -> str:
    """One exact request path, or "" for none."""
    if not isinstance(value, str) or (value and (not value.startswith("/") or not value.isascii()
                                                 or any(c in value for c in " ?#%") or not value.isprintable())):
        raise ValueError("expected a path starting with '/', without spaces, '?', '#' or '%', e.g. '/-/health'")
    return value


url_path.__doc__ = "URL path"


def networks(value: Any) -> str:
    items = _strings(value, r"[,\s]+")
    for item in items:
        if item not in ("*", "unix"):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"expected IP addresses or networks separated by commas, 'unix' or '*'; "
                                 f"got {item!r}") from None
    return ",".join(items)


networks.__doc__ = "comma-separated addresses"


REPEATABLE = (binds, env_pairs)
