"""An interface set explicitly that contradicts the app's shape is said before the first request.

`--interface asgi` on a WSGI function (or `wsgi` on an ASGI app) imports fine, and then every
request is a 500. sockact still serves it (a wrapper may hide an app's real shape), but `sockact
check` and each worker's start log warn, naming the app and the fix.
"""

from __future__ import annotations

import subprocess

import pytest
from conftest import SOCKACT, base_env, http_get


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SOCKACT, "check", *args], env=base_env(), capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)


def test_check_warns_when_a_wsgi_function_is_set_to_be_served_as_asgi():
    result = check("--interface", "asgi", "testapps:echo_bare")
    assert result.returncode == 0, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "warning" in x]
    assert line.startswith("sockact: warning: app testapps:echo_bare: interface is 'asgi'"), line
    assert "2 arguments" in line and "interface = 'wsgi' or 'auto'" in line, line


def test_check_warns_when_an_asgi_app_is_set_to_be_served_as_wsgi():
    result = check("--interface", "wsgi", "asgiapps:echo")
    assert result.returncode == 0, result.stderr
    assert "sockact: warning: app asgiapps:echo: interface is 'wsgi'" in result.stderr, result.stderr


@pytest.mark.parametrize(("interface", "app"), [
    ("auto", "testapps:echo_bare"), ("wsgi", "testapps:echo_bare"), ("asgi", "asgiapps:echo"),
    ("auto", "asgiapps:echo"),
])
def test_check_says_nothing_when_the_interface_fits(interface, app):
    result = check("--interface", interface, app)
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr


def test_a_worker_warns_at_start_and_the_requests_still_get_the_500(start_sockact):
    server = start_sockact("--interface", "asgi", "--workers", "1", "testapps:echo_bare", workers=1)
    assert http_get(server.port, "/")[0] == 500
    assert "testapps:echo_bare: interface is 'asgi' but the app is a plain callable of 2 arguments" in server.output()
