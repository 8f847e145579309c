"""``--reload`` (development only): restart the workers when a source file of the app changes.

The pure part says which files changed between two snapshots of modification times. A
daemon thread in the supervisor takes a snapshot every interval and, when files changed,
sends SIGHUP to its own process: the supervisor's ordinary reload re-imports the app in a
new generation of workers. Nothing here imports the app: the supervisor never loads it
(``reload`` refuses ``preload``), so where gunicorn's reloader watches each loaded module's file
(``sys.modules``, inside the worker), sockact does as uvicorn does and watches the project's
directory: the sys.path entry the app is found on, which holds the packages it imports too.
"""

from __future__ import annotations

import importlib.machinery
import logging
import os
import signal
import sysconfig
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence

log = logging.getLogger("sockact.autoreload")

INTERVAL = 1.0  # seconds between scans; an editor's save shows up within about this long
SUFFIXES = (".py",)
# Directories that are not the app's own source: caches, VCS data, virtualenvs and installed packages.
_SKIP_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", "dist-packages"})

Snapshot = Mapping[str, float]


def changed(before: Snapshot, after: Snapshot) -> list[str]:
    """Files added, removed or modified between two snapshots, sorted."""
    return sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))


def snapshot(paths: Iterable[str]) -> dict[str, float]:
    """Each existing file's modification time."""
    out = {}
    for path in paths:
        try:
            out[path] = os.stat(path).st_mtime
        except OSError:
            continue  # gone: changed() reports it as removed
    return out


def source_files(roots: Iterable[str]) -> Iterator[str]:
    """The .py files of each root: a file, or a directory walked without its caches and venvs."""
    for root in roots:
        if os.path.isfile(root):
            yield root
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS
                           and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg"))]
            yield from (os.path.join(dirpath, f) for f in filenames if f.endswith(SUFFIXES))


def _installed(directory: str) -> bool:
    """Whether a sys.path entry holds installed code (the stdlib, site- or dist-packages), not a project."""
    real = os.path.realpath(directory)
    if os.path.basename(real) in _SKIP_DIRS:
        return True
    paths = sysconfig.get_paths()
    return real in {os.path.realpath(paths[key]) for key in ("stdlib", "platstdlib") if key in paths}


def project_roots(specs: Iterable[str], search_path: Sequence[str]) -> list[str]:
    """The directories to watch, found without importing the app: the sys.path entry each app's
    top-level module is found on (the project: --chdir, the working directory or a --pythonpath
    entry), so sibling packages the app imports (a Django project's apps) are watched too, as
    uvicorn watches its working directory. An app found among installed packages is watched as
    its own package directory (or file) only: a site-packages walk would watch every dependency."""
    roots = []
    for spec in specs:
        top = spec.partition(":")[0].partition(".")[0]
        for entry in search_path:
            directory = os.path.abspath(entry or os.curdir)
            found = importlib.machinery.PathFinder.find_spec(top, [directory])
            if found is None:
                continue
            if not _installed(directory):
                roots.append(directory)
            elif found.submodule_search_locations:
                roots.extend(found.submodule_search_locations)
            elif found.origin:
                roots.append(found.origin)
            break  # the entry the import system takes; none found: the worker says why
    return list(dict.fromkeys(roots))


class Watcher(threading.Thread):
    """Scans ``roots`` (plus ``extra`` files) every ``interval`` and sends SIGHUP to ``pid`` on a change."""

    def __init__(self, roots: Sequence[str], extra: Sequence[str], pid: int, interval: float = INTERVAL) -> None:
        super().__init__(name="sockact-autoreload", daemon=True)
        self.roots = list(roots)
        self.extra = list(extra)
        self.pid = pid
        self.interval = interval
        self.stopped = threading.Event()

    def scan(self) -> dict[str, float]:
        return snapshot([*source_files(self.roots), *self.extra])

    def run(self) -> None:
        before = self.scan()
        log.info("reload: watching %d files under %s", len(before), ", ".join(self.roots) or "nothing")
        while not self.stopped.wait(self.interval):
            after = self.scan()
            paths = changed(before, after)
            if paths:
                more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
                log.info("reload: %s changed%s; reloading the workers", paths[0], more)
                os.kill(self.pid, signal.SIGHUP)
            before = after

    def stop(self) -> None:
        self.stopped.set()
