"""The Debian package on a clean Debian 12 and a clean Debian 13, under a real systemd.

The package is built twice from this tree (its version, and the same code with a bumped version
for the upgrade) and installed with apt into a fresh overlay of a cached debootstrapped bookworm,
then of a trixie (see debroot.py): one .deb for both. The tests follow a package's life, in file
order, each starting from the state the one before leaves, and each making sure of the state it
needs: install, first request, drop-in, upgrade under load, a template instance, remove, purge.
pytest runs the whole life on one release, then on the other.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from debpkg import APT, DEBS, VERSION, build_deb
from debroot import SUITES, RootfsError, ensure_rootfs
from nspawn import Container, free_port, missing_prerequisite
from sysclient import Load, Response, http_get, wait_for

from sockact.logs.journal import MESSAGE_IDS

pytestmark = [pytest.mark.system, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
UPGRADE_VERSION = f"{VERSION}+upgradetest1"  # sorts after VERSION for dpkg, a valid PEP 440 local version
PORT = 8080  # what packaging/systemd/sockact.socket listens on
DEMO_PAGE = "Served by sockact"
CATALOG = REPO / "packaging" / "systemd" / "sockact.catalog"
# A second app, as an admin would add one: a module in /usr/local, on Debian's python3 path.
DEMO2_APP = '''\
def app(environ, start_response):
    body = b"demo2 says hello\\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

# An ASGI app that says which event loop serves it, and whether wsproto (for WebSockets) is there.
ASGI_APP = '''\
import asyncio
import importlib.util


async def app(scope, receive, send):
    assert scope["type"] == "http"
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    ws = "wsproto" if importlib.util.find_spec("wsproto") else "no wsproto"
    body = f"asgi on {loop} with {ws}\\n".encode()
    length = str(len(body)).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]})
    await send({"type": "http.response.body", "body": body})
'''


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{version: .deb} for this tree's version and the upgrade's."""
    if missing_prerequisite():
        pytest.skip(missing_prerequisite() or "")
    out = tmp_path_factory.mktemp("debs")
    return {VERSION: build_deb(out), UPGRADE_VERSION: build_deb(out, UPGRADE_VERSION)}


@pytest.fixture(scope="module", params=SUITES)
def box(request: pytest.FixtureRequest, debs: dict[str, Path]) -> Iterator[Container]:
    """A fresh overlay of a clean Debian root, booted, with both .debs under /opt and apt's lists fresh."""
    try:
        root = ensure_rootfs(request.param)
    except RootfsError as exc:
        pytest.fail(f"no clean Debian root: {exc}")
    with Container(root, overlay=True) as booted:
        for deb in debs.values():
            booted.copy_in(deb, f"{DEBS}/{deb.name}")
        booted.run("apt-get update -q", timeout=300)
        yield booted


def _deb(version: str) -> str:
    return f"{DEBS}/sockact_{version}_all.deb"


def _status(box: Container) -> str:
    """dpkg's status of sockact: 'ii 0.1.0', 'rc 0.1.0', or '' when dpkg knows nothing of it."""
    done = box.run("dpkg-query -W -f='${db:Status-Abbrev}${Version}' sockact", check=False)
    return " ".join(done.stdout.split()) if done.returncode == 0 else ""


def _ensure_installed(box: Container) -> None:
    """Installed, at whichever version: a test that needs it does not depend on the one before."""
    if not _status(box).startswith("ii "):
        box.run(f"{APT} install {_deb(VERSION)}", timeout=300)


def _active(box: Container, unit: str) -> str:
    return box.systemctl("is-active", unit, check=False).stdout.strip()


