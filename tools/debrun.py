"""`make run`: build the .deb, install it under systemd, start sockact.socket, show a first response.

    python3 tools/debrun.py start    build, install, start, print the URL and the first response
    python3 tools/debrun.py shell    a shell in the container that `start` booted
    python3 tools/debrun.py stop     power that container off

Where PID 1 is systemd (a Debian 12 machine), the package is installed on the machine itself.
Elsewhere (a container, CI, a VM booted without systemd) `start` boots a throwaway Debian 13,
the current stable, with systemd as its PID 1 in systemd-nspawn, installs the package there and
leaves the container running after it returns; `stop` powers it off. Its root is a fresh overlay of
the clean debootstrapped trixie the system tests use, so whatever happens inside vanishes at power-off.
The container shares this machine's network, so the URL works from here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "system"))  # the container harness lives beside the system tests

import debroot  # noqa: E402
import nspawn  # noqa: E402
from sysclient import Response, http_get, wait_for  # noqa: E402

SUITE = "trixie"  # the container's Debian: 13, the current stable (the package installs on 12 alike)


def state_dir(checkout: Path) -> Path:
    """Where `start` records its container: one directory per checkout, so that a second
    checkout's `make run` neither finds nor powers off the first one's container. Under /run,
    forgotten at reboot like the container itself."""
    key = hashlib.sha256(str(checkout.resolve()).encode()).hexdigest()[:12]
    return Path("/run/sockact-run") / f"{checkout.resolve().name}-{key}"


STATE_DIR = state_dir(REPO)
STATE = STATE_DIR / "container.json"
DEFAULT_PORT = 8080  # what packaging/systemd/sockact.socket listens on
DEB_DIR = "/opt/sockact-deb"  # the container's /tmp is private
PORT_DROP_IN = "/etc/systemd/system/sockact.socket.d/make-run-port.conf"


def say(text: str = "") -> None:
    print(text, flush=True)


def version() -> str:
    text = (REPO / "sockact" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not match:
        raise SystemExit("debrun: no __version__ in sockact/__init__.py")
    return match.group(1)


def build() -> Path:
    """make deb: dist/sockact_<version>_all.deb."""
    subprocess.run([str(REPO / "packaging" / "build-deb.sh"), str(REPO / "dist")], check=True)
    return REPO / "dist" / f"sockact_{version()}_all.deb"


def pid1_is_systemd() -> bool:
    # sd_booted(): systemd creates this directory at boot, and nothing else does.
    return Path("/run/systemd/system").is_dir()


def first_response(port: int) -> Response:
    """The first request activates the service, so allow it a moment to start."""
    def attempt() -> Response | None:
        try:
            return http_get(port, timeout=10)
        except OSError:
            return None
    return wait_for(attempt, timeout=30, what=f"a response on 127.0.0.1:{port}")


def show_response(port: int, response: Response) -> None:
    say(f"$ curl http://127.0.0.1:{port}/")
    say(f"HTTP/1.1 {response.status}")
    say(response.text.rstrip())


def listen_port(listen: str) -> int:
    """The port of the first TCP address in `systemctl show -P Listen` output, e.g. '127.0.0.1:8080 (Stream)'."""
    match = re.search(r":(\d+) \(Stream\)", listen)
    if not match:
        raise SystemExit(f"debrun: sockact.socket listens on no TCP port ({listen.strip()!r})")
    return int(match.group(1))


# -- PID 1 is systemd: install here


def start_on_host(deb: Path) -> None:
    say("PID 1 is systemd: installing the package on this machine.")
    # --reinstall: a rebuild of the installed version replaces it too (and restarts the service)
    subprocess.run(["apt-get", "install", "-y", "--reinstall", f"./{deb.relative_to(REPO)}"], cwd=REPO, check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    subprocess.run(["systemctl", "start", "sockact.socket"], check=True)
    listen = subprocess.run(["systemctl", "show", "-P", "Listen", "sockact.socket"], check=True,
                            capture_output=True, text=True).stdout
    port = listen_port(listen)
    show_response(port, first_response(port))
    say()
    say(f"sockact is serving on http://127.0.0.1:{port}/ (socket-activated: sockact.service starts on demand)")
    say("  its logs:        journalctl -u sockact.service")
    say("  another port:    systemctl edit sockact.socket")
    say("  uninstall:       apt purge sockact")


# -- PID 1 is not systemd: a throwaway container


def start_in_container(deb: Path) -> None:
    pid1 = Path("/proc/1/comm").read_text().strip()
    say(f"PID 1 here is {pid1!r}, not systemd: booting a throwaway Debian 13 container with systemd-nspawn.")
    if not (shutil.which("systemd-nspawn") and shutil.which("debootstrap")):
        say("Installing systemd-container and debootstrap with apt...")
        subprocess.run("apt-get update -qq && apt-get install -y -qq systemd-container debootstrap >/dev/null",
                       shell=True, check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    why = nspawn.missing_prerequisite()
    if why:
        raise SystemExit(f"debrun: {why}")
    if STATE.exists():
        say("Powering off the container of this checkout's previous `make run` first.")
        stop()
    if not debroot.rootfs_path(SUITE).exists():
        say("Building the clean Debian 13 root with debootstrap (once per machine, about a minute)...")
    root = debroot.ensure_rootfs(SUITE)
    box = boot_detached(root)
    try:
        port = install_in(box, deb)
        response = first_response(port)
    except (AssertionError, nspawn.ContainerError) as exc:
        say(f"\n{exc}")
        say("\nsockact's journal in the container:")
        say(box.run("journalctl -q --no-pager -n 40 -u 'sockact*'", check=False).stdout.rstrip())
        how_to_leave(box)
        raise SystemExit(1) from None
    say()
    show_response(port, response)
    say()
    say(f"sockact is serving on http://127.0.0.1:{port}/ from container {box.name}, which keeps running.")
    how_to_leave(box)


def install_in(box: nspawn.Container, deb: Path) -> int:
    """Install the package in the container and start its socket; returns the port it listens on."""
    box.copy_in(deb, f"{DEB_DIR}/{deb.name}")
    port = DEFAULT_PORT if port_is_free(DEFAULT_PORT) else nspawn.free_port()
    if port != DEFAULT_PORT:
        # The container shares this machine's network: move the socket before the package starts it.
        say(f"127.0.0.1:{DEFAULT_PORT} is taken here; the container's sockact.socket uses {port} instead.")
        box.write(PORT_DROP_IN, f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n")
    say(f"Installing {deb.name} with apt inside (it fetches python3-systemd and python3-httptools)...")
    box.run("apt-get update -q", timeout=300)
    box.run(["apt-get", "install", "-y", "-q", f"{DEB_DIR}/{deb.name}"], timeout=300,
            env={"DEBIAN_FRONTEND": "noninteractive"})
    box.systemctl("start", "sockact.socket")
    return port


def how_to_leave(box: nspawn.Container) -> None:
    say("  a shell inside:  make run-shell   (then e.g. journalctl -u sockact.service, systemctl edit sockact.socket)")
    say(f"                   or: nsenter -t {box.leader} -a /bin/bash")
    say("  power it off:    make run-stop")


def port_is_free(port: int) -> bool:
    """Whether a listener could bind 127.0.0.1:``port`` now. With SO_REUSEADDR, as sockact.socket
    and every server bind: a port left in TIME-WAIT by an earlier test run is free."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def boot_detached(root: Path) -> nspawn.Container:
    """Boot ``root`` as a container that outlives this process, and record it for `stop`.

    nspawn.Container ties the container to the test process that boots it; here nspawn runs in
    a session of its own, and the Container object only finds its PID 1 and runs commands.
    """
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    box = nspawn.Container(root, overlay=True, name=f"sockact-run-{os.getpid()}")
    if subprocess.run(["mountpoint", "-q", nspawn.NSPAWN_RUNTIME], check=False).returncode != 0:
        # nspawn refuses to clean up its runtime directory unless it is a tmpfs
        os.makedirs(nspawn.NSPAWN_RUNTIME, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", nspawn.NSPAWN_RUNTIME], check=True)
    log = open(STATE_DIR / "console.log", "wb")  # noqa: SIM115 - handed to the detached nspawn
    argv = nspawn.nspawn_argv(str(root), box.name, overlay=True)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    STATE.write_text(json.dumps({"nspawn_pid": proc.pid, "name": box.name}))
    try:
        box.leader = nspawn.wait_for_leader(proc, box.name, 60)
    except nspawn.ContainerError:
        tail = (STATE_DIR / "console.log").read_text(errors="replace")[-3000:]
        stop()
        raise SystemExit(f"debrun: the container did not boot:\n{tail}") from None
    STATE.write_text(json.dumps({"nspawn_pid": proc.pid, "name": box.name, "leader": box.leader}))
    box.wait_until_running()
    return box


def _recorded() -> dict[str, int | str] | None:
    try:
        state = json.loads(STATE.read_text())
    except (OSError, ValueError):
        return None
    # a stale record (the container is gone, or its PID was reused) is no container
    pid = int(state.get("nspawn_pid", 0))
    try:
        alive = Path(f"/proc/{pid}/comm").read_text().strip() == "systemd-nspawn"
    except OSError:
        alive = False
    return state if alive else None


def stop() -> None:
    """Power off the container of `start`; SIGTERM, then SIGKILL, its nspawn if it does not stop."""
    state = _recorded()
    if state is None:
        say("No container of `make run` is running.")
    else:
        pid = int(state["nspawn_pid"])
        if "leader" in state:
            subprocess.run(["nsenter", "-t", str(state["leader"]), "-a", "systemctl", "--no-block", "poweroff"],
                           check=False, capture_output=True, timeout=10)
        for sig, wait in ((None, 20.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            if sig is not None:
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not Path(f"/proc/{pid}").exists():
                break
        say(f"Container {state['name']} is powered off.")
    shutil.rmtree(STATE_DIR, ignore_errors=True)  # the record and the console log
    # Leave no mount behind, unless another container (a test run) still uses it.
    busy = subprocess.run(["pgrep", "-x", "systemd-nspawn"], capture_output=True, check=False).returncode == 0
    if not busy:
        subprocess.run(["umount", nspawn.NSPAWN_RUNTIME], check=False, capture_output=True)


def shell() -> None:
    state = _recorded()
    if state is None or "leader" not in state:
        raise SystemExit("debrun: no container of `make run` is running (start one with make run)")
    say(f"A shell in container {state['name']}; `exit` leaves it running, `make run-stop` powers it off.")
    env = [f"{k}={v}" for k, v in nspawn.INSIDE_ENV.items() if k != "TERM"]
    os.execvp("nsenter", ["nsenter", "-t", str(state["leader"]), "-a", "env", "-i", *env,
                          f"TERM={os.environ.get('TERM', 'xterm')}", "/bin/bash", "-l"])


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "start"
    if command not in ("start", "stop", "shell"):
        raise SystemExit(__doc__)
    if os.geteuid() != 0 and shutil.which("sudo"):
        # apt, systemctl and systemd-nspawn all need root
        os.execvp("sudo", ["sudo", sys.executable, *argv])
    if command == "stop":
        stop()
    elif command == "shell":
        shell()
    else:
        deb = build()
        (start_on_host if pid1_is_systemd() else start_in_container)(deb)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
