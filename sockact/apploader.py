"""Import WSGI apps named 'module:callable', optionally from a virtualenv's site-packages."""

from __future__ import annotations

import importlib
import site
import sys
from collections.abc import Callable, Iterable
from typing import Any

from .config import check_virtualenv
from .errors import AppLoadError

WSGIApp = Callable[..., Any]


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


def load(spec: str) -> WSGIApp:
    """Import ``module:callable``. Raises AppLoadError with a one-line reason."""
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        # The module itself missing is the user's typo; anything deeper is the app's own import error.
        if getattr(exc, "name", None) == module_name:
            raise AppLoadError(f"app '{spec}': no module named '{module_name}' "
                               f"(is it on the path? sys.path[0] is {sys.path[0]!r})") from exc
        raise AppLoadError(f"app '{spec}': importing {module_name} failed: {exc}") from exc
    except Exception as exc:
        raise AppLoadError(f"app '{spec}': importing {module_name} raised "
                           f"{type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"app '{spec}': module '{module_name}' has no attribute '{attr}'") from None
    if not callable(obj):
        raise AppLoadError(f"app '{spec}': {attr} is not callable")
    return obj


def load_all(specs: Iterable[str]) -> dict[str, WSGIApp]:
    """Each distinct app once, by spec."""
    return {spec: load(spec) for spec in dict.fromkeys(specs)}
