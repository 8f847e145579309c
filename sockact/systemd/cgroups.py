"""Each worker in a cgroup of its own, so that the kernel holds it alone to worker_memory_limit.

Under systemd with Delegate=yes the service owns the subtree below its cgroup. cgroup v2 lets a
cgroup whose controllers are enabled for its children hold no process itself ("no internal
processes"), so the supervisor first moves itself (and whatever else the service's cgroup holds)
into ``supervisor/``, then enables the memory controller (and cpu, when delegated) for the children,
and each worker runs in ``worker-<slot>/`` with ``memory.max`` set and ``memory.oom.group`` on:
when the worker passes its limit, the kernel's OOM killer kills that worker and its own children,
and nothing else. The supervisor then sees one dead worker (SIGKILL), answers its clients with
502s as for any SIGKILL, replaces it, and reads memory.events to say why it died.

The group of a slot is made (or emptied of its limit, and reused) by the supervisor before the
fork; the worker moves itself into it first thing after the fork, before it loads the app, because
cgroup v2 charges a page to the group it was faulted in and does not move charges later.

Without delegation the setting is refused at start with the reason (``CgroupError``): an operator
who asked the kernel for a hard limit should not silently get something else. max_worker_memory,
the graceful recycle, needs no cgroup and works everywhere.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from sockact.errors import ConfigError

CGROUP_FS = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"
SUPERVISOR = "supervisor"  # the supervisor's own group, beside the workers'
REMEDY = "run it under systemd with Delegate=yes and ProtectControlGroups=no (the memory-limit.conf drop-in)"


class CgroupError(ConfigError):
    """worker_memory_limit cannot be enforced here; the message says why (one line)."""


def own_cgroup(text: str) -> str:
    """The cgroup v2 path in the text of /proc/self/cgroup ('0::/system.slice/x.service')."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise CgroupError(f"worker_memory_limit: no unified cgroup hierarchy (cgroup v2) here; {REMEDY}")


def _read(path: Path) -> str:
    return path.read_text(encoding="ascii")


def _write(path: Path, value: str) -> None:
    # cgroupfs files take one value per write(); open without truncation and without a buffer.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, value.encode("ascii"))
    finally:
        os.close(fd)


def _keyed(text: str, key: str) -> int:
    """The value of ``key`` in a flat keyed file (memory.events, cpu.stat); 0 when absent."""
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


@dataclass
class Usage:
    """What a worker's cgroup has used: memory now, CPU since the group was made."""

    memory: int  # bytes, memory.current
    cpu: float  # seconds, cpu.stat usage_usec (user and system)


@dataclass
class WorkerGroups:
    """The service's delegated cgroup, with the supervisor moved out of it into ``supervisor/``."""

    service: Path
    _oom_before: dict[int, int] = field(default_factory=dict)  # each slot's oom_kill count when it was made

    @classmethod
    def delegate(cls, root: str | None = None, proc: str | None = None) -> WorkerGroups:
        """Take the service's cgroup for the workers; raises CgroupError with the reason it cannot."""
        root, proc = root or CGROUP_FS, proc or PROC_CGROUP
        try:
            path = own_cgroup(Path(proc).read_text(encoding="ascii"))
        except OSError as exc:
            raise CgroupError(f"worker_memory_limit: cannot read {proc} ({exc.strerror}); {REMEDY}") from None
        if path == "/":
            raise CgroupError(f"worker_memory_limit: sockact runs in the root cgroup, not in a service's own; {REMEDY}")
        if not (Path(root) / "cgroup.controllers").exists():
            raise CgroupError(f"worker_memory_limit: {root} is not a cgroup v2 (unified) hierarchy, so the memory "
                              "controller is cgroup v1's here; boot with systemd.unified_cgroup_hierarchy=1")
        service = Path(root) / path.lstrip("/")
        if service.name == SUPERVISOR:
            service = service.parent  # moved there already (tests that start twice in one process)
        try:
            available = _read(service / "cgroup.controllers").split()
            if "memory" not in available:
                raise CgroupError(f"worker_memory_limit: the memory controller is not delegated to {path}; {REMEDY}")
            if not os.access(service / "cgroup.procs", os.W_OK) or not os.access(service, os.W_OK):
                raise CgroupError(f"worker_memory_limit: the cgroup {path} is not writable (not delegated); {REMEDY}")
            (service / SUPERVISOR).mkdir(exist_ok=True)
            # Every process of the service's group: a cgroup with controllers for its children holds none.
            for pid in _read(service / "cgroup.procs").split():
                _write(service / SUPERVISOR / "cgroup.procs", pid)
            try:
                _write(service / "cgroup.subtree_control", "+memory +cpu" if "cpu" in available else "+memory")
            except OSError:
                # cpu is only measured (the metrics), never limited: it is not worth a refusal
                _write(service / "cgroup.subtree_control", "+memory")
        except OSError as exc:
            raise CgroupError(f"worker_memory_limit: cannot set up worker cgroups in {path} "
                              f"({exc.strerror or exc}); {REMEDY}") from None
        return cls(service)

    def group(self, slot: int) -> Path:
        return self.service / f"worker-{slot}"

    def prepare(self, slot: int, limit: int) -> Path:
        """Make slot's group with memory.max = ``limit`` bytes (0: no limit). Raises OSError."""
        group = self.group(slot)
        group.mkdir(exist_ok=True)  # left behind when a worker's own child outlived it
        _write(group / "memory.max", str(limit) if limit else "max")
        _write(group / "memory.oom.group", "1")
        self._oom_before[slot] = self._oom_kills(slot)
        return group

    def _oom_kills(self, slot: int) -> int:
        try:
            return _keyed(_read(self.group(slot) / "memory.events"), "oom_kill")
        except OSError:
            return 0

    def oom_killed(self, slot: int) -> bool:
        """Whether the kernel's OOM killer killed a process in slot's group since it was prepared."""
        return self._oom_kills(slot) > self._oom_before.get(slot, 0)

    def usage(self, slot: int) -> Usage | None:
        """slot's memory and CPU; None when its group is gone."""
        group = self.group(slot)
        try:
            memory = int(_read(group / "memory.current"))
        except (OSError, ValueError):
            return None
        try:
            cpu = _keyed(_read(group / "cpu.stat"), "usage_usec") / 1e6
        except (OSError, ValueError):
            cpu = 0.0
        return Usage(memory, cpu)

    def remove(self, slot: int) -> None:
        """A worker exited: remove its group (it stays while a child of the worker lives on)."""
        self._oom_before.pop(slot, None)
        with contextlib.suppress(OSError):
            self.group(slot).rmdir()


def enter(group: Path) -> None:
    """In a new worker, before it loads anything: move this process into ``group``."""
    _write(group / "cgroup.procs", str(os.getpid()))
