"""Debian's HAProxy in front of two sockact instances under a real systemd, set up as docs/deploy-fleet.md says.

Two template instances on loopback (sockact@web1, sockact@web2) stand in for two hosts; the files
are the doc's own, with free loopback ports for its addresses. Under a bounded load, web1 is
reloaded, stopped and started again, and no request may fail; the figures are printed (run with
-s to see them) for the doc.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from nspawn import free_port
from sysclient import Load, http_get, wait_for
from sysdeploy import REPO, Deployment, cookbook

DOC = REPO / "docs" / "deploy-fleet.md"
HOSTS = {"web1": "10.0.0.11:8080", "web2": "10.0.0.12:8080"}  # as the doc writes them
BALANCER = "10.0.0.2"
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
SITE_PEM = "/etc/haproxy/site.pem"
CLIENT = "127.0.0.2"  # the test's client connects from here, so its address is not the balancer's

FLEET_APP = '''
import json
import os


def application(environ, start_response):
    body = json.dumps({"remote_addr": environ["REMOTE_ADDR"], "scheme": environ["wsgi.url_scheme"],
                       "instance": os.environ.get("FLEET_INSTANCE")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
'''


@dataclass
class Fleet:
    deployment: Deployment
    http: int  # HAProxy's plain frontend
    https: int  # its TLS frontend
    stats: int
    ports: dict[str, int]

    def servers(self) -> dict[str, dict[str, str]]:
        """HAProxy's view of each sockact server: status, check_status, check_code..."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stats}/stats;csv", timeout=10) as page:
            text = page.read().decode().lstrip("# ")
        return {row["svname"]: row for row in csv.DictReader(io.StringIO(text)) if row["pxname"] == "sockact"
                and row["svname"] in HOSTS}

    def status(self, name: str) -> str:
        return self.servers()[name]["status"]


def replace_all(text: str, pairs: dict[str, str]) -> str:
    for old, new in pairs.items():
        assert old in text, f"{old!r} is no longer in docs/deploy-fleet.md"
        text = text.replace(old, new)
    return text


@pytest.fixture
def fleet(sockact: Deployment) -> Iterator[Fleet]:
    c = sockact.c
    if not c.path("/usr/sbin/haproxy").exists():
        pytest.fail("haproxy is not installed (make apt-deps installs it)")
    files = cookbook(DOC)
    ports = {name: free_port() for name in HOSTS}
    fleet = Fleet(sockact, free_port(), free_port(), free_port(), ports)
    sockact.app("fleetapp", FLEET_APP)
    settings = replace_all(files["/etc/sockact/sockact.toml"], {
        'app = "myproject.wsgi:application"': 'app = "fleetapp:application"',
        f'"{BALANCER}"': '"127.0.0.1"'})
    for name in HOSTS:
        sockact.config(settings, f"/etc/sockact/{name}.toml")
        listen = replace_all(files["/etc/systemd/system/sockact.socket.d/listen.conf"],
                             {HOSTS["web1"]: f"127.0.0.1:{ports[name]}"})
        sockact.dropin(f"sockact@{name}.socket", "listen.conf", listen)
        sockact.use_test_apps(f"sockact@{name}.service", FLEET_INSTANCE=name)
    sockact.daemon_reload()
    for name in HOSTS:
        c.systemctl("start", f"sockact@{name}.socket")

    balancer = replace_all(files[HAPROXY_CFG], {
        "bind :80\n": f"bind 127.0.0.1:{fleet.http}\n", "bind :443 ": f"bind 127.0.0.1:{fleet.https} ",
        "bind 127.0.0.1:8404": f"bind 127.0.0.1:{fleet.stats}",
        **{address: f"127.0.0.1:{ports[name]}" for name, address in HOSTS.items()}})
    original = c.path(HAPROXY_CFG).read_text()
    c.run(["sh", "-c", f"openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=shop.example "
                       f"-keyout {SITE_PEM}.key -out {SITE_PEM}.crt 2>/dev/null && "
                       f"cat {SITE_PEM}.crt {SITE_PEM}.key > {SITE_PEM} && rm {SITE_PEM}.crt {SITE_PEM}.key"])
    sockact.track(SITE_PEM)
    c.write(HAPROXY_CFG, original + "\n" + balancer)
    try:
        c.systemctl("restart", "haproxy")
        wait_for(lambda: all(s["status"] == "UP" for s in fleet.servers().values()), 15,
                 what="HAProxy to see both sockact instances UP")
        yield fleet
    finally:
        c.systemctl("stop", "haproxy", check=False)
        c.write(HAPROXY_CFG, original)
        c.systemctl("reset-failed", "haproxy", check=False)


