"""Boot a real systemd as PID 1 in a systemd-nspawn container, run commands in it, tear it down.

The test machines run as root, but their PID 1 is not systemd, so unit files, socket activation,
sd_notify, the watchdog and journald are tested inside a container:

- ``Container()`` boots an overlay of the host's root: the container sees the host's files
  (its Python, its packages), and whatever it writes goes to a tmpfs that vanishes at power-off.
  It boots to basic.target (in well under a second), so the host's own services stay off.
- ``Container(root=DIR)`` boots another root file system, e.g. a debootstrapped Debian; with
  ``overlay=True`` the directory stays untouched, with ``overlay=False`` writes persist in it.

The container shares the host's network, so a socket unit listening on 127.0.0.1:PORT inside is
reachable from the test process; pick free ports with ``free_port()``. Its /tmp is private: share
files under /opt or /srv. Commands run through nsenter on the container's PID 1, with a clean
environment. A container is always powered off (killed if need be) by ``close()``, which the
context manager calls; nspawn also gets SIGTERM if the test process dies, so none is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Self

HOST_ROOT = "/srv/hostroot"
NSPAWN_RUNTIME = "/run/systemd/nspawn"
# The environment of commands run inside: nothing of the test process's leaks in (a pyenv
# python3 earlier on the host's PATH would shadow the system's /usr/bin/python3).
INSIDE_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "TERM": "dumb",
}
_PR_SET_PDEATHSIG = 1


class ContainerError(RuntimeError):
    """The container failed to boot or a command in it failed; the message has its output."""


def missing_prerequisite() -> str | None:
    """Why containers cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "system tests need root (systemd-nspawn)"
    for tool in ("systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"system tests need {tool} (apt-get install systemd-container util-linux)"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the container shares the host's network)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """In the nspawn child: get SIGTERM (nspawn's cue to power the container off) if we die."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# The host mounts containers need are shared by every test process on the machine. A container
# holds a shared lock on USERS_LOCK while it runs; mounting and unmounting happen under the
# exclusive MUTEX, and the last container out (no shared holder left) undoes the mounts that the
# harness made, as listed in MOUNTS_MADE. Mounts that were there before are left alone.
MUTEX = "/run/sockact-nspawn.mutex"
USERS_LOCK = "/run/sockact-nspawn.users"
MOUNTS_MADE = "/run/sockact-nspawn.mounts"


@contextlib.contextmanager
def _flocked(path: str, operation: int) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, operation)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _take_host_mounts(mounts: Sequence[tuple[str, Sequence[str]]]) -> int:
    """Make sure the mounts exist; returns the fd that holds our shared lock on them."""
    with _flocked(MUTEX, fcntl.LOCK_EX):
        for target, args in mounts:
            os.makedirs(target, exist_ok=True)
            if subprocess.run(["mountpoint", "-q", target], check=False).returncode != 0:
                subprocess.run(["mount", *args, target], check=True)
                with open(MOUNTS_MADE, "a") as made:
                    made.write(target + "\n")
        users = os.open(USERS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(users, fcntl.LOCK_SH)
        return users


def _release_host_mounts(users: int) -> None:
    """Drop our shared lock; if no container anywhere still holds one, undo the harness's mounts."""
    with _flocked(MUTEX, fcntl.LOCK_EX):
        os.close(users)
        try:
            with _flocked(USERS_LOCK, fcntl.LOCK_EX | fcntl.LOCK_NB):
                with contextlib.suppress(FileNotFoundError), open(MOUNTS_MADE) as made:
                    for target in reversed(made.read().split()):
                        subprocess.run(["umount", target], check=False, capture_output=True)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(MOUNTS_MADE)
        except BlockingIOError:
            pass  # another container is running


def nspawn_argv(directory: str, name: str, *, overlay: bool, target: str | None = None,
                extra: Sequence[str] = ()) -> list[str]:
    """The systemd-nspawn command that boots ``directory`` as machine ``name``."""
    return ["systemd-nspawn", "-q", "-D", directory, "-M", name,
            # --register=no and --keep-unit: there is no systemd on the host to register with
            "--register=no", "--keep-unit", "-b", "--console=pipe",
            *(["--volatile=overlay"] if overlay else []), *extra,
            *([f"systemd.unit={target}"] if target else [])]  # passed on to systemd


def find_leader(nspawn_pid: int) -> int | None:
    """The container's PID 1 as the host sees it: nspawn's child once it runs systemd."""
    try:
        children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
    except OSError:
        return None
    for child in children:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                return int(child)
    return None


def wait_for_leader(proc: subprocess.Popen[bytes], name: str, timeout: float) -> int:
    """Wait for a starting nspawn's systemd; raises ContainerError if nspawn dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ContainerError(f"systemd-nspawn exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise ContainerError(f"container {name} did not start")
        leader = find_leader(proc.pid)
        if leader is not None:
            return leader
        time.sleep(0.05)


class Machine:
    """What a container and a virtual machine (vm.py) share: a context manager that boots and waits for
    systemd, powers off whatever happens, and systemctl over ``run()``."""

    def _boot(self) -> None:
        raise NotImplementedError

    def wait_until_running(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def run(self, argv: Sequence[str] | str, *, check: bool = True, input: str | None = None,
            timeout: float = 60.0, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        raise NotImplementedError

    def start(self) -> Self:
        """Boot and wait until systemd reports running (or degraded)."""
        try:
            self._boot()
            self.wait_until_running()
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``systemctl ARGS`` inside."""
        return self.run(["systemctl", *args], check=check, timeout=timeout)

    def show(self, unit: str, prop: str) -> str:
        """One property of a unit, e.g. show('sockact.service', 'MainPID')."""
        return self.systemctl("show", "-P", prop, unit).stdout.strip()


class Container(Machine):
    """One booted container. Use as a context manager, or call start() and close()."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, overlay: bool = True,
                 name: str | None = None, boot_timeout: float = 60.0, target: str | None = None,
                 nspawn_args: Sequence[str] = ()) -> None:
        # Nothing happens here: start() boots, so a constructed container needs no clean-up.
        self.root = None if root is None else os.fspath(root)
        self.overlay = overlay or root is None  # the host's root is never booted writable
        # The unit to boot into. The host's root has whatever services the host enabled (a web
        # server, a database, ...); on the shared network they would fight over ports with the
        # host and with other containers, so it boots only to basic.target by default. Another
        # root boots to its default target, as a real machine would.
        self.target = target or ("basic.target" if root is None else None)
        self.name = name or f"sockact-{uuid.uuid4().hex[:10]}"  # nspawn needs a fresh name each time
        self.boot_timeout = boot_timeout
        self.nspawn_args = tuple(nspawn_args)
        self.leader: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None
        self._users_lock: int | None = None

    # -- life cycle

    def _boot(self) -> None:
        directory = self.root or HOST_ROOT
        self._users_lock = _take_host_mounts([
            # nspawn cannot boot "/" itself; a non-recursive bind of it shows the root file
            # system alone, without the host's /proc, /sys, /dev and /run.
            (HOST_ROOT, ["--bind", "/"]),
            # nspawn cleans up its propagation directory under here, and refuses to unless it
            # is a tmpfs ("Attempted to remove disk file system").
            (NSPAWN_RUNTIME, ["-t", "tmpfs", "tmpfs"]),
        ])
        argv = nspawn_argv(directory, self.name, overlay=self.overlay, target=self.target, extra=self.nspawn_args)
        # kept open for the life of the container, closed in close()
        self._log = tempfile.NamedTemporaryFile(prefix=f"{self.name}-", suffix=".log")  # noqa: SIM115
        # The death signal follows the thread that forks: start containers from the main thread.
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        try:
            self.leader = wait_for_leader(self._proc, self.name, self.boot_timeout)
        except ContainerError as exc:
            raise ContainerError(f"{exc}:\n{self.console_log()}") from None

    def wait_until_running(self, timeout: float | None = None) -> str:
        """Wait until ``systemctl is-system-running`` says running or degraded; returns which."""
        deadline = time.monotonic() + (self.boot_timeout if timeout is None else timeout)
        state = ""
        while time.monotonic() < deadline:
            try:
                state = self.run(["systemctl", "is-system-running"], check=False, timeout=10).stdout.strip()
            except subprocess.TimeoutExpired:
                continue  # a busy machine in the middle of a boot: ask again, until the deadline
            if state in ("running", "degraded"):
                return state
            if self._proc is not None and self._proc.poll() is not None:
                break
            time.sleep(0.1)
        raise ContainerError(f"container {self.name} is {state or 'unreachable'}, not running:\n"
                             f"{self.console_log()}")

    def close(self, timeout: float = 20.0) -> None:
        """Power off and wait; SIGTERM nspawn, then SIGKILL it, if the container does not stop.

        Safe to call more than once, and on a container that never booted.
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            if self.leader is not None:
                with contextlib.suppress(subprocess.SubprocessError, OSError):
                    self.run(["systemctl", "--no-block", "poweroff"], check=False, timeout=5)
            for sig, wait in ((None, timeout), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
                if sig is not None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(wait)
                    break
        self.leader = None
        if self._log is not None:
            self._log.close()
            self._log = None
        users, self._users_lock = self._users_lock, None
        if users is not None:
            _release_host_mounts(users)

    @property
    def nspawn_pid(self) -> int | None:
        """The host pid of the systemd-nspawn process, while it runs."""
        return self._proc.pid if self._proc is not None else None

    def console_log(self) -> str:
        """What nspawn and the container's console printed so far."""
        if self._log is None:
            return ""
        return Path(self._log.name).read_text(errors="replace")

    # -- commands and files

    def run(self, argv: Sequence[str] | str, *, check: bool = True, input: str | None = None,
            timeout: float = 60.0, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in the container (a string runs under sh -c); returns the completed process."""
        if self.leader is None:
            raise ContainerError(f"container {self.name} is not running")
        if isinstance(argv, str):
            argv = ["sh", "-c", argv]
        full = ["nsenter", "-t", str(self.leader), "-a", "env", "-i",
                *(f"{k}={v}" for k, v in {**INSIDE_ENV, **(env or {})}.items()), *argv]
        result = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout,
                                check=False)
        if check and result.returncode != 0:
            raise ContainerError(f"in {self.name}: {shlex.join(argv)} exited with {result.returncode}\n"
                                 f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    def path(self, inside: str) -> Path:
        """The host's view of a path inside the container (through its PID 1's root)."""
        if self.leader is None:
            raise ContainerError(f"container {self.name} is not running")
        return Path(f"/proc/{self.leader}/root") / inside.lstrip("/")

    def write(self, inside: str, text: str | bytes, mode: int = 0o644) -> None:
        """Create or replace a file inside, with its parent directories."""
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, str):
            text = text.encode()
        target.write_bytes(text)
        target.chmod(mode)

    def remove(self, inside: str) -> None:
        """Remove a file or a directory tree inside; missing is fine."""
        target = self.path(inside)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)

    def copy_in(self, source: str | os.PathLike[str], inside: str, *, ignore: Sequence[str] = ()) -> None:
        """Copy a file or directory tree from the host to a path inside, replacing what is there."""
        target = self.path(inside)
        if Path(source).is_dir():
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns(*ignore) if ignore else None)
            # readable by every user, as files installed by a package would be
            subprocess.run(["chmod", "-R", "u=rwX,go=rX", str(target)], check=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            target.chmod(0o644)
