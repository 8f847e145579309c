"""sockact under a real systemd: activation, status, journal, reload, watchdog, timeouts, stop, drop-ins.

Each test gets sockact.socket on a free loopback port (``sockact`` fixture) and leaves the
container as it found it. Load is a bounded loop on loopback (sysclient.Load).
"""

from __future__ import annotations

import re
import socket
import time
from typing import Any

import pytest
from nspawn import free_port
from sysclient import Background, Load, Response, http_get, wait_for
from sysdeploy import REPO, Deployment, cookbook, messages

from sockact.logs.journal import MESSAGE_IDS

TEST_APP = '''
"""An app for the system tests: its version, a slow request, an endless loop, an outbound connect."""
import os
import socket
import time
from urllib.parse import parse_qs

VERSION = "{version}"


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/slow":
        time.sleep(float(query.get("s", ["3"])[0]))
        body = "slow done"
    elif path == "/spin":
        while True:
            pass
    elif path == "/net":
        try:
            socket.create_connection(("127.0.0.1", int(query["port"][0])), timeout=2).close()
            body = "connected"
        except OSError as exc:
            body = f"no network: {{exc}}"
    else:
        body = f"{{VERSION}} pid={{os.getpid()}}"
    data = body.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
'''

ACCESS_FIELDS = ("SOCKACT_CONN_ID", "REMOTE_ADDR", "HTTP_METHOD", "HTTP_PATH", "HTTP_STATUS",
                 "DURATION_US", "BYTES_SENT")
COMMON_FIELDS = ("PRIORITY", "SYSLOG_IDENTIFIER", "SOCKACT_WORKER_PID", "SOCKACT_LISTENER")


def serve_test_app(sockact: Deployment, version: str = "v1", *, unit: str = "sockact.service",
                   config: str = "", **env: str) -> None:
    """Configure sockact.service to serve TEST_APP (module sockact_testapp) and start the socket."""
    sockact.app("sockact_testapp", TEST_APP.format(version=version))
    sockact.use_test_apps(unit, **env)
    sockact.config(f'app = "sockact_testapp:app"\n{config}')
    sockact.start()