def test_fresh_install_pulls_the_dependencies_and_starts_the_socket_only(box: Container) -> None:
    assert _status(box) == ""
    done = box.run(f"{APT} install {_deb(VERSION)}", timeout=300)
    # apt fetched Debian's own packages; the .deb bundles no virtualenv
    for dependency in ("python3-systemd", "python3-httptools", "python3-uvloop", "python3-wsproto"):
        assert f"Setting up {dependency}" in done.stdout, done.stdout
    assert _status(box) == f"ii {VERSION}"
    assert box.systemctl("is-enabled", "sockact.socket").stdout.strip() == "enabled"
    assert _active(box, "sockact.socket") == "active"
    assert _active(box, "sockact.service") == "inactive"
    # the service has no [Install]: it starts only by activation; templates are not enabled
    assert box.systemctl("is-enabled", "sockact.service", check=False).stdout.strip() == "static"
    assert not list(box.path("/etc/systemd/system").glob("*.wants/sockact@*"))
    assert "/etc/sockact/sockact.toml" in box.run("dpkg-query -W -f='${Conffiles}' sockact").stdout
    # the CLI runs on Debian's python3 and accepts the shipped configuration
    box.run("sockact check --config /etc/sockact/sockact.toml")
    for page in ("/usr/share/man/man1/sockact.1.gz", "/usr/share/man/man5/sockact.toml.5.gz"):
        assert box.path(page).is_file(), page
    # systemd's dpkg trigger rebuilt the journal catalog with sockact's entries
    first_id = next(line.split()[1] for line in CATALOG.read_text().splitlines() if line.startswith("-- "))
    assert first_id in box.run("journalctl --list-catalog").stdout


def test_first_request_activates_the_service_and_gets_the_demo_page(box: Container) -> None:
    _ensure_installed(box)
    response = wait_for(lambda: _get_or_none(PORT), timeout=30, what="a response on the socket")
    assert response.status == 200 and DEMO_PAGE in response.text, response
    # the first worker may answer before the others are ready and the supervisor sends READY=1
    wait_for(lambda: _active(box, "sockact.service") == "active", timeout=30, what="the service active")


def test_the_packaged_supervisor_and_its_workers_run_under_sched_batch(box: Container) -> None:
    """batch_scheduling's default holds inside the shipped unit's sandbox (SystemCallFilter=@system-service,
    RestrictRealtime=): the supervisor sets the policy before its first fork, and its workers inherit it."""
    _ensure_installed(box)
    wait_for(lambda: _get_or_none(PORT), timeout=30, what="a response on the socket")
    main = box.run("systemctl show -p MainPID --value sockact.service").stdout.strip()
    workers = wait_for(lambda: box.run(f"cat /proc/{main}/task/{main}/children").stdout.split(), timeout=30,
                       what="the supervisor's workers")
    policies = {pid: box.run(["chrt", "-p", pid]).stdout.splitlines()[0] for pid in (main, *workers)}
    assert all(line.endswith("SCHED_BATCH") for line in policies.values()), policies


def test_a_burst_leaves_a_line_per_request_in_the_file_and_every_reload_line_in_the_journal(box: Container) -> None:
    """Bug C: access lines under load must not take the lifecycle lines down with them.

    journald keeps 10,000 lines per 30 s per priority group of a unit; the packaged config sends
    access lines to /var/log/sockact/access.log instead, so a reload right after a burst is logged whole.
    """
    _ensure_installed(box)
    wait_for(lambda: _get_or_none(PORT), timeout=30, what="the service up")
    access = box.path("/var/log/private/sockact/access.log")
    before = _lines(access)
    wrk = subprocess.run(["wrk", "-t2", "-c50", "-d10s", f"http://127.0.0.1:{PORT}/"], capture_output=True,
                         text=True, timeout=60, check=True)
    served = int(re.search(r"(\d+) requests in", wrk.stdout).group(1))
    assert served > 10_000, f"the burst must exceed journald's default burst:\n{wrk.stdout}"
    cursor = box.run("journalctl -n 0 --show-cursor -q").stdout.strip().removeprefix("-- cursor: ")
    main_pid = box.show("sockact.service", "MainPID")
    box.systemctl("kill", "--kill-whom=main", "-s", "HUP", "sockact.service")  # what `systemctl reload` sends

    def reload_lines() -> list[dict] | None:
        out = box.run(["journalctl", "-q", "-o", "json", "--after-cursor", cursor, "-u", "sockact.service"]).stdout
        records = [json.loads(line) for line in out.splitlines()]
        ids = [r.get("MESSAGE_ID") for r in records]
        reloaded = MESSAGE_IDS["reload"] in ids and MESSAGE_IDS["ready"] in ids[ids.index(MESSAGE_IDS["reload"]):]
        return records if reloaded else None

    records = wait_for(reload_lines, timeout=30, what="the reload's lifecycle lines in the journal")
    spawned = [r for r in records if r.get("MESSAGE_ID") == MESSAGE_IDS["worker_spawned"]]
    assert len(spawned) >= 2, [r.get("MESSAGE") for r in records]  # the new generation, whole
    assert box.show("sockact.service", "MainPID") == main_pid
    assert not [r for r in records if r.get("HTTP_STATUS")], "access lines went to the journal"
    suppressed = box.run("journalctl -q -u systemd-journald.service --grep 'Suppressed.*sockact'", check=False)
    assert "Suppressed" not in suppressed.stdout, suppressed.stdout
    # every request has its line in the file (wrk counts the responses it completed)
    wait_for(lambda: _lines(access) - before >= served, timeout=30, what=f"{served} access lines")
    assert _lines(access) - before <= served + 100
    last = access.read_text().splitlines()[-1]
    assert re.fullmatch(r'127\.0\.0\.1 - - \[[^]]+\] "GET / HTTP/1\.1" 200 \d+ "-" "-"', last), last


