"""docs/deploy.md, "Serve your app", followed step by step on a clean Debian 12 and 13 with the .deb.

One container serves both of the page's apps. The fixture installs the package with apt, then
walks the page in order: it writes each file that a block names in its first line, and runs
each ``sh`` block as root. The tests then use what the page says is served: the Flask app on
127.0.0.1:8080 writes to and reads from sqlite, the Django admin takes a login with a CSRF POST
over the instance's Unix socket, a deploy is reloaded, the page's sandboxed check tells an
app under /home apart, and an app of the Django project that fails at import is named by file
and line in `sockact check`, a failed reload and `journalctl -u`, while the old workers serve.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
import uuid
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from debpkg import installed
from debroot import SUITES
from nspawn import Container
from sysclient import UnixHTTPConnection, wait_for
from sysdeploy import steps

pytestmark = [pytest.mark.system, pytest.mark.slow]

PAGE = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
PORT = 8080  # where the page's Flask app is served: the packaged sockact.socket
DJANGO_SOCKET = "/run/sockact/mysite.sock"


@pytest.fixture(scope="module", params=SUITES)
def box(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """A clean Debian root with the .deb installed and every step of the page done."""
    with installed(tmp_path_factory.mktemp("deb"), request.param) as booted:
        for where, text in steps(PAGE):
            if where == "sh":
                booted.run(["sh", "-ec", text], env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=600)
            else:
                booted.write(where, text)
        yield booted


def _flask(method: str, path: str, body: str | None = None) -> tuple[int, Any]:
    """Status and JSON body (the text when it is not JSON) of one request to the Flask app."""
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "text/plain"} if body else {})
        response = conn.getresponse()
        text = response.read().decode()
    finally:
        conn.close()
    return response.status, json.loads(text) if response.getheader("Content-Type") == "application/json" else text


def test_the_flask_app_writes_to_sqlite_in_its_state_directory(box: Container) -> None:
    status, created = _flask("POST", "/notes", "written by the test")
    assert status == 201, created
    assert _flask("GET", f"/notes/{created['id']}") == (200, {"id": created["id"], "text": "written by the test"})
    assert _flask("GET", "/notes/99999")[0] == 404
    # the page's own curl wrote note 1 during the walk
    assert _flask("GET", "/notes/1") == (200, {"id": 1, "text": "first note"})
    # the database is where StateDirectory= put it, owned by the service's dynamic user
    db = box.path("/var/lib/private/flaskapp/notes.db")
    assert db.is_file() and db.stat().st_uid != 0


def test_a_deploy_is_served_after_a_reload(box: Container) -> None:
    app = "/srv/flaskapp/app.py"
    code = box.path(app).read_text()
    try:
        box.write(app, code + '\n\n@app.get("/version")\ndef version():\n    return {"version": 2}\n')
        assert _flask("GET", "/version")[0] == 404  # the running workers have the old code
        box.systemctl("reload", "sockact.service")  # returns once the new workers serve
        assert _flask("GET", "/version") == (200, {"version": 2})
        assert _flask("GET", "/notes/1")[0] == 200  # the data stayed
    finally:
        box.write(app, code)


def test_a_flask_traceback_is_one_journal_entry_at_err(box: Container) -> None:
    app = "/srv/flaskapp/app.py"
    code = box.path(app).read_text()
    marker = f"broken-{uuid.uuid4().hex[:8]}"
    try:
        box.write(app, code + f'\n\n@app.get("/broken")\ndef broken():\n    raise RuntimeError("{marker}")\n')
        box.systemctl("reload", "sockact.service")
        assert _flask("GET", "/broken")[0] == 500  # Flask's own error page
    finally:
        box.write(app, code)
        box.systemctl("reload", "sockact.service")

    def logged() -> list[dict]:
        out = box.run(["journalctl", "-u", "sockact.service", "-p", "err", "-o", "json"]).stdout
        return [r for r in map(json.loads, out.splitlines()) if marker in str(r.get("MESSAGE"))]

    # Flask logs the exception to wsgi.errors: the whole traceback in one entry, at priority 3
    records = wait_for(logged, timeout=30, what="Flask's traceback in the journal")
    assert len(records) == 1, records
    assert records[0]["PRIORITY"] == "3", records
    message = records[0]["MESSAGE"]
    assert "Traceback (most recent call last)" in message and f"RuntimeError: {marker}" in message, message


def _django(box: Container, method: str, path: str, *, cookies: SimpleCookie,
            form: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, str]:
    """One request to the Django instance over its Unix socket; its cookies are kept in ``cookies``."""
    conn = UnixHTTPConnection(str(box.path(DJANGO_SOCKET)), timeout=30)
    headers = {"Host": "localhost"}
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={m.value}" for k, m in cookies.items())
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode()
    finally:
        conn.close()
    for value in response.headers.get_all("Set-Cookie") or []:
        cookies.load(value)
    return response, text


def test_the_django_admin_takes_a_login_with_a_csrf_post(box: Container) -> None:
    cookies: SimpleCookie = SimpleCookie()
    page, html = _django(box, "GET", "/admin/login/?next=/admin/", cookies=cookies)
    assert page.status == 200, html
    assert "csrftoken" in cookies, page.headers
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert token, html
    # the page created the administrator with this password
    password = re.search(r"DJANGO_SUPERUSER_PASSWORD='([^']+)'", PAGE.read_text())
    assert password
    form = {"csrfmiddlewaretoken": token.group(1), "username": "admin", "password": password.group(1),
            "next": "/admin/"}
    login, html = _django(box, "POST", "/admin/login/?next=/admin/", cookies=cookies, form=form)
    assert login.status == 302, html
    assert login.headers["Location"] == "/admin/"
    assert "sessionid" in cookies, login.headers
    admin, html = _django(box, "GET", "/admin/", cookies=cookies)
    assert admin.status == 200 and "Site administration" in html, html
    # the session row went to the database in the writable data directory, as user mysite
    db = box.path("/srv/mysite/data/db.sqlite3")
    assert db.stat().st_uid == int(box.run("id -u mysite").stdout)


def _sandboxed_check(page_line: str, config: str) -> str:
    return page_line.replace("/etc/sockact/sockact.toml", config)


def _page_check() -> str:
    """The page's systemd-run line for the Flask app."""
    return next(text for where, text in steps(PAGE) if where == "sh" and "systemd-run" in text)