def sockact_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records the service's processes sent through the journal API (not systemd's own about
    the unit, which come from init.scope, nor raw stderr lines)."""
    return [r for r in records
            if r.get("_TRANSPORT") == "journal" and r.get("_SYSTEMD_UNIT", "").startswith("sockact")]


def with_message_id(records: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("MESSAGE_ID") == MESSAGE_IDS[event]]


def pid_of(response: Response) -> int:
    return int(re.search(r"pid=(\d+)", response.text).group(1))


# -- activation and status


def test_first_request_activates_the_service(sockact: Deployment):
    sockact.start()
    assert sockact.show("ActiveState") == "inactive", "the service must wait for a connection"
    response = sockact.get("/")
    assert response.status == 200
    assert "Served by sockact" in response.text  # the shipped config serves the demo app
    # a first worker may answer before the last is ready and READY=1 is sent
    wait_for(lambda: (sockact.show("ActiveState"), sockact.show("SubState")) == ("active", "running"), 30,
             what="the service active (running)")
    status = wait_for(lambda: sockact.show("StatusText"), 30, what="a STATUS= line")
    assert re.search(r"\d+ workers", status), status
    out = sockact.c.systemctl("status", "--no-pager", "--lines=0", "sockact.service", check=False).stdout
    assert "Active: active (running)" in out
    assert re.search(r'Status: "\d+ workers \(\d+ busy\)', out), out
    # it runs with the shipped sandbox: a dynamic user, and no writable+executable memory
    uid = int(sockact.c.run(["ps", "-o", "uid=", "-p", str(sockact.main_pid())]).stdout)
    assert 61184 <= uid <= 65519, f"not a DynamicUser= uid: {uid}"
    assert sockact.show("MemoryDenyWriteExecute") == "yes"
    # every request counts: the status reaches the number served (updated at most once a second)
    for _ in range(4):
        sockact.get("/")
    wait_for(lambda: re.search(r"([5-9]|\d\d+) requests", sockact.show("StatusText")), 30,
             what="the request count in STATUS=")


def test_journal_holds_structured_fields(sockact: Deployment):
    serve_test_app(sockact)
    worker_pid = pid_of(sockact.get("/hello?x=1"))
    main_pid = sockact.main_pid()

    def access_record() -> dict[str, Any] | None:
        found = [r for r in sockact_records(sockact.journal()) if r.get("HTTP_PATH") == "/hello?x=1"]
        return found[0] if found else None

    access = wait_for(access_record, 30, what="an access record for /hello")  # journald lags
    for field in ACCESS_FIELDS:
        assert field in access, f"access record lacks {field}: {access}"
    assert (access["HTTP_METHOD"], access["HTTP_STATUS"], access["REMOTE_ADDR"]) == ("GET", "200", "127.0.0.1")
    assert int(access["BYTES_SENT"]) > 0 and int(access["DURATION_US"]) >= 0
    assert access["SOCKACT_WORKER_PID"] == str(worker_pid) == access["_PID"]
    assert access["SOCKACT_LISTENER"] == "http"
    assert access["PRIORITY"] == "6"

    records = sockact_records(sockact.journal())
    assert records
    for record in records:
        for field in COMMON_FIELDS:
            assert field in record, f"{field} missing from {record}"
        assert record["SYSLOG_IDENTIFIER"] == "sockact"
    # a normal start raises no warning (such as a sandbox that forbids what sockact needs)
    warnings = [r for r in records if int(r["PRIORITY"]) <= 4]
    assert not warnings, messages(warnings)
    # with stderr connected to the journal, nothing falls back to plain stderr lines
    plain = [r for r in sockact.journal() if r.get("_TRANSPORT") == "stdout"]
    assert not plain, messages(plain)
    ready = with_message_id(records, "ready")
    assert ready and ready[0]["SOCKACT_WORKER_PID"] == str(main_pid)

    # the catalog explains the lifecycle messages in journalctl -x
    explained = sockact.c.run(["journalctl", "-x", "--no-pager", "-u", "sockact.service",
                               f"MESSAGE_ID={MESSAGE_IDS['ready']}"]).stdout
    assert "Subject: sockact is ready and serving" in explained
    assert "Defined-By: sockact" in explained


# -- reload, watchdog, timeout, stop


def test_reload_serves_new_code_without_failing_a_request(sockact: Deployment):
    serve_test_app(sockact, "v1", config="workers = 3\n")
    assert sockact.get("/").text.startswith("v1")
    main_pid = sockact.main_pid()
    # The load outlives the waits below (10 + 15 + 10 s) on a slow machine; the test stops it itself.
    with Load(sockact.port, threads=4, max_requests=20000, max_seconds=60) as load:
        wait_for(lambda: load.outcomes["ok"] >= 50, 10, what="the load to get going")
        sockact.app("sockact_testapp", TEST_APP.format(version="v2"))
        sockact.c.systemctl("reload", "sockact.service")
        wait_for(lambda: sockact.get("/").text.startswith("v2"), 15, what="v2 to be served")
        served = load.total
        wait_for(lambda: load.total >= served + 50, 10, what="more load after the reload")
    print(f"reload: load {dict(load.outcomes)}, first {load.bodies[0]!r}, last {load.bodies[-1]!r}")
    assert load.failures == 0, (load.outcomes, load.errors)
    assert load.bodies[0].startswith("v1") and load.bodies[-1].startswith("v2")
    assert sockact.main_pid() == main_pid, "a reload must not restart the supervisor"
    wait_for(lambda: with_message_id(sockact_records(sockact.journal()), "reload"), 30, what="the reload record")


def test_watchdog_restarts_a_stopped_supervisor_and_no_connection_is_refused(sockact: Deployment):
    watchdog_sec = 3
    sockact.dropin("sockact.service", "50-test-watchdog.conf", f"[Service]\nWatchdogSec={watchdog_sec}s\n")
    serve_test_app(sockact)
    sockact.get("/")
    old_pid = sockact.main_pid()
    with Load(sockact.port, threads=3, max_requests=3000, max_seconds=30, timeout=20) as load:
        wait_for(lambda: load.outcomes["ok"] >= 20, 10, what="the load to get going")
        sockact.c.run(["kill", "-STOP", str(old_pid)])
        stopped_at = time.monotonic()

        # Timed to the new main process, not to its READY=1: how long a boot takes on a loaded machine
        # is no part of the watchdog's behaviour.
        wait_for(lambda: sockact.main_pid() not in (0, old_pid), watchdog_sec + 10, interval=0.05,
                 what="the watchdog restart")
        took = time.monotonic() - stopped_at
        wait_for(lambda: sockact.show("SubState") == "running", 30, what="the new supervisor running")
        served = load.outcomes["ok"]
        wait_for(lambda: load.outcomes["ok"] >= served + 20, 10, what="load served after the restart")
    print(f"watchdog: restarted {took:.2f}s after SIGSTOP; load {dict(load.outcomes)}")
    # the watchdog's interval, TimeoutAbortSec=1s to kill the stopped supervisor, RestartSec=, a margin
    restart_sec = float(sockact.show("RestartUSec").removesuffix("s"))
    assert took <= watchdog_sec + 1 + restart_sec + 1, f"restarted {took:.1f}s after SIGSTOP"
    assert load.outcomes["refused"] == 0, (load.outcomes, load.errors)
    # only requests already inside the frozen supervisor may be lost, at most one per client
    assert load.failures <= 3, (load.outcomes, load.errors)
    assert sockact.show("NRestarts") == "1"
    systemd_says = messages(sockact.journal())
    assert "Watchdog timeout" in systemd_says, systemd_says


def served_meanwhile(sockact: Deployment, stuck: Background) -> list[int]:
    """The statuses of GET / sent one after another while ``stuck`` waits for its answer (at most 200)."""
    others = []
    while stuck.running and len(others) < 200:
        others.append(sockact.get("/").status)
        time.sleep(0.02)
    stuck.join()
    return others


def test_a_worker_stuck_past_timeout_is_killed_and_the_others_serve(sockact: Deployment):
    serve_test_app(sockact, SOCKACT_TIMEOUT="2", SOCKACT_WORKERS="3")
    sockact.get("/")
    main_pid = sockact.main_pid()
    stuck = Background(sockact.port, "/spin")
    others = served_meanwhile(sockact, stuck)
    print(f"timeout: stuck request ended after {stuck.seconds:.2f}s: {stuck.response or stuck.error!r}; "
          f"{len(others)} others served")
    assert others and set(others) == {200}, others
    assert stuck.seconds <= 2 + 4, f"the stuck request ended after {stuck.seconds:.1f}s"
    if stuck.response:
        assert stuck.response.status >= 500, stuck.response
    killed = wait_for(lambda: with_message_id(sockact_records(sockact.journal()), "worker_timeout"), 30,
                      what="the worker_timeout record")
    assert "/spin" in killed[0]["MESSAGE"], "the log names the request the worker was stuck on"
    # SIGABRT made the worker print where it was stuck (faulthandler, on stderr, so in the journal)
    stacks = [r for r in sockact.journal() if r.get("_TRANSPORT") == "stdout"]
    assert any("sockact_testapp.py" in str(r.get("MESSAGE")) for r in stacks), messages(stacks)
    assert sockact.main_pid() == main_pid and sockact.show("NRestarts") == "0"
    assert pid_of(sockact.get("/")) != int(killed[0]["SOCKACT_WORKER_PID"])


def test_stop_lets_a_slow_request_finish(sockact: Deployment):
    serve_test_app(sockact)
    sockact.get("/")
    # Long enough that it is still running when the stop begins, however long the wait below took
    slow = Background(sockact.port, "/slow?s=10", timeout=30)
    wait_for(lambda: "(1 busy)" in sockact.show("StatusText"), 6, what="the slow request to be in a worker")
    began = time.monotonic()
    sockact.c.systemctl("stop", "sockact.service")
    stop_took = time.monotonic() - began
    slow.join()
    print(f"stop: took {stop_took:.2f}s; {slow.response or slow.error!r}")
    assert slow.response and (slow.response.status, slow.response.text) == (200, "slow done"), slow.error
    assert stop_took >= 1.0, "stop returned before the request could have finished"
    assert sockact.show("Result") == "success"
    # journald may not have written the last records when the stop returns
    records = wait_for(lambda: (r := sockact_records(sockact.journal())) and with_message_id(r, "stop")
                       and with_message_id(r, "worker_exited") and r, 30, what="the stop's records")
    # records about a worker carry its pid, though the supervisor logs them
    exited = with_message_id(records, "worker_exited")
    assert exited and all(r["SOCKACT_WORKER_PID"] != r["_PID"] for r in exited)


def test_a_long_drain_extends_the_stop_timeout(sockact: Deployment):
    """sockact keeps systemd from killing it while requests still drain (EXTEND_TIMEOUT_USEC)."""
    sockact.dropin("sockact.service", "50-test-stop-timeout.conf", "[Service]\nTimeoutStopSec=2s\n")
    serve_test_app(sockact)
    # Long enough that what is left of it at the stop outlasts TimeoutStopSec=, however long the wait
    # took (the request starts the service, too)
    slow = Background(sockact.port, "/slow?s=15", timeout=40)
    wait_for(lambda: "(1 busy)" in sockact.show("StatusText"), 10, what="the slow request to be in a worker")
    sockact.c.systemctl("stop", "sockact.service")
    slow.join()
    assert slow.response and (slow.response.status, slow.response.text) == (200, "slow done"), slow.error
    assert sockact.show("Result") == "success", "systemd killed sockact at TimeoutStopSec="


# -- the drop-in cookbook, docs/drop-ins.md


@pytest.fixture(scope="module")
def recipes() -> dict[str, str]:
    return cookbook()


def install_recipe(sockact: Deployment, recipes: dict[str, str], path: str, **ports: int) -> str:
    """Write a recipe's file inside, its documented ports replaced by free ones."""
    text = recipes[path]
    for documented, port in ports.items():
        text = text.replace(f"127.0.0.1:{documented.removeprefix('port')}", f"127.0.0.1:{port}")
    sockact.write(path, text)
    return text