def test_client_address_and_scheme_reach_the_app(fleet: Fleet):
    seen = [json.loads(http_get(fleet.https, source=CLIENT, tls=True, headers="X-Forwarded-For: 6.6.6.6\r\n").body)
            for _ in range(4)]
    assert {s["instance"] for s in seen} == set(HOSTS)  # round robin: both answered
    for s in seen:
        assert (s["remote_addr"], s["scheme"]) == (CLIENT, "https")  # the client's own X-Forwarded-For lost
    plain = json.loads(http_get(fleet.http, source=CLIENT).body)
    assert (plain["remote_addr"], plain["scheme"]) == (CLIENT, "http")


@dataclass
class Watch:
    """Polls HAProxy's stats in a thread: when did web1 first show DOWN, and after which check."""

    fleet: Fleet
    name: str
    down_at: float = 0.0
    check: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Watch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.02) and not self.down_at:
            try:
                row = self.fleet.servers()[self.name]
            except (OSError, KeyError):
                continue
            if row["status"].startswith("DOWN"):
                self.down_at = time.time()
                self.check = f"{row['check_status']}/{row['check_code']}"


def test_reload_and_rolling_stop_under_load_lose_no_request(fleet: Fleet):
    c = fleet.deployment.c
    figures: list[tuple[str, int, int]] = []

    with Load(fleet.http, threads=4, max_requests=1_000_000, max_seconds=300, timeout=15) as load:
        def phase(name: str, action: Callable[[], object]) -> None:
            sent, failed = load.total, load.failures
            action()
            figures.append((name, load.total - sent, load.failures - failed))

        phase("steady load", lambda: wait_for(lambda: load.outcomes["ok"] >= 300, 60, what="300 requests served"))
        phase("systemctl reload sockact@web1.service", lambda: c.systemctl("reload", "sockact@web1.service"))
        with Watch(fleet, "web1") as watch:
            phase("systemctl stop sockact@web1.socket (drain)",
                  lambda: c.systemctl("stop", "sockact@web1.socket", timeout=90))
        assert fleet.status("web1").startswith("DOWN")
        phase("systemctl start sockact@web1.socket, until UP", lambda: (
            c.systemctl("start", "sockact@web1.socket"),
            wait_for(lambda: fleet.status("web1") == "UP", 30, what="web1 UP again")))
        load.stop()

    report = "\n".join(f"| {name} | {sent} | {failed} |" for name, sent, failed in figures)
    assert load.failures == 0, f"{load.outcomes}: {load.errors}\n{report}"
    assert all(sent > 0 for _, sent, _ in figures), report

    # HAProxy took web1 out on its health check (503) before web1's supervisor stopped accepting.
    stop_began = [int(r["__REALTIME_TIMESTAMP"]) / 1e6 for r in fleet.deployment.journal("sockact@web1.service")
                  if str(r.get("MESSAGE", "")).startswith("stopping: draining")]
    assert watch.down_at and stop_began, (watch.down_at, stop_began)
    print(f"\nfleet figures (requests sent / failed):\n{report}\nweb1 marked DOWN after check {watch.check}, "
          f"{stop_began[-1] - watch.down_at:.1f}s before it stopped accepting")
    assert watch.check.endswith("503"), watch.check
    assert watch.down_at < stop_began[-1], f"DOWN at {watch.down_at}, stopped accepting at {stop_began[-1]}"
