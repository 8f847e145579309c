"""Import WSGI and ASGI apps named 'module:callable': the import path, the working directory and the
environment they are imported with, and a virtualenv's site-packages."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import site
import sys
import traceback
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from typing import Any

from sockact.config import check_virtualenv
from sockact.config.parsers import app_call
from sockact.config.sandbox import explain_missing
from sockact.errors import AppLoadError, ConfigError

WSGIApp = Callable[..., Any]


def prepare(chdir: str | None, pythonpath: Sequence[str], env: Sequence[str],
            environ: MutableMapping[str, str] = os.environ) -> None:
    """Apply the settings that shape an import, as gunicorn does: KEY=VALUE pairs into the
    environment, change to ``chdir``, and put ``pythonpath`` then the working directory in
    front of sys.path. Run in the supervisor before workers fork, so they inherit it all.
    """
    for pair in env:
        key, _, value = pair.partition("=")
        environ[key] = value
    if chdir:
        try:
            os.chdir(chdir)
        except FileNotFoundError:
            raise ConfigError(f"chdir {chdir}: {explain_missing(chdir)}") from None
        except OSError as exc:
            raise ConfigError(f"chdir {chdir}: {exc.strerror}") from None
    # Like `python -m`, the app is imported from the working directory first.
    front = [os.path.abspath(p) for p in (*pythonpath, os.getcwd())]
    sys.path[:] = list(dict.fromkeys(front)) + [p for p in sys.path if p not in front]


def add_virtualenv(path: str | None) -> None:
    """Put a virtualenv's site-packages on sys.path (once), ahead of the system's."""
    if not path:
        return
    site_dir = check_virtualenv(path)
    if site_dir not in sys.path:
        before = list(sys.path)
        site.addsitedir(site_dir)  # also runs the venv's .pth files
        added = [p for p in sys.path if p not in before]
        # addsitedir appends; the app's own packages must win over the system's copies.
        sys.path[:] = added + before


# What apps are usually called: a bare module means module:application, and Flask's and FastAPI's are 'app'.
_APP_NAMES = ("application", "app", "api")


def _apps_in(module: Any, module_name: str, but: str = "") -> list[str]:
    """The module's callables under the usual names (but ``but``), as the specs to write."""
    return [f"'{module_name}:{name}'" for name in _APP_NAMES if name != but and callable(getattr(module, name, None))]


def _named_otherwise(module: Any, module_name: str, attr: str) -> str:
    """For an app not found: the module's callables under the usual names, as the spec to write."""
    found = _apps_in(module, module_name, but=attr)
    with contextlib.suppress(ImportError, ValueError):
        if "." not in attr and importlib.util.find_spec(f"{module_name}.{attr}") is not None:
            found.append(f"'{module_name}.{attr}:application'")  # a submodule its package does not import
    return f" (did you mean {' or '.join(found)}?)" if found else ""


def load(spec: str, what: str = "app") -> WSGIApp:
    """Import ``module:callable`` (or ``path/to/file.py:callable``). Raises AppLoadError with a one-line
    reason that names the innermost frame of the app's code, and the app's traceback. ``what`` names
    the setting in the reason: the app, or a hook."""
    module_name, _, attr = spec.partition(":")
    attr = attr or "application"
    obj: Any = load_module(module_name, f"{what} '{spec}'")
    module = obj
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"{what} '{spec}': module '{module_name}' has no attribute '{attr}'"
                               f"{_named_otherwise(module, module_name, attr)}") from None
    if not callable(obj):
        raise AppLoadError(f"{what} '{spec}': {attr} is {_not_callable(obj, module_name, attr)}")
    app: WSGIApp = obj
    return app


def load_app(spec: str) -> WSGIApp:
    """The app ``spec`` names: a callable, or what gunicorn's 'module:create_app(ARGS)' returns, the factory
    called once in each process that imports it. An app that neither interface can call (a factory named
    without its call: create_app() of no arguments) is refused here, where it would answer every request 500."""
    call = app_call(spec)
    if call is None:
        app = load(spec)
    else:
        factory_spec, args, kwargs = call
        factory = load(factory_spec)
        name = factory_spec.partition(":")[2]
        try:
            app = factory(*args, **kwargs)
        except Exception as exc:
            raise _failed(f"app '{spec}'", f"calling {name}() raised {type(exc).__name__}: {exc}", exc) from exc
        if not callable(app):
            raise AppLoadError(f"app '{spec}': {name}() returned {_not_callable(app, '', '')}")
    if not (_takes(app, 2) or _takes(app, 3)):
        interfaces = "a WSGI app takes (environ, start_response), an ASGI app (scope, receive, send)"
        if call is None and _takes(app, 0):  # a factory named without its call
            attr = spec.partition(":")[2]
            raise AppLoadError(f"app '{spec}': {attr}() takes no arguments, as an app factory does, where "
                               f"{interfaces}: write '{spec}()' to serve the app it returns, as gunicorn does")
        raise AppLoadError(f"app '{spec}': its parameters are {_parameters(app)}, where {interfaces}")
    return app