def test_cookbook_lists_every_recipe(recipes: dict[str, str]):
    assert set(recipes) == {
        "/etc/systemd/system/sockact.socket.d/listen.conf",
        "/etc/systemd/system/sockact.service.d/workers.conf",
        "/etc/systemd/system/sockact.service.d/watchdog.conf",
        "/etc/systemd/system/sockact.service.d/private-network.conf",
        "/etc/systemd/system/sockact.service.d/memory-limit.conf",
        "/etc/sockact/blog.toml",
        "/etc/systemd/system/sockact@blog.socket.d/listen.conf",
    }


def test_recipe_listen_on_another_port_and_a_unix_socket(sockact: Deployment, recipes: dict[str, str]):
    port = free_port()
    install_recipe(sockact, recipes, "/etc/systemd/system/sockact.socket.d/listen.conf", port9000=port)
    sockact.start()
    assert http_get(port, "/").status == 200
    with pytest.raises(ConnectionRefusedError):
        http_get(sockact.port, "/")  # the empty ListenStream= dropped the earlier address
    over_unix = sockact.c.run(["curl", "-sS", "--max-time", "10", "--unix-socket", "/run/sockact/sockact.sock",
                               "http://localhost/"]).stdout
    assert "Served by sockact" in over_unix


def test_recipe_more_workers(sockact: Deployment, recipes: dict[str, str]):
    install_recipe(sockact, recipes, "/etc/systemd/system/sockact.service.d/workers.conf")
    sockact.start()
    sockact.get("/")
    wait_for(lambda: sockact.show("StatusText").startswith("8 workers"), 30, what="8 workers in STATUS=")
    children = sockact.c.run(["pgrep", "-c", "-P", str(sockact.main_pid())]).stdout.strip()
    assert children == "8"


