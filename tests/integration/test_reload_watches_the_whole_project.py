"""--reload restarts the workers when any source file the app imports from the project changes.

A Django project is laid out as its settings package (mysite/, with wsgi.py) beside its apps
(polls/, notes/...), each a package of its own that the app imports. An edit to polls/views.py is
the commonest edit of all. gunicorn's --reload watches every module the app loaded, and
docs/from-gunicorn.md says sockact's has the same meaning.

sockact watches the directory the app is found on (the project), so the edit is seen.
"""

from __future__ import annotations

import time

from conftest import http_get

WSGI = """\
from polls.views import answer


def application(environ, start_response):
    body = answer().encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def test_an_edit_to_a_sibling_app_package_reloads(tmp_path, start_sockact):
    root = tmp_path / "project"
    for package in ("mysite", "polls"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "mysite" / "wsgi.py").write_text(WSGI)
    views = root / "polls" / "views.py"
    views.write_text('def answer():\n    return "one"\n')
    server = start_sockact("--chdir", str(root), "--reload", "--workers", "1", "mysite.wsgi:application",
                           workers=1)
    assert http_get(server.port, "/")[2] == b"one"
    views.write_text('def answer():\n    return "two"\n')
    deadline = time.monotonic() + 10  # the scan runs each second
    while http_get(server.port, "/")[2] != b"two":
        assert time.monotonic() < deadline, server.output()[-1000:]
        time.sleep(0.2)