def test_the_sandboxed_check_passes_the_django_instance_with_its_own_lines(box: Container) -> None:
    # as the page says: the drop-in's user and writable directory instead of the dynamic user
    check = (_page_check().replace("-p DynamicUser=yes -p User=sockact", "-p User=mysite -p Group=mysite")
             .replace("-p LogsDirectory=sockact -p StateDirectory=flaskapp",
                      "-p ReadWritePaths=/srv/mysite/data -p LogsDirectory=sockact-mysite")
             .replace("/etc/sockact/sockact.toml", "/etc/sockact/mysite.toml"))
    done = box.run(["sh", "-c", check], check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# app mysite.wsgi:application: imports and is callable" in done.stdout


HOME_APP = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"served from a home directory\\n"]
"""


def test_the_sandboxed_check_fails_an_app_under_home_with_a_clear_reason(box: Container) -> None:
    box.run("mkdir -p /home/alice/site && python3 -m venv /home/alice/site/.venv")
    box.write("/home/alice/site/hello.py", HOME_APP)
    config = "/etc/sockact/homeapp.toml"
    box.write(config, 'app = "hello:app"\nchdir = "/home/alice/site"\nvirtualenv = "/home/alice/site/.venv"\n')
    # as root, outside the sandbox, the check passes
    assert "# app hello:app: imports and is callable" in box.run(["sockact", "check", "--config", config]).stdout
    # inside the service's sandbox /home is empty, and the check says so
    check = _sandboxed_check(_page_check(), config)
    hidden = box.run(["sh", "-c", check], check=False)
    assert hidden.returncode == 2, hidden.stdout + hidden.stderr
    assert ("virtualenv /home/alice/site/.venv: /home/alice is not there; in the service's sandbox "
            "(ProtectHome=yes) /home is empty") in hidden.stderr, hidden.stderr
    # with ProtectHome=read-only after the others, as the page suggests, it passes
    read_only = check.replace("/usr/bin/sockact check", "-p ProtectHome=read-only /usr/bin/sockact check")
    visible = box.run(["sh", "-c", read_only], check=False)
    assert visible.returncode == 0, visible.stdout + visible.stderr
    assert "# app hello:app: imports and is callable" in visible.stdout
    # a home closed to other users (mode 0700, as many systems create them) is named as such
    box.run("chmod 0700 /home/alice")
    closed = box.run(["sh", "-c", read_only], check=False)
    assert closed.returncode == 2, closed.stdout + closed.stderr
    assert "virtualenv /home/alice/site/.venv: /home/alice is closed to this user (uid " in closed.stderr, \
        closed.stderr


def test_a_django_error_is_one_journal_entry_at_err(box: Container) -> None:
    # a Host that is not in ALLOWED_HOSTS: Django answers 400 and logs an error. The name is this
    # test's own, so that the journal is searched without a cursor (journalctl 252 skips matching
    # entries after a cursor when -p is given).
    host = f"evil-{uuid.uuid4().hex[:8]}.example"
    conn = UnixHTTPConnection(str(box.path(DJANGO_SOCKET)), timeout=30)
    try:
        conn.request("GET", "/admin/login/", headers={"Host": host})
        assert conn.getresponse().status == 400
    finally:
        conn.close()

    def logged() -> list[dict]:
        out = box.run(["journalctl", "-u", "sockact@mysite.service", "-p", "err", "-o", "json"]).stdout
        return [r for r in map(json.loads, out.splitlines()) if host in str(r.get("MESSAGE"))]

    records = wait_for(logged, timeout=30, what="Django's DisallowedHost error in the journal")
    assert len(records) == 1, records
    record = records[0]
    assert (record["PRIORITY"], record["SYSLOG_IDENTIFIER"], record["LOGGER"]) == (
        "3", "mysite", "django.security.DisallowedHost"), record
    assert record["MESSAGE"].startswith(f"Invalid HTTP_HOST header: '{host}'."), record


BROKEN_MODELS = "def helper():\n    return 1\n\n\nLIMIT = helper() / 0\n"
MODELS = "/srv/mysite/notes/models.py"
WHERE = f"{MODELS}, line 5: LIMIT = helper() / 0"


def test_an_import_time_error_in_a_django_models_py_is_named_by_file_and_line(box: Container) -> None:
    # the page's project, with an app whose models.py fails at import, as most failed Django deploys do
    settings = "/srv/mysite/mysite/production.py"
    production = box.path(settings).read_text()
    cookies: SimpleCookie = SimpleCookie()
    assert _django(box, "GET", "/admin/login/", cookies=cookies)[0].status == 200
    cursor = box.run("journalctl -n 0 --show-cursor -q").stdout.strip().removeprefix("-- cursor: ")
    box.write("/srv/mysite/notes/__init__.py", "")
    box.write(MODELS, BROKEN_MODELS)
    box.write(settings, production + '\nINSTALLED_APPS = [*INSTALLED_APPS, "notes"]\n')
    try:
        check = box.run(["sockact", "check", "--config", "/etc/sockact/mysite.toml"], check=False)
        assert check.returncode == 5, check.stdout + check.stderr
        assert f'File "{MODELS}", line 5, in <module>' in check.stderr, check.stderr
        reload = box.systemctl("reload", "sockact@mysite.service", check=False)
        assert reload.returncode != 0
        assert _django(box, "GET", "/admin/login/", cookies=cookies)[0].status == 200, "the old workers serve"
        status = box.show("sockact@mysite.service", "StatusText")
        assert WHERE in status, status

        def logged() -> str | None:
            text = box.run(["journalctl", "-u", "sockact@mysite.service", "--no-pager",
                            f"--after-cursor={cursor}"]).stdout
            return text if f'File "{MODELS}", line 5' in text and "reload failed" in text else None

        text = wait_for(logged, timeout=30, what="the file and line in journalctl -u")
        assert WHERE in text, text
    finally:
        box.write(settings, production)
        box.remove("/srv/mysite/notes")
    assert box.systemctl("reload", "sockact@mysite.service", check=False).returncode == 0