def test_recipe_watchdog(sockact: Deployment, recipes: dict[str, str]):
    install_recipe(sockact, recipes, "/etc/systemd/system/sockact.service.d/watchdog.conf")
    sockact.start()
    assert sockact.get("/").status == 200
    assert sockact.show("WatchdogUSec") == "1min"
    assert sockact.show("SubState") == "running"


def test_recipe_private_network(sockact: Deployment, recipes: dict[str, str]):
    path = "/etc/systemd/system/sockact.service.d/private-network.conf"
    assert recipes[path] == f"# {path}\n" + (REPO / "packaging/systemd/examples/private-network.conf").read_text(), \
        "the cookbook and the shipped example differ"
    with socket.create_server(("127.0.0.1", 0)) as outside:
        probe = f"/net?port={outside.getsockname()[1]}"
        serve_test_app(sockact)
        assert sockact.get(probe).text == "connected"  # without the drop-in the app reaches the host
        sockact.c.systemctl("stop", "sockact.service")
        install_recipe(sockact, recipes, path)
        sockact.daemon_reload()
        response = sockact.get(probe)  # served through the socket passed in from the host's network
    assert response.status == 200 and response.text.startswith("no network"), response.text
    assert "Address family not supported" in response.text  # not even a socket() of its own
    assert sockact.show("PrivateNetwork") == "yes"
    assert sockact.show("RestrictAddressFamilies") == "AF_UNIX"


