"""An app that raises at import, under a real systemd: its file and line in the journal (one entry at
error priority, with the traceback), in `sockact check`, and in a failed `systemctl reload` (the
ExecReload= command's line in the journal, and the unit's status line), while the old workers serve."""

from __future__ import annotations

from sysclient import wait_for
from sysdeploy import APPS_DIR, CONFIG, Deployment, messages

# A Django-shaped project: the WSGI module imports an app's models, whose import-time code fails.
WSGI = '''\
from mysite.notes import models

def application(environ, start_response):
    body = f"limit={models.LIMIT}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''
GOOD_MODELS = "LIMIT = 10\n"
BROKEN_MODELS = "def helper():\n    return 1\n\n\nLIMIT = helper() / 0\n"
MODELS = f"{APPS_DIR}/mysite/notes/models.py"
WHERE = f"{MODELS}, line 5: LIMIT = helper() / 0"


def deploy(sockact: Deployment, models: str) -> None:
    for package in ("mysite", "mysite/notes"):
        sockact.write(f"{APPS_DIR}/{package}/__init__.py", "")
    sockact.write(f"{APPS_DIR}/mysite/wsgi.py", WSGI)
    sockact.write(MODELS, models)
    sockact.use_test_apps()
    sockact.config('app = "mysite.wsgi:application"\nworkers = 2\n')


def test_a_failed_reload_names_the_file_and_line_and_the_old_workers_serve(sockact: Deployment):
    deploy(sockact, GOOD_MODELS)
    sockact.start()
    assert sockact.get("/").text == "limit=10"
    # The first worker answers while the second may still import the app: the broken file must wait
    # for both, or the second fails to start, which halts a service that never was ready.
    wait_for(lambda: sockact.show("ActiveState") == "active", 30, what="the service to be ready")
    sockact.write(MODELS, BROKEN_MODELS)
    reload = sockact.c.systemctl("reload", "sockact.service", check=False)
    assert reload.returncode != 0
    assert sockact.get("/").text == "limit=10", "the old workers keep serving"
    status = sockact.show("StatusText")
    assert status.startswith("reload failed: the new code does not load") and WHERE in status, status

    def reload_said(records: list[dict]) -> list[dict]:
        return [r for r in records if str(r.get("MESSAGE", "")).startswith("sockact: reload failed: ")]

    def tracebacks_in(records: list[dict]) -> list[dict]:
        return [r for r in records if "cannot start" in str(r.get("MESSAGE", ""))]

    # journald writes a little after the sender: wait for both kinds of entry
    records = wait_for(lambda: (r := sockact.journal()) and reload_said(r) and tracebacks_in(r) and r, 30,
                       what="the reload's line and the workers' tracebacks in the journal")
    # ExecReload=: `sockact reload` says why on stderr, which the journal keeps
    said = reload_said(records)
    assert WHERE in said[0]["MESSAGE"], messages(records)
    # each new worker's traceback: one entry at error priority
    # the first new worker's traceback: one entry at error priority; a worker that fails alike after it
    # says so in one line, at info, naming the first
    alike = [r for r in tracebacks_in(records) if "the same failure as worker" in str(r["MESSAGE"])]
    tracebacks = [r for r in tracebacks_in(records) if r not in alike]
    assert len(tracebacks) == 1, messages(records)
    assert all(r["PRIORITY"] == "6" and len(str(r["MESSAGE"]).splitlines()) == 1 for r in alike), messages(records)
    for entry in tracebacks:
        assert entry["PRIORITY"] == "3" and entry["_TRANSPORT"] == "journal"
        lines = entry["MESSAGE"].splitlines()
        assert lines[0].endswith(f"; at {WHERE}") and lines[1] == "Traceback (most recent call last):"
        assert f'  File "{MODELS}", line 5, in <module>' in lines
        assert lines[-1] == "ZeroDivisionError: division by zero"
    # and in journalctl -u's own words
    text = sockact.c.run(["journalctl", "-u", "sockact.service", "--no-pager",
                          f"--after-cursor={sockact.cursor}"]).stdout
    assert f'File "{MODELS}", line 5' in text


def test_check_and_a_failed_start_name_the_file_and_line(sockact: Deployment):
    deploy(sockact, BROKEN_MODELS)
    check = sockact.c.run(["/usr/bin/sockact", "check", "--config", CONFIG], check=False,
                          env={"PYTHONPATH": APPS_DIR})
    assert check.returncode == 5
    assert f'File "{MODELS}", line 5, in <module>' in check.stderr
    assert check.stderr.strip().splitlines()[-1].endswith(f"; at {WHERE}")

    sockact.start()
    sockact.get("/")  # activates the service: 503, then it stops
    wait_for(lambda: sockact.show("ActiveState") == "failed", 30, what="the service to fail")
    halted = wait_for(lambda: [r for r in sockact.journal() if "the app failed to load" in str(r.get("MESSAGE", ""))],
                      30, what="the halt in the journal")
    assert halted[0]["PRIORITY"] == "3" and WHERE in halted[0]["MESSAGE"]
