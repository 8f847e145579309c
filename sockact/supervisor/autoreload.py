"""``--reload`` (development only): restart the workers when a source file of the app changes.

The pure part says which files changed between two snapshots of modification times. A
daemon thread in the supervisor takes a snapshot every interval and, when files changed,
sends SIGHUP to its own process: the supervisor's ordinary reload re-imports the app in a
new generation of workers. Nothing here imports the app: the supervisor never loads it
(``reload`` refuses ``preload``), so the files are found with the import system's finder.
"""

from __future__ import annotations

import importlib.machinery
import logging
import os
import signal
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


def app_roots(specs: Iterable[str], search_path: Sequence[str]) -> list[str]:
    """Where each app's top-level module lives, found without importing it: a package's
    directory, or a single module's file."""
    roots = []
    for spec in specs:
        top = spec.partition(":")[0].partition(".")[0]
        found = importlib.machinery.PathFinder.find_spec(top, list(search_path))
        if found is None:
            continue  # the worker will say it cannot import it
        if found.submodule_search_locations:
            roots.extend(found.submodule_search_locations)
        elif found.origin:
            roots.append(found.origin)
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