def test_the_shipped_metrics_socket_once_enabled(sockact: Deployment):
    parser = pytest.importorskip("prometheus_client.parser")
    port = free_port()
    # as docs/drop-ins.md says to move it: an empty ListenStream= first, then the address
    sockact.write("/etc/systemd/system/sockact-metrics.socket.d/port.conf",
                  f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n")
    try:
        sockact.daemon_reload()
        sockact.c.systemctl("enable", "--now", "sockact-metrics.socket")
        sockact.start()
        for _ in range(3):
            assert sockact.get("/").status == 200

        def served() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            response = http_get(port, "/metrics")
            assert response.status == 200, response.text
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for family in parser.text_string_to_metric_families(response.text) for s in family.samples}
            key = ("sockact_requests_total", (("code", "2xx"), ("listener", "http"), ("method", "GET")))
            return samples if samples.get(key) == 3 else None

        samples = wait_for(served, 10, what="the three requests in the scrape")
        assert samples[("sockact_workers", (("state", "ready"),))] >= 1
        assert samples[("sockact_watchdog_pings_total", ())] >= 1  # the shipped unit sets WatchdogSec=
    finally:
        sockact.c.systemctl("disable", "--now", "sockact-metrics.socket", check=False)


def test_recipe_second_app_as_template_instance(sockact: Deployment, recipes: dict[str, str]):
    # the blog in its own virtualenv, built with the system's Python as the recipe says
    venv = "/srv/blog/.venv"
    sockact.c.run(["python3", "-m", "venv", "--without-pip", venv])
    sockact.track("/srv/blog")
    site = sockact.c.run([f"{venv}/bin/python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    sockact.write(f"{site.stdout.strip()}/blog/__init__.py", "")
    sockact.write(f"{site.stdout.strip()}/blog/wsgi.py", BLOG_APP)
    install_recipe(sockact, recipes, "/etc/sockact/blog.toml")
    # by default the instance listens on /run/sockact/blog.sock
    sockact.start("sockact@blog.socket")
    over_unix = sockact.c.run(["curl", "-sS", "--max-time", "10", "--unix-socket", "/run/sockact/blog.sock",
                               "http://localhost/"]).stdout
    assert over_unix == "the blog"
    sockact.c.systemctl("stop", "sockact@blog.service", "sockact@blog.socket")
    port = free_port()
    install_recipe(sockact, recipes, "/etc/systemd/system/sockact@blog.socket.d/listen.conf", port8081=port)
    sockact.daemon_reload()
    sockact.c.systemctl("enable", "--now", "sockact@blog.socket")
    sockact.track("/etc/systemd/system/sockets.target.wants/sockact@blog.socket")
    assert http_get(port, "/").text == "the blog"
    # a first worker may answer before the last is ready and READY=1 is sent
    wait_for(lambda: sockact.show("SubState", "sockact@blog.service") == "running", timeout=30,
             what="sockact@blog.service running")
    assert sockact.show("ActiveState", "sockact.service") == "inactive", "instances are independent"
    assert sockact_records(sockact.journal("sockact@blog.service"))


BLOG_APP = '''
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "8")])
    return [b"the blog"]
'''


def test_check_from_a_shell_names_the_setting_a_drop_in_sets_in_the_units_environment(sockact: Deployment):
    # docs/drop-ins.md: the drop-in's SOCKACT_WORKERS wins over the file under the service; a check run from a
    # shell, which sees its own environment only, passed the file and said nothing of it.
    sockact.dropin("sockact.service", "workers.conf", "[Service]\nEnvironment=SOCKACT_WORKERS=3\n")
    sockact.daemon_reload()
    done = sockact.c.run(["sockact", "check", "--config", "/etc/sockact/sockact.toml"], check=False)
    assert done.returncode == 0, done.stderr
    told = [line for line in done.stderr.splitlines() if "sockact.service" in line]
    assert len(told) == 1 and told[0].startswith("sockact: warning: sockact.service sets SOCKACT_WORKERS=3 in its "
                                                 "environment"), done.stderr
    # the same value in the shell: nothing to say
    same = sockact.c.run(["sockact", "check", "--config", "/etc/sockact/sockact.toml"], check=False,
                         env={"SOCKACT_WORKERS": "3"})
    assert "sockact.service" not in same.stderr, same.stderr
