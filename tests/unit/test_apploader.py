"""Importing the app: the settings applied first, and every failure one line with exit code 5."""

from __future__ import annotations

import os
import sys

import pytest

from sockact.apploader import load, prepare
from sockact.errors import APP_LOAD_ERROR, AppLoadError, ConfigError


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """sys.path, the working directory and sys.modules restored after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_sys_exit_at_import_is_an_app_load_error(isolated):
    (isolated / "exits_app.py").write_text('import sys\nsys.exit("DATABASE_URL not set")\n')
    prepare(None, [str(isolated)], [])
    with pytest.raises(AppLoadError) as err:
        load("exits_app:app")
    assert str(err.value) == ("app 'exits_app:app': importing exits_app exited: DATABASE_URL not set; at "
                              f"{isolated / 'exits_app.py'}, line 2: sys.exit(\"DATABASE_URL not set\")")
    assert err.value.exit_code == APP_LOAD_ERROR
    (isolated / "exits_code.py").write_text("raise SystemExit(3)\n")
    with pytest.raises(AppLoadError, match="exited with code 3"):
        load("exits_code:app")


def test_missing_module_hint_names_the_working_directory(isolated, tmp_path):
    with pytest.raises(AppLoadError) as err:
        load("nosuchmod:app")
    text = str(err.value)
    assert "no module named 'nosuchmod'" in text and repr(os.getcwd()) in text and "'chdir'" in text
    assert "sys.path[0]" not in text
    with pytest.raises(AppLoadError, match="no module named 'nosuchpkg'"):
        load("nosuchpkg.wsgi:application")


def test_bare_module_spec_means_application(isolated):
    (isolated / "bare_app.py").write_text("def application(e, s):\n    return []\n")
    prepare(None, [], [])
    assert load("bare_app").__name__ == "application"


def test_prepare_applies_env_chdir_and_pythonpath(isolated, monkeypatch):
    project, libs = isolated / "project", isolated / "libs"
    project.mkdir()
    libs.mkdir()
    environ: dict[str, str] = {}
    prepare(str(project), [str(libs)], ["GREETING=hello world", "EMPTY="], environ)
    assert environ == {"GREETING": "hello world", "EMPTY": ""}
    assert os.getcwd() == str(project)
    assert sys.path[:2] == [str(libs), str(project)]
    prepare(str(project), [str(libs)], [], environ)  # again, as at a reload: no duplicates
    assert sys.path.count(str(project)) == 1
    with pytest.raises(ConfigError, match=r"^chdir /nonexistent: "):
        prepare("/nonexistent", [], [], environ)