def _lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def _refused(port: int) -> bool:
    try:
        http_get(port, timeout=5)
    except ConnectionRefusedError:
        return True
    except OSError:
        pass
    return False


def _get_or_none(port: int, path: str = "/") -> Response | None:
    try:
        return http_get(port, path, timeout=10)
    except OSError:
        return None


def test_a_drop_in_moves_the_socket(box: Container) -> None:
    _ensure_installed(box)
    port = free_port()
    drop_in = "/etc/systemd/system/sockact.socket.d/port.conf"
    # an empty ListenStream= first resets the list, as `systemctl edit` users are told
    box.write(drop_in, f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n")
    try:
        box.run("systemctl daemon-reload && systemctl restart sockact.socket")
        response = wait_for(lambda: _get_or_none(port), timeout=30, what=f"a response on port {port}")
        assert DEMO_PAGE in response.text
        with pytest.raises(ConnectionRefusedError):
            http_get(PORT, timeout=5)
    finally:
        box.remove(drop_in.rsplit("/", 1)[0])
        box.run("systemctl daemon-reload && systemctl restart sockact.socket")
    assert DEMO_PAGE in wait_for(lambda: _get_or_none(PORT), timeout=30, what="the default port back").text


def _metrics_on(box: Container, port: int) -> str:
    """The shipped sockact-metrics.socket moved to ``port`` by a drop-in, as docs/drop-ins.md says,
    and enabled; returns the drop-in's directory."""
    drop_ins = "/etc/systemd/system/sockact-metrics.socket.d"
    box.write(f"{drop_ins}/port.conf", f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n")
    # as the unit says: systemd starts no socket unit for a running service
    box.run("systemctl daemon-reload && systemctl stop sockact.service "
            "&& systemctl enable --now sockact-metrics.socket")
    return drop_ins


def _failed_units(box: Container) -> list[str]:
    return box.systemctl("list-units", "--failed", "--all", "--plain", "--no-legend").stdout.split()


def test_the_shipped_metrics_socket_serves_prometheus_metrics(box: Container) -> None:
    _ensure_installed(box)
    # prometheus_client came along as a Recommends; the socket ships disabled
    assert box.run("dpkg-query -W -f='${db:Status-Abbrev}' python3-prometheus-client").stdout.startswith("ii")
    assert box.systemctl("is-enabled", "sockact-metrics.socket", check=False).stdout.strip() == "disabled"
    assert _active(box, "sockact-metrics.socket") == "inactive"
    port = free_port()
    drop_ins = _metrics_on(box, port)
    try:
        first = wait_for(lambda: _get_or_none(port, "/metrics"), timeout=30, what="a scrape starting the service")
        assert first.status == 200 and "sockact_workers" in first.text, first.text
        assert DEMO_PAGE in wait_for(lambda: _get_or_none(PORT), timeout=30, what="the app served").text
        # The worker publishes its counts every few milliseconds, and other series carry listener="http"
        # from the start: wait for the request's own line.
        counted = 'sockact_requests_total{code="2xx",listener="http",method="GET"}'
        scrape = wait_for(lambda: (r := _get_or_none(port, "/metrics")) and counted in r.text and r,
                          timeout=30, what="the request in the metrics")
        assert scrape.status == 200
    finally:
        box.run("systemctl disable --now sockact-metrics.socket", check=False)
        box.remove(drop_ins)
        box.run("systemctl daemon-reload && systemctl restart sockact.service")
    assert DEMO_PAGE in wait_for(lambda: _get_or_none(PORT), timeout=30, what="the app without metrics").text


def test_upgrade_under_load_fails_no_request(box: Container) -> None:
    _ensure_installed(box)
    assert DEMO_PAGE in wait_for(lambda: _get_or_none(PORT), timeout=30, what="the service up").text
    old_pid = box.show("sockact.service", "MainPID")
    # No request cap: at thousands of requests a second, a cap ran out while a busy machine was still
    # installing, and no request was left for the new service. The test's own waits bound the load.
    with Load(PORT, threads=4, max_requests=10**9, max_seconds=600) as load:
        wait_for(lambda: load.outcomes["ok"] >= 20, timeout=30, what="load to get going")
        box.run(f"{APT} install {_deb(UPGRADE_VERSION)}", timeout=300)
        # keep the load on while the restarted service takes over
        wait_for(lambda: box.show("sockact.service", "MainPID") not in ("0", old_pid), timeout=30,
                 what="the restarted service")
        served = load.outcomes["ok"]
        wait_for(lambda: load.outcomes["ok"] >= served + 20, timeout=30, what="requests served by the new service")
        outcomes = load.stop()
    assert _status(box) == f"ii {UPGRADE_VERSION}"
    assert load.failures == 0, f"{dict(outcomes)}: {load.errors}"
    # the load spanned the restart: both the old and the new supervisor served some of it
    new_pid = box.show("sockact.service", "MainPID")
    for pid in (old_pid, new_pid):
        assert any(f"supervisor_pid: {pid}\n" in body for body in load.bodies), pid
    print(f"upgrade under load: {dict(outcomes)}")
    assert _active(box, "sockact.socket") == "active" and _active(box, "sockact.service") == "active"


def test_a_template_instance_serves_a_second_app_beside_the_first(box: Container) -> None:
    _ensure_installed(box)
    site = box.run(["python3", "-c", "import site; print(site.getsitepackages()[0])"]).stdout.strip()
    box.write(f"{site}/demo2app.py", DEMO2_APP)
    box.write("/etc/sockact/demo2.toml", 'app = "demo2app:app"\nworkers = 1\n')
    box.systemctl("enable", "--now", "sockact@demo2.socket")
    second = box.run("curl -sS --retry 5 --retry-connrefused --unix-socket /run/sockact/demo2.sock http://demo2/",
                     timeout=60)
    assert second.stdout == "demo2 says hello\n"
    # the worker may answer before systemd has handled the supervisor's READY=1
    wait_for(lambda: _active(box, "sockact@demo2.service") == "active", timeout=30, what="the instance active")
    assert DEMO_PAGE in http_get(PORT).text  # the first app is still there


def test_an_asgi_app_runs_on_debians_uvloop_with_wsproto_at_hand(box: Container) -> None:
    _ensure_installed(box)
    site = box.run(["python3", "-c", "import site; print(site.getsitepackages()[0])"]).stdout.strip()
    box.write(f"{site}/asgiapp.py", ASGI_APP)
    box.write("/etc/sockact/asgi.toml", 'app = "asgiapp:app"\nworkers = 1\n')
    box.systemctl("start", "sockact@asgi.socket")
    try:
        answer = box.run("curl -sS --retry 5 --retry-connrefused --unix-socket /run/sockact/asgi.sock http://asgi/",
                         timeout=60)
        assert answer.stdout == "asgi on uvloop with wsproto\n"
        log = box.run("journalctl -u sockact@asgi.service -o cat --no-pager").stdout
        assert "serves asgiapp:app as ASGI (detected)" in log, log
    finally:
        box.systemctl("stop", "sockact@asgi.socket", "sockact@asgi.service", check=False)


# -- reload and restart, as an operator runs them; a broken app and a crashing one


CONFIG = "/etc/sockact/sockact.toml"
# An app whose import kills its worker's parent, the supervisor: a crash systemd sees, again and again.
CRASHER_APP = """\
import os
import signal

os.kill(os.getppid(), signal.SIGKILL)
"""


def _cursor(box: Container) -> str:
    """Where the journal stands now, for _journal()."""
    out = box.run("journalctl -n 0 --show-cursor -q").stdout.strip()
    return out.removeprefix("-- cursor: ")


def _journal(box: Container, cursor: str, *match: str) -> str:
    """The messages of sockact.service (its processes' and systemd's about it) since ``cursor``."""
    return box.run(["journalctl", "-u", "sockact.service", "-o", "cat", "--no-pager", f"--after-cursor={cursor}",
                    *match]).stdout


def _workers(box: Container, pid: str) -> list[str]:
    # no ps on a minimal Debian: procps is not a dependency
    return box.run(["cat", f"/proc/{pid}/task/{pid}/children"]).stdout.split()


def _worker_pid(page: str) -> str:
    """The worker that served a demo page, as _workers() spells it."""
    return page.split("worker_pid: ")[1].split()[0]


def _serving(box: Container) -> Response:
    return wait_for(lambda: _get_or_none(PORT), timeout=30, what="the service serving")


@pytest.fixture
def shipped_config(box: Container) -> Iterator[str]:
    """The shipped sockact.toml, put back after the test however it ends."""
    _ensure_installed(box)
    shipped = box.path(CONFIG).read_text()
    yield shipped
    box.write(CONFIG, shipped)
    box.run("rm -f /usr/local/lib/python3*/dist-packages/sockact_crasher.py")


def test_reload_returns_once_the_new_generation_serves(box: Container, shipped_config: str) -> None:
    _serving(box)
    pid = box.show("sockact.service", "MainPID")
    old_workers = _workers(box, pid)
    cursor = _cursor(box)
    done = box.systemctl("reload", "sockact.service", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # `systemctl reload` came back only after the supervisor said so: the new generation serves already
    assert box.show("sockact.service", "MainPID") == pid and _active(box, "sockact.service") == "active"
    page = http_get(PORT).text
    assert DEMO_PAGE in page and _worker_pid(page) not in old_workers, (page, old_workers)
    # journald writes the supervisor's line when it gets to it, which may be after systemd saw READY=1
    wait_for(lambda: "reload done: generation" in _journal(box, cursor), timeout=30, what="the reload's line")


def test_reload_with_a_broken_file_fails_with_the_reason_and_keeps_serving(box: Container,
                                                                            shipped_config: str) -> None:
    pid = _serving(box).text.split("supervisor_pid: ")[1].split()[0]
    assert pid == box.show("sockact.service", "MainPID")
    workers = _workers(box, pid)
    box.write(CONFIG, 'workers = "many"\n' + shipped_config)
    cursor = _cursor(box)
    done = box.systemctl("reload", "sockact.service", check=False)
    assert done.returncode != 0, done.stdout + done.stderr
    said = wait_for(lambda: "sockact: reload failed: " in (out := _journal(box, cursor)) and out, timeout=30,
                    what="the reason in the journal")
    assert "'workers'" in said, said
    # the old settings, the old workers, the same supervisor: still serving
    assert _active(box, "sockact.service") == "active" and box.show("sockact.service", "MainPID") == pid
    assert sorted(_workers(box, pid)) == sorted(workers)
    assert DEMO_PAGE in http_get(PORT).text
    box.write(CONFIG, shipped_config)
    assert box.systemctl("reload", "sockact.service", check=False).returncode == 0


def test_restarts_in_a_row_leave_the_socket_listening(box: Container, shipped_config: str) -> None:
    _serving(box)
    for _ in range(10):  # more than the 5 in 10 s of systemd's default start limit
        box.systemctl("restart", "sockact.service")
    assert _active(box, "sockact.socket") == "active" and _active(box, "sockact.service") == "active"
    assert DEMO_PAGE in http_get(PORT).text


def test_a_broken_app_fails_the_service_but_not_the_socket(box: Container, shipped_config: str) -> None:
    _serving(box)
    box.systemctl("stop", "sockact.service")
    box.write(CONFIG, shipped_config.replace('app = "sockact.apps.demo:app"', 'app = "sockact_no_such_app:app"'))
    cursor = _cursor(box)
    attempts = 6  # more than the 5 starts in 10 s of systemd's default start limit
    for _ in range(attempts):  # each connection starts the service, which answers it 503 and fails
        answer = http_get(PORT, timeout=30)
        assert answer.status == 503 and "the app failed to load" in answer.text, answer
        wait_for(lambda: _active(box, "sockact.service") == "failed", timeout=30, what="the service failed")
    assert box.show("sockact.service", "ExecMainStatus") == "5"
    wait_for(lambda: "sockact_no_such_app" in _journal(box, cursor, "-p", "err"), timeout=30,
             what="the app's error in the journal")
    # the socket listens still, and the service started once per connection, not in a loop: the
    # supervisor answered every client waiting in the backlog before it exited
    assert _active(box, "sockact.socket") == "active", box.show("sockact.socket", "Result")

    def starts() -> int:
        return _journal(box, cursor).count("Starting sockact.service")

    wait_for(lambda: starts() >= attempts, timeout=30, what=f"{attempts} starts in the journal")  # journald lags
    assert starts() == attempts, _journal(box, cursor)
    # fixed: the next connection is served, with no reset-failed
    box.write(CONFIG, shipped_config)
    assert DEMO_PAGE in http_get(PORT, timeout=30).text
    # a first worker may answer before the last is ready and READY=1 is sent
    wait_for(lambda: _active(box, "sockact.service") == "active", timeout=30, what="the service active")


def test_a_crashing_supervisor_restarts_with_a_pause_and_the_socket_stays(box: Container,
                                                                          shipped_config: str) -> None:
    _serving(box)
    site = box.run(["python3", "-c", "import site; print(site.getsitepackages()[0])"]).stdout.strip()
    box.write(f"{site}/sockact_crasher.py", CRASHER_APP)
    box.write(CONFIG, shipped_config.replace('app = "sockact.apps.demo:app"', 'app = "sockact_crasher:app"'))
    pause = float(box.show("sockact.service", "RestartUSec").removesuffix("s"))
    started = time.monotonic()
    box.systemctl("restart", "sockact.service", check=False)  # fails: the supervisor is killed
    restarts = 3
    wait_for(lambda: int(box.show("sockact.service", "NRestarts")) >= restarts, timeout=60,
             what=f"{restarts} automatic restarts")
    took = time.monotonic() - started
    assert took >= restarts * pause, f"{restarts} restarts in {took:.1f}s: no pause between them"
    assert _active(box, "sockact.socket") == "active", box.show("sockact.socket", "Result")
    # fixed: a following restart serves, with no reset-failed
    box.write(CONFIG, shipped_config)
    assert DEMO_PAGE in wait_for(lambda: _get_or_none(PORT), timeout=30, what="the fixed app served").text
    wait_for(lambda: _active(box, "sockact.service") == "active", timeout=30, what="the service active")


def test_remove_stops_every_unit_leaves_none_failed_and_keeps_the_conffile(box: Container) -> None:
    _ensure_installed(box)
    wait_for(lambda: _get_or_none(PORT), timeout=30, what="the service up")
    metrics_port = free_port()
    _metrics_on(box, metrics_port)
    assert _get_or_none(metrics_port, "/metrics") is not None
    box.run(f"{APT} remove sockact", timeout=300)
    assert _status(box).startswith("rc ")
    for unit in ("sockact.socket", "sockact-metrics.socket", "sockact.service", "sockact@demo2.socket",
                 "sockact@demo2.service"):
        assert _active(box, unit) in ("inactive", "unknown"), unit
    assert _failed_units(box) == []
    for port in (PORT, metrics_port):
        with pytest.raises(ConnectionRefusedError):
            http_get(port, timeout=5)
    assert box.path("/etc/sockact/sockact.toml").is_file()
    assert not box.path("/usr/bin/sockact").exists()


def test_purge_removes_what_the_package_made_and_keeps_the_admins_files(box: Container) -> None:
    _ensure_installed(box)
    # what an admin and the service leave around: drop-ins, an enabled instance and its config, the
    # enabled metrics socket, and state of a DynamicUser service that was given StateDirectory=
    admins = {"/etc/systemd/system/sockact.socket.d/override.conf": "[Socket]\nBacklog=64\n",
              "/etc/sockact/demo2.toml": 'app = "demo2app:app"\n'}
    for path, text in admins.items():
        box.write(path, text)
    box.systemctl("enable", "--now", "sockact@demo2.socket")
    metrics_drop_ins = _metrics_on(box, free_port())
    admins[f"{metrics_drop_ins}/port.conf"] = box.path(f"{metrics_drop_ins}/port.conf").read_text()
    box.run("mkdir -p /var/lib/private/sockact && ln -sfn private/sockact /var/lib/sockact")
    box.run(f"{APT} purge sockact", timeout=300)
    assert _status(box) == ""
    assert _failed_units(box) == []
    # the admin's own files are still there, unchanged; nothing else named sockact is
    for path, text in admins.items():
        assert box.path(path).read_text() == text, path
    left = box.run("find /etc /usr /var /lib /opt -path /opt/sockact-debs -prune -o -name '*sockact*' -print",
                   check=False).stdout.split()
    theirs = {p for path in admins for p in (path, path.rsplit("/", 1)[0]) if "sockact" in p.rsplit("/", 1)[1]}
    assert sorted(left) == sorted(theirs), left
    # the next install finds them: the instance's config is there for sockact@demo2
    box.run(f"{APT} install {_deb(VERSION)}", timeout=300)
    assert box.run("sockact check --config /etc/sockact/demo2.toml", check=False).returncode == 0
    box.run(f"{APT} purge sockact", timeout=300)  # 127.0.0.1:8080 free again, for make run below


def test_lintian_is_clean(debs: dict[str, Path]) -> None:
    assert shutil.which("lintian"), "lintian is not installed (make test installs it)"
    changes = next(debs[VERSION].parent.glob(f"sockact_{VERSION}_*.changes"))
    done = subprocess.run(["lintian", "-I", "--pedantic", str(changes)], capture_output=True, text=True,
                          timeout=300, check=False)
    tags = [line for line in (done.stdout + done.stderr).splitlines() if "root privileges" not in line]
    assert done.returncode == 0 and tags == [], "\n".join(tags)


def test_every_docs_page_ships_under_the_packages_doc_directory(debs: dict[str, Path]) -> None:
    # README links to docs/*.md: an operator on the server finds them all there, as in the source tree.
    listing = subprocess.run(["dpkg-deb", "-c", str(debs[VERSION])], capture_output=True, text=True, timeout=60,
                             check=True).stdout
    shipped = {Path(line.split()[-1]).name.removesuffix(".gz") for line in listing.splitlines()
               if "./usr/share/doc/sockact/docs/" in line and not line.startswith("d")}
    assert shipped == {page.name for page in (REPO / "docs").glob("*.md")}


def test_make_run_on_a_fresh_debian_booted_with_systemd() -> None:
    """`make run` where PID 1 is systemd, on a bookworm with nothing but apt: it installs the build
    dependencies, builds within the 2-minute budget, installs the package and shows the demo page.

    Runs last: it needs 127.0.0.1:8080, which the tests above leave free once sockact is purged.
    """
    if missing_prerequisite():
        pytest.skip(missing_prerequisite() or "")
    # The container shares this machine's network: the page must come from it, not from a sockact
    # left listening by a test above or by a `make run` container.
    wait_for(lambda: _refused(PORT), timeout=30, what=f"127.0.0.1:{PORT} free for the fresh container")
    with Container(ensure_rootfs(), overlay=True) as fresh:
        # no git inside: build-deb.sh copies the tree as it is, minus what the ignore list names here
        fresh.copy_in(REPO, "/opt/src", ignore=(".git", ".venv", "dist", "build", "__pycache__", ".*_cache"))
        done = fresh.run("cd /opt/src && python3 tools/debrun.py start", timeout=300)
        assert "installing build dependencies with apt" in done.stdout
        assert "PID 1 is systemd" in done.stdout
        assert DEMO_PAGE in done.stdout and f"http://127.0.0.1:{PORT}/" in done.stdout, done.stdout
        built = re.search(r"^built \S+ \(\S+, (\d+) s\)$", done.stdout, re.M)
        assert built, done.stdout
    print(f"make run on a fresh bookworm: build {built.group(1)} s, including the build dependencies")
    assert int(built.group(1)) < 120, "make deb must take under 2 minutes on a fresh machine"
