"""Clean Debian 12 and 13 root file systems, for installing the .deb the way a new user would.

``ensure_rootfs(suite)`` debootstraps a minimal bookworm or trixie with systemd, python3 and curl,
once per machine and suite: the result is cached (under /var/cache by default) and rebuilt when it
is missing or broken. Tests boot it with ``nspawn.Container(root, overlay=True)``, so every session
starts from the same clean tree and nothing they do is written back to the cache.

The mirror is read from the host's apt sources, both the one-line format (sources.list, *.list)
and deb822 (*.sources); nothing names a host. The host's Debian sources are written into the root
with their suites renamed to the root's (bookworm-security becomes trixie-security on a trixie
root: the same archive serves every release), and the auth files and keyrings they reference are
copied, so apt inside can fetch the .deb's dependencies: the container shares the host's network.
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
# The Debian releases the .deb is tested on: 12 and 13 (systemd 252 and 257, Python 3.11 and 3.13).
SUITES = ("bookworm", "trixie")
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


def host_release(os_release: Path = Path("/etc/os-release")) -> str:
    """The host's Debian codename (``VERSION_CODENAME``), whose suites its apt sources name."""
    for line in os_release.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME":
            return value.strip().strip('"')
    raise RootfsError(f"{os_release} names no VERSION_CODENAME")


def _rename_suite(name: str, host: str, suite: str) -> str | None:
    """``host`` or ``host-updates`` as ``suite``'s; None for a suite of another archive."""
    if name == host or name.startswith(host + "-"):
        return suite + name[len(host):]
    return None


def debian_sources(sources: list[Source], host: str, suite: str) -> list[Source]:
    """The host's sources of its own release, renamed to ``suite``; third-party sources left out."""
    renamed: list[Source] = []
    for source in sources:
        suites = tuple(n for n in (_rename_suite(s, host, suite) for s in source.suites) if n)
        if suites:
            renamed.append(Source(source.uri, suites, source.components, source.signed_by))
    return renamed


def host_mirror(apt_dir: Path = Path("/etc/apt"), suite: str = SUITE, host: str | None = None) -> str:
    """The URI of the host's archive for ``suite`` with main, e.g. what debootstrap should use."""
    for source in debian_sources(host_sources(apt_dir), host or host_release(), suite):
        if suite in source.suites and "main" in source.components:
            return source.uri
    raise RootfsError(f"no apt source for the host's release with main in {apt_dir}/sources.list*; "
                      f"set one up, or set {CACHE_ENV} to a prepared root")


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def recipe(mirror: str, suite: str = SUITE) -> str:
    return f"suite={suite} variant=minbase packages={','.join(PACKAGES)} mirror={mirror}\n"


def is_usable(root: Path, mirror: str, suite: str = SUITE) -> bool:
    """A complete build of the current recipe, with no half-installed package."""
    stamp = root / STAMP
    if not stamp.is_file() or stamp.read_text() != recipe(mirror, suite):
        return False
    if not all((root / p).exists() for p in REQUIRED):
        return False
    audit = subprocess.run(["dpkg", f"--root={root}", "--audit"], capture_output=True, text=True, check=False)
    return audit.returncode == 0 and not audit.stdout.strip()


@contextlib.contextmanager
def cache_locked(directory: Path) -> Iterator[None]:
    # Two test sessions (or `make run` beside `make test`) must not build the cache at once.
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def rootfs_path(suite: str = SUITE) -> Path:
    return cache_dir() / f"{suite}-rootfs"


def ensure_rootfs(suite: str = SUITE, log: Path | None = None) -> Path:
    """The cached clean root of ``suite``, built first if it is missing or broken. Needs root and
    network."""
    mirror = host_mirror(suite=suite)
    base = cache_dir()
    root = rootfs_path(suite)
    with cache_locked(base):
        if is_usable(root, mirror, suite):
            return root
        if shutil.which("debootstrap") is None:
            raise RootfsError("debootstrap is not installed (apt-get install debootstrap)")
        building = base / f"{suite}-rootfs.building"
        for stale in (building, root):
            if stale.exists():
                shutil.rmtree(stale)
        argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite, str(building), mirror]
        log = log or base / f"debootstrap-{suite}.log"
        with open(log, "w") as out:
            try:
                done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=DEBOOTSTRAP_TIMEOUT,
                                      check=False)
            except subprocess.TimeoutExpired:
                raise RootfsError(f"debootstrap took over {DEBOOTSTRAP_TIMEOUT} s; see {out.name}") from None
        if done.returncode != 0:
            raise RootfsError(f"debootstrap failed ({done.returncode}); see {log}")
        copy_apt_config(Path("/etc/apt"), building, suite)
        _quiet_boot(building)
        (building / STAMP).write_text(recipe(mirror, suite))
        building.rename(root)
        return root


