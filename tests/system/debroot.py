"""A clean Debian 12 root file system, for installing the .deb the way a new user would.

``ensure_rootfs()`` debootstraps a minimal bookworm with systemd, python3 and curl, once per
machine: the result is cached (under /var/cache by default) and rebuilt when it is missing or
broken. Tests boot it with ``nspawn.Container(root, overlay=True)``, so every session starts from
the same clean tree and nothing they do is written back to the cache.

The mirror is read from the host's apt sources, both the one-line format (sources.list, *.list)
and deb822 (*.sources); nothing names a host. The host's apt sources, auth files and the
keyrings they reference are copied into the root, so apt inside can fetch the .deb's
dependencies: the container shares the host's network.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "iproute2", "curl")
DEFAULT_CACHE = Path("/var/cache/sockact-tests")
CACHE_ENV = "SOCKACT_ROOTFS_CACHE"
# Written last: a root without it was interrupted mid-build. (No file in the root is named after
# sockact: the purge test looks for any such file.) Its content is the recipe, so a
# change of suite, packages or mirror rebuilds the cache.
STAMP = "etc/test-rootfs-recipe"
# What a booted root must have; a root missing one is broken and is rebuilt.
REQUIRED = ("usr/lib/systemd/systemd", "usr/bin/python3", "usr/bin/apt-get", "usr/bin/curl",
            "usr/bin/dbus-daemon")
# debootstrap alone takes about 1.5 minutes; a stalled mirror should fail the tests, not hang them.
DEBOOTSTRAP_TIMEOUT = 900


class RootfsError(RuntimeError):
    """The root file system could not be built; the message says why."""


@dataclass(frozen=True)
class Source:
    """One apt source: its archive URI and suites, whichever file format it came from."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: tuple[str, ...] = ()


def parse_one_line(text: str) -> Iterator[Source]:
    """Sources in the one-line format: ``deb [opt=val ...] URI SUITE [COMPONENT ...]``."""
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue  # deb-src and blank lines
        options: dict[str, str] = {}
        rest = line[4:].strip()
        if rest.startswith("["):
            opts, _, rest = rest[1:].partition("]")
            options = dict(o.split("=", 1) for o in opts.split() if "=" in o)
        fields = rest.split()
        if len(fields) >= 2:
            signed = tuple(p for p in options.get("signed-by", "").split(",") if p.startswith("/"))
            yield Source(fields[0], (fields[1],), tuple(fields[2:]), signed)


def parse_deb822(text: str) -> Iterator[Source]:
    """Sources in the deb822 format (*.sources): stanzas of ``Field: value`` lines."""
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += "\n" + line.strip()  # a continuation line (e.g. an inline key)
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        signed = tuple(p for p in fields.get("signed-by", "").split() if p.startswith("/"))
        for uri in fields.get("uris", "").split():
            yield Source(uri, tuple(fields.get("suites", "").split()),
                         tuple(fields.get("components", "").split()), signed)


def source_files(apt_dir: Path = Path("/etc/apt")) -> list[Path]:
    """The files apt reads its sources from, in apt's order."""
    files = [apt_dir / "sources.list"]
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    return [f for f in files if f.is_file()]


def host_sources(apt_dir: Path = Path("/etc/apt")) -> list[Source]:
    sources: list[Source] = []
    for f in source_files(apt_dir):
        parse = parse_deb822 if f.suffix == ".sources" else parse_one_line
        sources += parse(f.read_text(errors="replace"))
    return sources


def host_mirror(apt_dir: Path = Path("/etc/apt"), suite: str = SUITE) -> str:
    """The URI of the host's archive for ``suite`` with main, e.g. what debootstrap should use."""
    for source in host_sources(apt_dir):
        if suite in source.suites and "main" in source.components:
            return source.uri
    raise RootfsError(f"no apt source for {suite} main in {apt_dir}/sources.list*; "
                      f"set one up, or set {CACHE_ENV} to a prepared root")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def recipe(mirror: str) -> str:
    return f"suite={SUITE} variant=minbase packages={','.join(PACKAGES)} mirror={mirror}\n"


def is_usable(root: Path, mirror: str) -> bool:
    """A complete build of the current recipe, with no half-installed package."""
    stamp = root / STAMP
    if not stamp.is_file() or stamp.read_text() != recipe(mirror):
        return False
    if not all((root / p).exists() for p in REQUIRED):
        return False
    audit = subprocess.run(["dpkg", f"--root={root}", "--audit"], capture_output=True, text=True, check=False)
    return audit.returncode == 0 and not audit.stdout.strip()


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    # Two test sessions (or `make run` beside `make test`) must not build the cache at once.
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_rootfs(log: Path | None = None) -> Path:
    """The cached clean root, built first if it is missing or broken. Needs root and network."""
    mirror = host_mirror()
    base = cache_dir()
    root = base / f"{SUITE}-rootfs"
    with _locked(base):
        if is_usable(root, mirror):
            return root
        if shutil.which("debootstrap") is None:
            raise RootfsError("debootstrap is not installed (apt-get install debootstrap)")
        building = base / f"{SUITE}-rootfs.building"
        for stale in (building, root):
            if stale.exists():
                shutil.rmtree(stale)
        argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(building), mirror]
        with open(log or base / "debootstrap.log", "w") as out:
            try:
                done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=DEBOOTSTRAP_TIMEOUT,
                                      check=False)
            except subprocess.TimeoutExpired:
                raise RootfsError(f"debootstrap took over {DEBOOTSTRAP_TIMEOUT} s; see {out.name}") from None
        if done.returncode != 0:
            raise RootfsError(f"debootstrap failed ({done.returncode}); see {log or base / 'debootstrap.log'}")
        copy_apt_config(Path("/etc/apt"), building)
        _quiet_boot(building)
        (building / STAMP).write_text(recipe(mirror))
        building.rename(root)
        return root


def copy_apt_config(apt_dir: Path, root: Path) -> None:
    """The host's sources, auth files and the keyrings they name, into the root's /etc/apt."""
    target = root / "etc/apt"
    # debootstrap wrote a sources.list for the mirror alone; the host's files replace it, so the
    # root also sees the host's security and updates suites.
    (target / "sources.list").unlink(missing_ok=True)
    for f in source_files(apt_dir):
        _copy(f, target / f.relative_to(apt_dir))
    for f in [apt_dir / "auth.conf", *sorted((apt_dir / "auth.conf.d").glob("*"))]:
        if f.is_file():
            _copy(f, target / f.relative_to(apt_dir), mode=0o600)  # apt reads auth files as root only
    for source in host_sources(apt_dir):
        for keyring in source.signed_by:
            dest = root / keyring.lstrip("/")
            if Path(keyring).is_file() and not dest.exists():
                _copy(Path(keyring), dest)


def _copy(source: Path, dest: Path, mode: int | None = None) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, dest)
    if mode is not None:
        dest.chmod(mode)


def _quiet_boot(root: Path) -> None:
    """A host name of its own, and apt output that reads well in a log."""
    (root / "etc/hostname").write_text("debian-test\n")
    # apt's progress bar would fill the tests' logs with escape sequences.
    (root / "etc/apt/apt.conf.d/90test-rootfs").write_text('Dpkg::Use-Pty "false";\n')