def _takes(app: Any, count: int) -> bool:
    """Whether ``app`` can be called with ``count`` positional arguments (True when its signature cannot be
    read, a builtin's). Its own signature: a decorator's wrapper is what gets called, not what it wraps."""
    try:
        inspect.signature(app, follow_wrapped=False).bind(*range(count))
    except TypeError:
        return False
    except ValueError:
        return True
    return True


def _parameters(app: Any) -> str:
    """``app``'s parameters, as its signature shows them."""
    return str(inspect.signature(app, follow_wrapped=False))


def _not_callable(obj: Any, module_name: str, attr: str) -> str:
    """What an object named as the app is instead, and for a module, the spec of the app it holds."""
    if inspect.ismodule(obj):
        inner = f"{module_name}.{attr}"
        found = _apps_in(obj, inner)
        return f"a module, not an app: did you mean {' or '.join(found or [repr(inner)])}?"
    return f"{obj!r:.40} ({type(obj).__name__}), not a callable app"


def _app_frames(exc: BaseException) -> traceback.StackSummary:
    """The frames of ``exc``'s traceback that are the app's: not this module's, not importlib's."""
    frames = traceback.extract_tb(exc.__traceback__)
    return traceback.StackSummary.from_list([f for f in frames if f.filename not in _IMPORTING
                                             and not f.filename.startswith("<frozen importlib")])


# Files whose frames are the import's, not the app's.
_IMPORTING = frozenset({__file__, importlib.__file__})


def load_module(module_name: str, what: str) -> Any:
    """Import a module by name, or a Python file by its path (``what`` names it in the AppLoadError)."""
    try:
        return _import(module_name)
    except ImportError as exc:
        # The module itself missing is the user's typo; anything deeper is the app's own import error.
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")) and \
                not _app_frames(exc):
            raise AppLoadError(f"{what}: no module named '{missing}' (the working directory is "
                               f"{os.getcwd()!r}; set 'chdir' to the project's directory, or add the "
                               f"directory that holds it to 'pythonpath')") from exc
        raise _failed(what, f"importing {module_name} failed: {exc}", exc) from exc
    except SystemExit as exc:
        # sys.exit("DATABASE_URL not set") at import: the app refuses to start, say why.
        why = f": {exc.code}" if isinstance(exc.code, str) else f" with code {exc.code}"
        raise _failed(what, f"importing {module_name} exited{why}", exc) from None
    except Exception as exc:
        raise _failed(what, f"importing {module_name} raised {type(exc).__name__}: {exc}", exc) from exc


def _import(module_name: str) -> Any:
    """The module, imported by name or, for a name ending in .py, from that file (once per file)."""
    if not module_name.endswith(".py"):
        return importlib.import_module(module_name)
    path = os.path.abspath(module_name)
    name = "sockact_file_" + "".join(c if c.isalnum() else "_" for c in path)
    if name not in sys.modules:
        found = importlib.util.spec_from_file_location(name, path)
        assert found is not None and found.loader is not None  # a .py path always has a source loader
        module = importlib.util.module_from_spec(found)
        sys.modules[name] = module
        try:
            found.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def _failed(setting: str, why: str, exc: BaseException) -> AppLoadError:
    """The AppLoadError for ``exc``: where in the app it happened, on the one line that the log, `sockact
    check` and `sockact reload` show, and the app's traceback (gunicorn's log ends with the same)."""
    frames = _app_frames(exc)
    if isinstance(exc, SyntaxError) and exc.filename:
        # The innermost frame of a SyntaxError is the import system's: the error itself says where.
        where = f"{exc.filename}, line {exc.lineno}: {(exc.text or '').strip()}"
    elif frames:
        frame = _told_by(frames)
        where = f"{frame.filename}, line {frame.lineno}: {frame.line}"
    else:
        where = ""
    shown = traceback.TracebackException.from_exception(exc)
    shown.stack = frames
    text = "".join(shown.format()).rstrip("\n") if where else ""
    return AppLoadError(f"{setting}: {why}" + (f"; at {where}" if where else ""), text)


def _told_by(frames: traceback.StackSummary) -> traceback.FrameSummary:
    """The frame the one line names: the innermost of the project's own code, not the standard library's (a
    KeyError from os.environ is told by the line that read the variable, not by <frozen os>) nor an installed
    package's; else, for an app installed as a package, the innermost outside the standard library."""
    stdlib = os.path.dirname(os.__file__) + os.sep

    def packaged(path: str) -> bool:
        return "site-packages" in path or "dist-packages" in path

    def standard(path: str) -> bool:
        return path.startswith("<") or (path.startswith(stdlib) and not packaged(path))

    for outside in (lambda path: not standard(path) and not packaged(path), lambda path: not standard(path)):
        for frame in reversed(frames):
            if outside(frame.filename):
                return frame
    return frames[-1]


def load_all(specs: Iterable[str]) -> dict[str, WSGIApp]:
    """Each distinct app once, by spec."""
    return {spec: load_app(spec) for spec in dict.fromkeys(specs)}
