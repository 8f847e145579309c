"""Boot a clean Debian root as a QEMU virtual machine with its own kernel, run commands in it.

Why a VM beside the containers: a container shares the host's kernel and its cgroup hierarchy. A
host booted hybrid keeps the memory controller on cgroup v1, so no container gets a cgroup v2
memory controller, and the kernel cannot hold one worker to ``memory.max`` there. A VM boots its
own kernel with ``systemd.unified_cgroup_hierarchy=1``, and its systemd has the v2 controller.

- ``ensure_image(suite, deb)`` makes a disk image from debroot's cached clean root: a copy of it,
  booted once in a container to install a kernel, the QEMU guest agent and the .deb's dependencies
  (Depends and Recommends, as apt would install them) with apt, then written into an ext4 image by
  ``mkfs.ext4 -d``, beside the kernel and initramfs. It is cached beside the roots and rebuilt when
  it is missing or its recipe changed (another root, another list of packages).
- ``VirtualMachine(image, forward=PORTS)`` boots it with QEMU. KVM is not assumed (a nested or
  paravirtual /dev/kvm may not run a stock kernel), so it runs under software emulation (TCG):
  slow, about a minute to boot, so every wait on it is on a state with a generous deadline. The
  disk is opened with ``-snapshot``: the image stays clean, what the VM writes is dropped at exit.
  Networking is QEMU's user mode, restricted (the guest reaches nothing outside), with each port
  of ``forward`` forwarded from a free port of the host's 127.0.0.1 (``ports``) to the guest's own
  address (not its loopback: a service in the VM must listen on 0.0.0.0 to be reached). Commands run through the
  QEMU guest agent on a virtio-serial port, with the same interface as ``nspawn.Container``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from debroot import STAMP, cache_dir, cache_locked, ensure_rootfs
from nspawn import INSIDE_ENV, Container, Machine, die_with_parent, free_port

QEMU = "qemu-system-x86_64"
# What the VM needs besides the clean root: a kernel (its initramfs comes with it) and the agent
# that runs commands for the tests.
IMAGE_PACKAGES = ("linux-image-amd64", "qemu-guest-agent")
# Timers that would wake apt, dpkg or fstrim in the middle of a test, on an emulated CPU.
QUIET_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "fstrim.timer",
               "e2scrub_all.timer", "man-db.timer")
# Part of the recipe: raise it when _install() changes, so the cached images are rebuilt.
IMAGE_LAYOUT = 2
IMAGE_SIZE = 3 << 30  # sparse; the root takes about 1 GiB of it
GUEST_ADDRESS = "10.0.2.15"  # QEMU user networking's address for the guest
NETWORK_UNIT = f"[Match]\nName=eth0\n\n[Network]\nAddress={GUEST_ADDRESS}/24\nGateway=10.0.2.2\n"
KERNEL_ARGS = ("root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1 systemd.unified_cgroup_hierarchy=1 "
               "systemd.show_status=0")
# Under software emulation, measured here: the agent answers after 30-55 s, systemd runs after
# about 60 s. The deadline leaves room for a machine shared with other jobs.
BOOT_TIMEOUT = 420.0
APT_TIMEOUT = 900.0
FORWARD_ATTEMPTS = 3
# The guest kernel reaches its init within seconds under emulation, but TCG has been seen to hang a boot
# for good in the kernel's first second (after "IP idents hash table entries"). A kernel that has not
# reached init by KERNEL_STALL is such a hang: QEMU is stopped and the VM booted again, BOOT_ATTEMPTS in all.
KERNEL_STALL = 120.0
KERNEL_DONE = "Freeing unused kernel image"  # printed just before the kernel runs init
BOOT_ATTEMPTS = 2


class VirtualMachineError(RuntimeError):
    """The VM failed to boot, a command in it failed, or its agent stopped answering; the message says why."""


class KernelStalled(VirtualMachineError):
    """The guest kernel did not reach init within KERNEL_STALL seconds: a hung boot, tried again."""


def missing_qemu() -> str | None:
    """Why a VM cannot run here, or None if it can (software emulation needs no /dev/kvm)."""
    if shutil.which(QEMU) is None:
        return f"the VM tests need {QEMU} (apt-get install qemu-system-x86)"
    return None


# -- the image


@dataclass(frozen=True)
class Image:
    """A bootable disk image and the kernel and initramfs that boot it."""

    disk: Path
    kernel: Path
    initrd: Path


def deb_packages(deb: Path) -> str:
    """What apt installs with ``deb`` besides itself, as one ``apt-get satisfy`` argument."""
    fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends", "Recommends"], capture_output=True,
                            text=True, check=True).stdout
    return ", ".join(line.split(":", 1)[1].strip() for line in fields.splitlines() if ":" in line)


def image_recipe(root: Path, packages: str) -> str:
    return (root / STAMP).read_text() + (f"vm {IMAGE_LAYOUT} packages={','.join(IMAGE_PACKAGES)} "
                                         f"satisfy={packages}\n")


def image_path(suite: str) -> Path:
    return cache_dir() / f"{suite}-vm"


def _image(directory: Path) -> Image:
    return Image(directory / "root.img", directory / "vmlinuz", directory / "initrd.img")


def ensure_image(suite: str, deb: Path) -> Image:
    """The cached VM image of ``suite`` with the dependencies of ``deb`` installed, built first if it is
    missing or was built from another recipe. Needs root and network (apt, as ensure_rootfs does)."""
    root = ensure_rootfs(suite)
    packages = deb_packages(deb)
    recipe = image_recipe(root, packages)
    done = image_path(suite)
    with cache_locked(cache_dir()):
        image = _image(done)
        stamp = done / "recipe"
        if stamp.is_file() and stamp.read_text() == recipe and all(
                p.is_file() for p in (image.disk, image.kernel, image.initrd)):
            return image
        building = cache_dir() / f"{suite}-vm.building"
        for stale in (building, done):
            if stale.exists():
                shutil.rmtree(stale)
        tree = building / "root"
        building.mkdir()
        subprocess.run(["cp", "-a", str(root), str(tree)], check=True)
        (tree / STAMP).unlink()  # not a clean root any more: nothing may take it for one
        _install(tree, packages)
        image = _image(building)
        shutil.copyfile(tree / "vmlinuz", image.kernel)  # the kernel package's links to /boot
        shutil.copyfile(tree / "initrd.img", image.initrd)
        with open(image.disk, "wb") as disk:
            disk.truncate(IMAGE_SIZE)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(tree), str(image.disk)], check=True)
        shutil.rmtree(tree)
        stamp = building / "recipe"
        stamp.write_text(recipe)
        building.rename(done)
        return _image(done)


def _install(tree: Path, packages: str) -> None:
    """In a container of ``tree`` (written back): the kernel, the agent and ``packages``, with apt;
    then the VM's own files. ``apt-get update`` leaves its lists in the image: the VM, cut off from
    the network, installs the .deb from what is there."""
    with Container(tree, overlay=False) as booted:
        booted.run("apt-get update -q", timeout=APT_TIMEOUT)
        apt = "DEBIAN_FRONTEND=noninteractive apt-get -y -q"
        booted.run(f"{apt} install --no-install-recommends {' '.join(IMAGE_PACKAGES)}", timeout=APT_TIMEOUT)
        booted.run(["sh", "-c", f'{apt} satisfy "$1"', "-", packages], timeout=APT_TIMEOUT)
        # apt's binary caches are kept (clean drops them): built here, not under emulation at each install
        booted.run("apt-get clean && apt-cache gencaches")
        booted.write("/etc/fstab", "/dev/vda / ext4 rw 0 1\n")
        booted.write("/etc/systemd/network/10-vm.network", NETWORK_UNIT)
        booted.run("systemctl enable systemd-networkd.service")
        booted.run(["systemctl", "mask", *QUIET_UNITS])


# -- the machine


class VirtualMachine(Machine):
    """One booted VM of an Image. Use as a context manager, or call start() (which boots, and waits until
    the guest agent answers and systemd reports running) and close()."""

    def __init__(self, image: Image, *, forward: Sequence[int] = (), name: str | None = None,
                 memory_mb: int = 1024, cpus: int = 2, boot_timeout: float = BOOT_TIMEOUT) -> None:
        """``forward``: the guest's TCP ports to reach from the host; ``ports`` maps each to the port of
        the host's 127.0.0.1 that QEMU forwards to it, chosen free at boot."""
        # Nothing happens here: start() boots, so a constructed VM needs no clean-up.
        self.image = image
        self.forward = tuple(forward)
        self.ports: dict[int, int] = {}
        self.name = name or f"sockact-vm-{uuid.uuid4().hex[:10]}"
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.boot_timeout = boot_timeout
        self.leader: int | None = None  # QEMU's pid while the VM runs (Container.leader is its PID 1's)
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._agent: socket.socket | None = None
        self._buffer = b""
        self._lock = threading.Lock()  # one agent exchange at a time
        self._kernel_by: float | None = None  # while booting: when a kernel not at init yet is a hung boot

    # -- life cycle

    def argv(self, directory: str) -> list[str]:
        forwards = "".join(f",hostfwd=tcp:127.0.0.1:{host}-:{guest}" for guest, host in self.ports.items())
        return [QEMU, "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", str(self.cpus), "-m", str(self.memory_mb),
                "-nodefaults", "-display", "none", "-no-reboot", "-snapshot",
                "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd), "-append", KERNEL_ARGS,
                "-drive", f"file={self.image.disk},format=raw,if=virtio",
                "-serial", f"file:{directory}/console.log",
                "-netdev", f"user,id=net0,restrict=on{forwards}", "-device", "virtio-net-pci,netdev=net0",
                "-chardev", f"socket,path={directory}/agent.sock,server=on,wait=off,id=agent0",
                "-device", "virtio-serial", "-device", "virtserialport,chardev=agent0,name=org.qemu.guest_agent.0"]

    def _boot(self) -> None:
        for attempt in range(BOOT_ATTEMPTS):
            try:
                self._boot_once()
                return
            except KernelStalled:
                if attempt + 1 == BOOT_ATTEMPTS:
                    raise
                self.close()  # and boot again, from a fresh directory

    def _boot_once(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix=f"{self.name}-")
        directory = self._dir.name
        deadline = time.monotonic() + self.boot_timeout
        for attempt in range(FORWARD_ATTEMPTS):
            # A port free a moment ago may be taken by another test by the time QEMU binds it: QEMU
            # then exits at once, and another pick of ports is tried.
            self.ports = {guest: free_port() for guest in self.forward}
            with open(f"{directory}/qemu.log", "wb") as log:
                # The death signal follows the thread that forks: start VMs from the main thread.
                self._proc = subprocess.Popen(self.argv(directory), stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
            self.leader = self._proc.pid
            self._kernel_by = time.monotonic() + KERNEL_STALL
            try:
                self._connect(directory, deadline)
                break
            except VirtualMachineError:
                if attempt + 1 == FORWARD_ATTEMPTS or "Could not set up host forwarding" not in self.qemu_log():
                    raise
        # Until the guest's agent runs, what we write waits in the port; sync on a fresh id each
        # time, and drop whatever older answer comes first.
        sync = 0
        while True:
            self._check_alive(deadline, "its guest agent")
            sync += 1
            try:
                if self._call("guest-sync", {"id": sync}, timeout=5, sync=sync) == sync:
                    return
            except (TimeoutError, VirtualMachineError):
                pass
            except OSError:
                # QEMU's end of the port may drop our connection while the guest's agent starts (seen
                # once on a trixie boot): connect again, within the same deadline.
                if self._agent is not None:
                    self._agent.close()
                    self._agent = None
                self._connect(directory, deadline)

    def _connect(self, directory: str, deadline: float) -> None:
        """Connect to QEMU's end of the agent's port, once QEMU has made it."""
        while self._agent is None:
            self._check_alive(deadline, "its agent socket")
            agent = socket.socket(socket.AF_UNIX)
            try:
                agent.connect(f"{directory}/agent.sock")
                self._agent = agent
            except OSError:
                agent.close()
                time.sleep(0.1)

    def _check_alive(self, deadline: float, what: str) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise VirtualMachineError(f"{QEMU} exited with {self._proc.returncode} before {what} answered:\n"
                                      f"{self.qemu_log()}\n{self.console_log()}")
        if self._kernel_by is not None and time.monotonic() > self._kernel_by:
            console = self.console_log()
            if KERNEL_DONE not in console:
                raise KernelStalled(f"VM {self.name}: the kernel did not reach init within {KERNEL_STALL:.0f} s:\n"
                                    f"{console[-2000:]}")
            self._kernel_by = None
        if time.monotonic() > deadline:
            raise VirtualMachineError(f"VM {self.name}: no answer from {what} within {self.boot_timeout:.0f} s:\n"
                                      f"{self.console_log()}")

    def wait_until_running(self) -> str:
        """Wait until ``systemctl is-system-running`` says running or degraded; returns which."""
        state = self.run("systemctl is-system-running --wait", check=False, timeout=self.boot_timeout).stdout.strip()
        if state not in ("running", "degraded"):
            raise VirtualMachineError(f"VM {self.name} is {state!r}, not running:\n{self.console_log()}")
        return state

    def close(self, timeout: float = 20.0) -> None:
        """Stop QEMU; what the VM wrote is dropped with it (-snapshot), so no shutdown is waited for.
        Safe to call more than once, and on a VM that never booted."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
                    break
        self.leader = None
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def _read(self, name: str) -> str:
        if self._dir is None:
            return ""
        with contextlib.suppress(FileNotFoundError):
            return Path(self._dir.name, name).read_text(errors="replace")
        return ""

    def console_log(self) -> str:
        """What the guest printed on its serial console so far (the kernel, systemd)."""
        return self._read("console.log")

    def qemu_log(self) -> str:
        return self._read("qemu.log")

    # -- the guest agent

    def _call(self, command: str, arguments: Mapping[str, object] | None = None, *, timeout: float = 60.0,
              sync: int | None = None) -> object:
        """One command to the agent; its "return". With ``sync``, answers other than that id are dropped."""
        if self._agent is None:
            raise VirtualMachineError(f"VM {self.name} is not running")
        request = {"execute": command, **({"arguments": arguments} if arguments else {})}
        with self._lock:
            self._agent.settimeout(timeout)
            if sync is not None:
                self._buffer = b""
            self._agent.sendall(json.dumps(request).encode() + b"\n")
            while True:
                while b"\n" not in self._buffer:
                    chunk = self._agent.recv(1 << 16)
                    if not chunk:
                        raise VirtualMachineError(f"VM {self.name}: the agent's socket closed")
                    self._buffer += chunk
                line, _, self._buffer = self._buffer.partition(b"\n")
                try:
                    answer = json.loads(line)
                except ValueError:
                    continue  # a partial line from before a sync
                if "error" in answer:
                    raise VirtualMachineError(f"VM {self.name}: {command}: {answer['error']}")
                if sync is None or answer.get("return") == sync:
                    return answer.get("return")

    # -- commands and files (as nspawn.Container's)

    def run(self, argv: Sequence[str] | str, *, check: bool = True, input: str | bytes | None = None,
            timeout: float = 60.0, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in the VM (a string runs under sh -c); returns the completed process. Raises
        subprocess.TimeoutExpired if it runs past ``timeout`` (it is left running)."""
        if isinstance(argv, str):
            argv = ["sh", "-c", argv]
        request: dict[str, object] = {"path": argv[0], "arg": list(argv[1:]), "capture-output": True,
                                      "env": [f"{k}={v}" for k, v in {**INSIDE_ENV, **(env or {})}.items()]}
        if input is not None:
            request["input-data"] = base64.b64encode(input.encode() if isinstance(input, str) else input).decode()
        started = self._call("guest-exec", request)
        assert isinstance(started, dict)
        deadline = time.monotonic() + timeout
        interval = 0.02
        while True:
            status = self._call("guest-exec-status", {"pid": started["pid"]})
            assert isinstance(status, dict)
            if status["exited"]:
                break
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(list(argv), timeout)
            time.sleep(interval)
            interval = min(interval * 2, 0.5)
        out, err = (base64.b64decode(status.get(f"{s}-data", "")).decode(errors="replace") for s in ("out", "err"))
        code = status.get("exitcode", 128 + status.get("signal", 0))
        if check and code != 0:
            raise VirtualMachineError(f"in {self.name}: {shlex.join(argv)} exited with {code}\n"
                                      f"stdout: {out}\nstderr: {err}")
        return subprocess.CompletedProcess(list(argv), code, out, err)

    def write(self, inside: str, text: str | bytes, mode: int = 0o644) -> None:
        """Create or replace a file inside, with its parent directories."""
        self.run(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"', "-", inside,
                  f"{mode:o}"], input=text)

    def remove(self, inside: str) -> None:
        """Remove a file or a directory tree inside; missing is fine."""
        self.run(["rm", "-rf", "--", inside])

    def copy_in(self, source: str | os.PathLike[str], inside: str) -> None:
        """Copy a file from the host to a path inside, replacing what is there."""
        self.write(inside, Path(source).read_bytes())

