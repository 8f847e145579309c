"""Which interface an app speaks: ``interface = auto | wsgi | asgi`` resolved against the callable.

An ASGI 3 app is an async callable of (scope, receive, send): a coroutine function, or an
object whose ``__call__`` is one (Starlette, FastAPI and Django's ASGIHandler are instances).
Anything else callable is taken for WSGI, as gunicorn and granian's ``auto`` do.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from sockact.errors import AppLoadError

WSGI, ASGI = "wsgi", "asgi"


def is_asgi(app: Any) -> bool:
    """Whether ``app`` looks like an ASGI 3 application."""
    if inspect.isclass(app):
        return False  # an ASGI 2 class or a WSGI class: calling it builds an instance
    method = getattr(app, "__call__", None)  # noqa: B004 - the method itself, async or not
    if not (inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(method)):
        return False
    try:
        params = list(inspect.signature(app).parameters.values())
    except (TypeError, ValueError):
        return True  # async, and its signature cannot be read: ASGI is the only async interface
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) == 3 or any(p.kind is p.VAR_POSITIONAL for p in params)


def choose(setting: str, app: Any) -> str:
    """The interface to serve ``app`` with: the setting, or for ``auto``, what the app looks like."""
    if setting != "auto":
        return setting
    return ASGI if is_asgi(app) else WSGI


def contradiction(setting: str, app: Any) -> str | None:
    """Why ``app``'s shape contradicts an interface set explicitly, or None. Served anyway (a
    wrapper may hide the real shape), but a WSGI function served as ASGI answers every request
    with a 500, so ``check`` and each worker's start log say so first."""
    if setting == ASGI and not is_asgi(app):
        return (f"interface is 'asgi' but the app is {_shape(app)}, not an async callable of (scope, receive, "
                "send); every request would fail with a 500: set interface = 'wsgi' or 'auto'")
    if setting == WSGI and is_asgi(app):
        return ("interface is 'wsgi' but the app is an async callable of (scope, receive, send), an ASGI "
                "app; every request would fail with a 500: set interface = 'asgi' or 'auto'")
    return None


def _shape(app: Any) -> str:
    """What the app looks like instead, in words an operator recognises."""
    try:
        params = inspect.signature(app).parameters.values()
    except (TypeError, ValueError):
        return "a callable that is not async"
    count = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    if count == 2 and not inspect.isclass(app):
        return "a plain callable of 2 arguments, as a WSGI app's (environ, start_response)"
    return f"a {'class' if inspect.isclass(app) else 'callable that is not async'} of {count} arguments"


def one_interface(chosen: Iterable[tuple[str, str]]) -> str:
    """The one interface of a worker's listeners, given (listener, interface) pairs; AppLoadError if mixed."""
    pairs = list(chosen)
    kinds = {kind for _, kind in pairs}
    if len(kinds) > 1:
        listed = ", ".join(f"{name} ({kind})" for name, kind in pairs)
        raise AppLoadError(f"interface: the listeners mix WSGI and ASGI apps ({listed}); one sockact serves "
                          "one interface, so run one sockact per interface")
    return kinds.pop() if kinds else WSGI
