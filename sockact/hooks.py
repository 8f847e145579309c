"""Server hooks, in gunicorn's spirit: the user's functions, named in the [hooks] table, called at
five moments of the service's life, with the arguments gunicorn passes, so its hooks move over.

    on_starting(server)        supervisor, once, before it opens the listeners and imports anything
    when_ready(server)         supervisor, once, when the first workers serve
    on_reload(server)          supervisor, at each reload, before the new workers start (server.cfg: new)
    post_fork(server, worker)  each worker, after the fork, before it imports the app (preload or not)
    worker_exit(server, worker)  each worker, on a clean exit, after its last response, before it goes

``server`` and ``worker`` are small frozen objects (Server, Worker below), not the processes' own
classes: their attributes are the whole interface, and they stay. Every hook is imported in the
supervisor at start, so a hook that does not import stops the start, as an app that does not
import does. A hook that raises is logged with its traceback; in post_fork it fails the worker's
start, elsewhere sockact carries on.

Nothing here imports the rest of sockact at module level: config/settings.py reads Hooks and HOOK_NAMES.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

HOOK_NAMES = ("on_starting", "when_ready", "on_reload", "post_fork", "worker_exit")
# module:callable, or a Python file's path and a callable in it (gunicorn.conf.py's own hooks)
_SPEC_RE = re.compile(r"^(?:[A-Za-z_][\w.]*|[^:]+\.py):[A-Za-z_][\w.]*$")

log = logging.getLogger("sockact.hooks")


@dataclass(frozen=True)
class Hooks:
    """The hooks set, each as 'module:callable' (or 'path/to/file.py:callable'); '' when unset."""

    on_starting: str = ""
    when_ready: str = ""
    on_reload: str = ""
    post_fork: str = ""
    worker_exit: str = ""

    def items(self) -> list[tuple[str, str]]:
        """The hooks that are set, as (name, spec)."""
        return [(name, spec) for name, spec in dataclasses.asdict(self).items() if spec]


def parse(value: Any) -> Hooks:
    """A [hooks] table, or (from the environment) 'NAME=module:callable' pairs separated by spaces."""
    if isinstance(value, Hooks):
        return value
    if isinstance(value, str):
        pairs = [pair.partition("=") for pair in value.split()]
        if any(not sep for _, sep, _ in pairs):
            raise ValueError("expected NAME=module:callable pairs, e.g. 'post_fork=myproject.hooks:post_fork'")
        value = {name: spec for name, _, spec in pairs}
    if not isinstance(value, Mapping):
        raise ValueError("expected a [hooks] table, e.g. hooks.post_fork = \"myproject.hooks:post_fork\"")
    for name, spec in value.items():
        if name not in HOOK_NAMES:
            import difflib  # only to name what was meant

            close = difflib.get_close_matches(name, HOOK_NAMES, n=1)  # as the settings' own hints
            meant = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"no hook is called {name!r} ({meant}the hooks: {', '.join(HOOK_NAMES)})")
        if not isinstance(spec, str) or not _SPEC_RE.match(spec):
            raise ValueError(f"{name}: expected 'module:callable', e.g. 'myproject.hooks:{name}', got {spec!r}")
    return Hooks(**value)


parse.__doc__ = "table of hook = module:callable"


# Server and Worker: nothing compares them, and each method dataclasses generates is compiled at import.
@dataclass(frozen=True, eq=False, repr=False)
class Server:
    """What a hook learns of the service: the supervisor's pid, the settings, a logger."""

    pid: int
    cfg: Any  # the Config in force (for on_reload: the new one)
    log: logging.Logger = log


@dataclass(frozen=True, eq=False, repr=False)
class Worker:
    """What post_fork and worker_exit learn of their worker."""

    pid: int
    number: int  # from 1, as its process title shows ("sockact: worker N"); reused once free
    log: logging.Logger = log


class Loaded:
    """The hooks imported: call(name, *args) runs one if it is set."""

    def __init__(self, functions: Mapping[str, Callable[..., Any]]) -> None:
        self.functions = dict(functions)

    def call(self, name: str, *args: Any) -> None:
        """Run hook ``name``; one that raises is logged, with its traceback, as one record."""
        function = self.functions.get(name)
        if function is None:
            return
        try:
            function(*args)
        except (Exception, SystemExit):  # sys.exit() in a hook is its failure, not the service's end
            log.exception("hook %s (%s) raised", name, getattr(function, "__qualname__", function))

    def call_or_raise(self, name: str, *args: Any) -> None:
        """Run hook ``name`` and let what it raises through (post_fork: the worker cannot start), a
        sys.exit() as an error, so that the worker's start fails with the hook's traceback."""
        function = self.functions.get(name)
        if function is None:
            return
        try:
            function(*args)
        except SystemExit as exc:
            raise RuntimeError(f"hook {name} called sys.exit({exc.code!r})") from exc


def load(hooks: Hooks) -> Loaded:
    """Import every hook set. Raises AppLoadError, with the hook's traceback, when one does not."""
    from sockact.apploader import load as import_callable

    return Loaded({name: import_callable(spec, what=f"hooks.{name}") for name, spec in hooks.items()})
