"""Importing the app: the settings applied first, and every failure one line with exit code 5."""

from __future__ import annotations

import os
import sys

import pytest

from sockact.apploader import load, load_app, prepare
from sockact.config.parsers import app_call, app_spec
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


FACTORIES = """\
import functools

def create_app(greeting="hi", *, debug=False):
    def app(environ, start_response):
        return [greeting.encode(), str(debug).encode()]
    return app

def returns_none():
    return None

def raises():
    raise KeyError("SECRET_KEY")

def three(a, b, c, d=1):
    return None

def four(a, b, c, d):
    return None

def deco(f):
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)
    return wrapper

wrapped = deco(create_app)  # its own signature is (*args, **kwargs): not judged by create_app's
"""


def test_an_app_factorys_call_is_parsed_with_literal_arguments_only():
    assert app_call("m:app") is None
    assert app_call("m.x:make.app()") == ("m.x:make.app", (), {})
    assert app_call('m:create_app("prod", 2, debug=True)') == ("m:create_app", ("prod", 2), {"debug": True})
    for bad in ("m:create_app(os.environ)", "m:create_app(**{'a': 1})", "m:create_app(1)(2)", "m:create_app(1"):
        with pytest.raises(ValueError):
            app_spec(bad)


def test_a_files_path_is_answered_with_its_module_and_folder():
    # A new user types the path they see (`flask run` takes one): the answer says what to write instead.
    with pytest.raises(ValueError, match=r"not a file's path: set chdir to 'src' and the app to 'app:app'$"):
        app_spec("src/app.py:app")
    with pytest.raises(ValueError, match=r"set chdir to '/srv/site' and the app to 'wsgi:application'$"):
        app_spec("/srv/site/wsgi.py")
    with pytest.raises(ValueError, match=r"set chdir to '.' and the app to 'app:make\(\)'$"):
        app_spec("./app.py:make()")
    with pytest.raises(ValueError, match="expected 'module:callable'"):
        app_spec("src/my-app.py:app")  # no module is named my-app: the usual answer
    assert app_spec("app.py:app") == "app.py:app"  # a file in the folder served from loads as before


def test_a_factory_is_called_and_a_factory_named_without_its_call_is_refused(isolated):
    (isolated / "factories.py").write_text(FACTORIES)
    prepare(None, [str(isolated)], [])
    assert load_app("factories:create_app('x', debug=True)")({}, None) == [b"x", b"True"]
    assert load_app("factories:three")  # (scope, receive, send) and a default: an app's shape
    assert load_app("factories:wrapped")
    with pytest.raises(AppLoadError, match=r"create_app\(\) takes no arguments, as an app factory does.*write "
                                           r"'factories:create_app\(\)' to serve the app it returns"):
        load_app("factories:create_app")
    with pytest.raises(AppLoadError, match=r"its parameters are \(a, b, c, d\), where a WSGI app takes"):
        load_app("factories:four")
    with pytest.raises(AppLoadError, match=r"returns_none\(\) returned None \(NoneType\), not a callable app"):
        load_app("factories:returns_none()")
    with pytest.raises(AppLoadError, match=r"calling raises\(\) raised KeyError: 'SECRET_KEY'; at .*factories.py, "
                                           r"line 12: raise KeyError"):
        load_app("factories:raises()")
