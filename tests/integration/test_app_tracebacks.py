"""An app that fails at import shows where: its file, line and code in `sockact check`, in the log (one
record, with the traceback) and in a failed `sockact reload`, against the real sockact process."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import SOCKACT, base_env, free_port

# A Django-like project whose app's models.py fails at import, two modules below the WSGI module.
WSGI = ("from mysite import models\n\ndef application(environ, start_response):\n"
        "    start_response('200 OK', [])\n    return [b'ok']\n")
MODELS = "def helper():\n    return 1\n\n\nLIMIT = helper() / 0\n"
BROKEN = {
    "division": (MODELS, 'line 5: LIMIT = helper() / 0', "ZeroDivisionError: division by zero"),
    "syntax": ("def helper(:\n    return 1\n", "line 1: def helper(:", "SyntaxError: "),
    "missing module": ("import nosuchthing_here\n", "line 1: import nosuchthing_here",
                       "ModuleNotFoundError: No module named 'nosuchthing_here'"),
    # Raised inside the standard library: the line is the app's that called it, not <frozen os>'s.
    "unset variable": ('import os\n\nDATABASE_URL = os.environ["SOCKACT_TEST_UNSET"]\n',
                       'line 3: DATABASE_URL = os.environ["SOCKACT_TEST_UNSET"]', "KeyError: 'SOCKACT_TEST_UNSET'"),
    "stdlib": ('import json\n\nCONFIG = json.loads("{not json")\n', 'line 3: CONFIG = json.loads("{not json")',
               "json.decoder.JSONDecodeError: "),
}


def project(tmp_path: Path, models: str) -> Path:
    root = tmp_path / "project"
    (root / "mysite").mkdir(parents=True, exist_ok=True)
    (root / "mysite" / "__init__.py").write_text("")
    (root / "mysite" / "wsgi.py").write_text(WSGI)
    (root / "mysite" / "models.py").write_text(models)
    return root


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SOCKACT, *args], env=base_env(**(env or {})), capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_check_shows_the_traceback_and_the_innermost_frame(tmp_path, kind):
    models, where, error = BROKEN[kind]
    root = project(tmp_path, models)
    result = run_cli("check", "mysite.wsgi", "--chdir", str(root))
    assert result.returncode == 5, result.stderr
    path = root / "mysite" / "models.py"
    # the traceback as Python prints it, then sockact's one line, which names the frame too
    assert f'File "{path}", line' in result.stderr, result.stderr
    assert error in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("sockact: error: app 'mysite.wsgi:application': importing mysite.wsgi ")
    assert last.endswith(f"; at {path}, {where}"), last


def test_the_log_has_the_traceback_in_one_record(tmp_path):
    root = project(tmp_path, MODELS)
    for extra in ((), ("--preload",)):
        result = run_cli("run", "mysite.wsgi", "--chdir", str(root), "--workers", "1",
                         "--bind", f"127.0.0.1:{free_port()}", *extra)
        assert result.returncode == 5, result.stderr
        path = root / "mysite" / "models.py"
        # one record: its header line, then the traceback's lines, with no record header among them
        record = re.search(r"^\[\d+\] ERROR sockact(\.supervisor)?: (worker \d+ cannot start: )?app 'mysite.wsgi:"
                           r"application': .*; at (?P<at>.*)\nTraceback \(most recent call last\):\n"
                           r"(?P<tb>(?:(?!\[\d+\] ).*\n)*?)ZeroDivisionError: division by zero$",
                           result.stderr, re.M)
        assert record, result.stderr
        assert record["at"] == f"{path}, line 5: LIMIT = helper() / 0"
        assert f'File "{path}", line 5, in <module>' in record["tb"]
        assert f'File "{root / "mysite" / "wsgi.py"}", line 1, in <module>' in record["tb"]
        assert "importlib" not in record["tb"] and "apploader" not in record["tb"]


def test_workers_that_fail_alike_log_the_traceback_once(tmp_path):
    """Four workers import the same broken code at once: one traceback, then a line for each of the others."""
    met = tmp_path / "met"
    met.mkdir()
    # Each worker waits for the other three before it fails, so that all four fail together, as they do
    # when the import is quick; and each fails before the quick stop (SIGQUIT) that the first one's exit brings.
    barrier = ("import signal\nsignal.signal(signal.SIGQUIT, signal.SIG_IGN)\n"
               f"import os, pathlib, time\nmet = pathlib.Path({str(met)!r})\n(met / str(os.getpid())).touch()\n"
               "deadline = time.monotonic() + 10\n"
               "while len(list(met.iterdir())) < 4 and time.monotonic() < deadline:\n    time.sleep(0.01)\n")
    root = project(tmp_path, barrier + MODELS)
    result = run_cli("run", "mysite.wsgi", "--chdir", str(root), "--workers", "4", "--bind", f"127.0.0.1:{free_port()}")
    assert result.returncode == 5, result.stderr
    assert result.stderr.count("Traceback (most recent call last):") == 1, result.stderr
    assert result.stderr.splitlines().count("ZeroDivisionError: division by zero") == 1, result.stderr
    failed = re.findall(r"^\[\d+\] (\w+) sockact.supervisor: worker (\d+) cannot start: (.*)$", result.stderr, re.M)
    assert len(failed) == 4, result.stderr
    (level, first, _), *others = failed
    assert level == "ERROR"
    assert others == [("INFO", pid, f"the same failure as worker {first}") for _, pid, _ in others], result.stderr
    assert "the app failed to load" in result.stderr and "died while starting" not in result.stderr


def test_a_failed_reload_names_the_file_and_line(start_sockact, tmp_path):
    root = project(tmp_path, "LIMIT = 1\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {"RUNTIME_DIRECTORY": str(run_dir)}
    server = start_sockact("mysite.wsgi", "--chdir", str(root), "--workers", "1", env=env, workers=1)
    (root / "mysite" / "models.py").write_text(MODELS)
    done = subprocess.run([*SOCKACT, "reload", "--pid", str(server.pid), "--max-wait", "30"],
                          env=base_env(**env), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    path = root / "mysite" / "models.py"
    assert "the new code does not load" in done.stderr, done.stderr
    assert f"at {path}, line 5: LIMIT = helper() / 0" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    server.wait_for_log("ZeroDivisionError: division by zero")
    # a reload tried again, with the code still broken, logs the traceback again: it is said once a generation
    again = subprocess.run([*SOCKACT, "reload", "--pid", str(server.pid), "--max-wait", "30"],
                           env=base_env(**env), capture_output=True, text=True, timeout=60)
    assert again.returncode == 1, again.stderr
    server.waiting(lambda: server.output().splitlines().count("ZeroDivisionError: division by zero") == 2,
                   "the second reload's traceback")


# Stands in for journald (the system test sees the real one): systemd.journal.sendv, writing each
# record's fields as one JSON line.
FAKE_JOURNAL = '''\
import json, os

def sendv(*items):
    fields = dict(item.split("=", 1) for item in items if isinstance(item, str))
    with open(os.environ["JOURNAL_RECORDS"], "a") as fh:
        fh.write(json.dumps(fields) + "\\n")
'''


def test_the_journal_gets_the_traceback_as_one_entry_at_error_priority(tmp_path):
    import json

    root = project(tmp_path, MODELS)
    fake = tmp_path / "fake" / "systemd"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "journal.py").write_text(FAKE_JOURNAL)
    records = tmp_path / "journal.jsonl"
    env = base_env()
    env["PYTHONPATH"] = f"{fake.parent}:{env['PYTHONPATH']}"
    env["JOURNAL_RECORDS"] = str(records)
    result = subprocess.run([*SOCKACT, "run", "mysite.wsgi", "--chdir", str(root), "--workers", "1",
                             "--log-target", "journal", "--bind", f"127.0.0.1:{free_port()}"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 5, result.stderr
    entries = [json.loads(line) for line in records.read_text().splitlines()]
    failed = [e for e in entries if "cannot start" in e["MESSAGE"]]
    assert len(failed) == 1, entries
    (entry,) = failed
    path = root / "mysite" / "models.py"
    assert entry["PRIORITY"] == "3" and entry["SOCKACT_WORKER_PID"] != ""
    first, *rest = entry["MESSAGE"].splitlines()
    assert first.endswith(f"; at {path}, line 5: LIMIT = helper() / 0")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ZeroDivisionError: division by zero"
    assert f'  File "{path}", line 5, in <module>' in rest
    # and the supervisor's own error, on which it stops, says where too
    halted = [e for e in entries if "the app failed to load" in e["MESSAGE"]]
    assert len(halted) == 1 and halted[0]["PRIORITY"] == "3"
    assert f"at {path}, line 5: LIMIT = helper() / 0" in halted[0]["MESSAGE"]


def test_check_fails_an_app_whose_import_ends_its_process(tmp_path):
    # os._exit(0) at import (a stray fork, a library's "exit if not configured") leaves no traceback
    # and exit code 0: a worker would die at start over and over, so check must not say it loads.
    root = project(tmp_path, "import os\nos._exit(0)\n")
    result = run_cli("check", "mysite.wsgi", "--chdir", str(root))
    assert result.returncode == 5, (result.stdout, result.stderr)
    assert "imports and is callable" not in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last == ("sockact: error: importing the app ended its process (exit code 0) before the app "
                    "loaded; look for os._exit() or a fork at import"), last


def test_check_gives_up_on_an_import_that_hangs_after_timeout(tmp_path):
    # As a worker's start is killed at `timeout`, so is check's import: a deploy script is told, not hung.
    root = project(tmp_path, "import time\ntime.sleep(600)\n")
    result = run_cli("check", "mysite.wsgi", "--chdir", str(root), "--timeout", "1")
    assert result.returncode == 5, (result.stdout, result.stderr)
    last = result.stderr.strip().splitlines()[-1]
    assert last == ("sockact: error: importing the app took longer than timeout (1s), which would kill "
                    "a worker at start too; killed it"), last