def as_deb822(sources: list[Source]) -> str:
    stanzas = []
    for source in sources:
        lines = ["Types: deb", f"URIs: {source.uri}", f"Suites: {' '.join(source.suites)}",
                 f"Components: {' '.join(source.components)}"]
        if source.signed_by:
            lines.append(f"Signed-By: {' '.join(source.signed_by)}")
        stanzas.append("\n".join(lines) + "\n")
    return "\n".join(stanzas)


def copy_apt_config(apt_dir: Path, root: Path, suite: str = SUITE, host: str | None = None) -> None:
    """The host's Debian sources renamed to ``suite``, its auth files and the keyrings they name,
    into the root's /etc/apt."""
    target = root / "etc/apt"
    sources = debian_sources(host_sources(apt_dir), host or host_release(), suite)
    # debootstrap wrote a sources.list for the mirror alone; the host's sources replace it, so the
    # root also sees the security and updates suites.
    (target / "sources.list").unlink(missing_ok=True)
    (target / "sources.list.d").mkdir(parents=True, exist_ok=True)
    (target / "sources.list.d/debian.sources").write_text(as_deb822(sources))
    for f in [apt_dir / "auth.conf", *sorted((apt_dir / "auth.conf.d").glob("*"))]:
        if f.is_file():
            _copy(f, target / f.relative_to(apt_dir), mode=0o600)  # apt reads auth files as root only
    for source in sources:
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


# -- pip inside a root: the host's configuration, so pip reaches the package index the way the
# host's pip does (a proxy's certificate authority, a timeout, a mirror).

PIP_CONFIGS = (Path("/etc/pip.conf"), Path("/etc/xdg/pip/pip.conf"), Path.home() / ".config/pip/pip.conf",
               Path.home() / ".pip/pip.conf")
# Options that name a file pip reads: the file goes into the root beside the option.
PIP_FILE_OPTIONS = ("cert", "client-cert")
# Where the host's extra certificate authorities live: a root whose ca-certificates package gets
# installed (as a dependency of a build tool, say) rebuilds its bundle from them.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")


def _is_local(value: str) -> bool:
    """A value naming this machine's files (a wheel directory, a file:// index), absent in a root."""
    return any(v.startswith(("/", "file:")) for v in value.split())


def host_pip_options(environ: Mapping[str, str], configs: Iterable[Path] = PIP_CONFIGS) -> dict[str, str]:
    """The host's pip options as [global] keys: its config files, then PIP_* variables (which win,
    as in pip). Local wheel directories and file:// indexes are left out; files named by
    PIP_FILE_OPTIONS are kept (pip_files() copies them)."""
    options: dict[str, str] = {}
    for path in configs:
        parser = configparser.ConfigParser()
        if path.is_file():
            parser.read(path)
            for section in ("global", "install"):
                if parser.has_section(section):
                    options.update(parser.items(section))
    for name, value in environ.items():
        if name.startswith("PIP_") and name != "PIP_CONFIG_FILE":
            options[name[4:].lower().replace("_", "-")] = value
    return {k: v for k, v in options.items() if k in PIP_FILE_OPTIONS or not _is_local(v)}


def pip_files(environ: Mapping[str, str]) -> dict[str, bytes]:
    """{path inside a root: content}: an /etc/pip.conf carrying the host's options, and the files
    they name; write them into a booted root before its pip runs."""
    options = host_pip_options(environ)
    files = {"/etc/pip.conf": ("[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(options.items()))).encode()}
    for key in PIP_FILE_OPTIONS:
        if key in options and Path(options[key]).is_file():
            files[options[key]] = Path(options[key]).read_bytes()
    if LOCAL_CA_DIR.is_dir():
        for cert in sorted(LOCAL_CA_DIR.glob("*.crt")):
            files[str(cert)] = cert.read_bytes()
    return files
