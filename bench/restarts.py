"""Requests lost to `systemctl restart` and `systemctl reload` under load: sockact, then gunicorn.

On a fresh overlay of the clean Debian 12 root (tests/system/debroot.py), the .deb built from this
tree is installed with apt, as a new user would. Under a bounded load of new-connection clients
(a connection per request) and keep-alive clients that never reconnect, sockact.service is
restarted --restarts times, then reloaded --reloads times; each kind of client counts its requests
and failures. Then the same service, behind the same sockact.socket, runs Debian's gunicorn
(python3-gunicorn, gthread workers so that it keeps connections alive) on the same demo app, and
the same load and actions are repeated.

Needs root and systemd-nspawn, like the system tests. Run from the repository root:

    .venv/bin/python bench/restarts.py [--restarts 10] [--reloads 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "system"))

from debpkg import APT, build_deb  # noqa: E402
from debroot import ensure_rootfs  # noqa: E402
from keepalive import under_load  # noqa: E402
from nspawn import Container, missing_prerequisite  # noqa: E402
from sysclient import wait_for  # noqa: E402

PORT = 8080  # sockact.socket's
SERVICE = "sockact.service"
APP = "sockact.apps.demo:app"
WORKERS = 2
# gunicorn in place of sockact: the same socket unit, the same hardening, the same app and workers.
# gthread workers keep connections alive (sync ones close after each response). gunicorn's reload
# is SIGHUP (the shell's kill: a minimal Debian has no procps); it sends no watchdog pings.
# Debian's gunicorn (20.1) calls setuid() with its own uid in each worker, which the unit's
# ~@privileged filter refuses: that one group is allowed back.
GUNICORN_DROP_IN = f"""[Service]
SystemCallFilter=@setuid
ExecStart=
ExecStart=/usr/bin/python3 -m gunicorn --worker-class gthread --threads 4 --workers {WORKERS} {APP}
ExecReload=
ExecReload=/bin/sh -c "kill -HUP $MAINPID"
WatchdogSec=0
"""




def serving(box: Container) -> None:
    def up() -> bool:
        return box.run(["curl", "-fsS", "-o", "/dev/null", f"http://127.0.0.1:{PORT}/"], check=False).returncode == 0

    wait_for(up, timeout=60, what="the service serving")


def run_actions(box: Container, server: str, restarts: int, reloads: int,
                quiet: bool) -> dict[str, dict[str, dict[str, int]]]:
    figures = {}
    for action, count in (("restart", restarts), ("reload", reloads)):
        serving(box)
        began = time.monotonic()
        fresh, kept = under_load(box, SERVICE, [action] * count, PORT)
        figures[action] = {"new connections": dict(fresh.outcomes),
                           "keep-alive, never reconnecting": dict(kept.outcomes),
                           "seconds": {"total": round(time.monotonic() - began)}}
        if not quiet:
            print_figures(server, f"{action} x{count}", figures[action])
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    reason = missing_prerequisite()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as out:
        deb = build_deb(Path(out))
        with Container(ensure_rootfs(), overlay=True) as box:
            box.copy_in(deb, f"/opt/{deb.name}")
            box.run("apt-get update -q", timeout=300)
            box.run(f"{APT} install /opt/{deb.name} python3-gunicorn", timeout=600)
            versions = box.run(["python3", "-c", "import gunicorn, sockact; print(gunicorn.__version__, "
                                "sockact.__version__)"]).stdout.split()
            if not args.json:
                print(f"gunicorn {versions[0]}, sockact {versions[1]}; Debian 12, one socket unit, {WORKERS} workers")
            results = {"sockact": run_actions(box, "sockact", args.restarts, args.reloads, args.json)}
            box.write("/etc/systemd/system/sockact.service.d/gunicorn.conf", GUNICORN_DROP_IN)
            box.run("systemctl daemon-reload && systemctl restart sockact.service")
            results["gunicorn"] = run_actions(box, "gunicorn", args.restarts, args.reloads, args.json)
    if args.json:
        print(json.dumps({"versions": {"gunicorn": versions[0], "sockact": versions[1]}, "restarts": args.restarts,
                          "reloads": args.reloads, "results": results}, indent=2))
    return 0


def print_figures(server: str, action: str, by_client: dict[str, dict[str, int]]) -> None:
    print(f"{server:8} {action:11} took {by_client['seconds']['total']} s", flush=True)
    for client, outcomes in by_client.items():
        if client == "seconds":
            continue
        total = sum(outcomes.values())
        failed = total - outcomes.get("ok", 0)
        how = {k: v for k, v in outcomes.items() if k != "ok"}
        print(f"{server:8} {action:11} {client:32} {total:7} requests, {failed:5} failed", how or "", flush=True)


if __name__ == "__main__":
    sys.exit(main())
