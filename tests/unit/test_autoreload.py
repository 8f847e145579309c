"""--reload: which files changed, and which files are the app's, found without importing it."""

from __future__ import annotations

import os
import signal
import threading

from sockact.supervisor import autoreload


def test_changed_reports_added_removed_and_modified():
    before = {"a.py": 1.0, "b.py": 2.0, "c.py": 3.0}
    after = {"a.py": 1.0, "b.py": 2.5, "d.py": 4.0}
    assert autoreload.changed(before, after) == ["b.py", "c.py", "d.py"]
    assert autoreload.changed(before, dict(before)) == []


def test_source_files_skip_caches_vcs_and_virtualenvs(tmp_path):
    for rel in ("app.py", "pkg/views.py", "pkg/__pycache__/views.cpython-311.py", ".git/hook.py",
                ".venv/lib/x.py", "venv/pyvenv.cfg", "venv/lib/y.py", "notes.txt"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    found = sorted(os.path.relpath(p, tmp_path) for p in autoreload.source_files([str(tmp_path)]))
    assert found == ["app.py", "pkg/views.py"]


def test_the_project_directory_is_watched_found_without_importing(tmp_path):
    """The sys.path entry the app is found on is watched, so its sibling packages are too."""
    (tmp_path / "single.py").write_text("raise RuntimeError('imported')\n")
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    elsewhere = tmp_path / "lib"
    elsewhere.mkdir()
    roots = autoreload.project_roots(["single:app", "proj.wsgi:application", "missing:app"],
                                     [str(elsewhere), str(tmp_path)])
    assert roots == [str(tmp_path)]


def test_an_app_installed_in_site_packages_is_watched_as_its_own_package_only(tmp_path):
    site = tmp_path / "site-packages"
    (site / "proj").mkdir(parents=True)
    (site / "proj" / "__init__.py").write_text("")
    (site / "other.py").write_text("")
    assert autoreload.project_roots(["proj.wsgi:app", "other:app"], [str(site)]) == [
        str(site / "proj"), str(site / "other.py")]


def test_watcher_sends_hup_when_a_file_changes(tmp_path):
    source = tmp_path / "app.py"
    source.write_text("v = 1\n")
    hups = threading.Event()
    previous = signal.signal(signal.SIGHUP, lambda *_: hups.set())
    watcher = autoreload.Watcher([str(tmp_path)], [], os.getpid(), interval=0.05)
    try:
        watcher.start()
        # A change before the watcher's first scan is part of that scan, so keep changing until it tells.
        for stamp in range(1, 400):
            os.utime(source, (stamp, stamp))
            if hups.wait(0.05):
                break
        assert hups.is_set()
    finally:
        watcher.stop()
        watcher.join()
        signal.signal(signal.SIGHUP, previous)
