"""Listening sockets: inherited from systemd (LISTEN_FDS/LISTEN_FDNAMES) or bound from --bind.

A listener systemd passed us is systemd's: sockact never calls shutdown() on it and
never unlinks its Unix socket path, so the socket unit keeps holding clients while
the service restarts. Only sockets bound here in dev mode are sockact's to clean up.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import stat
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass

from sockact.config.parsers import DEFAULT_LISTENER, bind_address
from sockact.errors import ListenerError
from sockact.systemd.fdstore import listener_of

SUPPORTED_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
# systemd's default fd name when a socket unit sets no FileDescriptorName=
DEFAULT_NAME = DEFAULT_LISTENER
_ACTIVATION_VARS = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


@dataclass(eq=False, repr=False)
class Listener:
    """One listening socket and the name that maps it to an app."""

    sock: socket.socket
    name: str
    owned: bool  # bound by sockact itself (dev mode), so sockact may close it and unlink its path

    @property
    def address(self) -> str:
        return format_address(self.sock.family, self.sock.getsockname())

    def accept_at_connect(self) -> None:
        """Undo _bind's deferred accept, for a listener the supervisor answers itself (the metrics listener):
        no worker's read to save there, and its slots are for every client that connects, silent or not."""
        if self.owned and self.sock.family in (socket.AF_INET, socket.AF_INET6):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 0)

    @property
    def local(self) -> tuple[str, int] | None:
        """The local address of every connection accepted here, when the socket is bound to one IP
        address; None for a wildcard (0.0.0.0, ::), whose connections each have their own, and for Unix."""
        if self.sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        try:
            name = self.sock.getsockname()
        except OSError:
            return None
        host = str(name[0])
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:0.0.0.0 is a wildcard too
        if ip.is_unspecified or (mapped is not None and mapped.is_unspecified):
            return None
        return host, int(name[1])

    def close(self) -> None:
        """Close our descriptor. Never shutdown(): that would break systemd's copy of the socket. Once is
        enough: a listener bound here is closed when a stop begins, and again at the exit."""
        if self.sock.fileno() == -1:
            return
        path = self.sock.getsockname() if self.owned and self.sock.family == socket.AF_UNIX else None
        self.sock.close()
        if path and isinstance(path, str) and not path.startswith("\0"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def format_address(family: int, addr: object) -> str:
    if family == socket.AF_UNIX:
        if isinstance(addr, bytes):
            addr = addr.decode("utf-8", "replace")
        return f"unix:{addr or '(unnamed)'}"
    if family == socket.AF_INET6:
        return f"[{addr[0]}]:{addr[1]}"  # type: ignore[index]
    return f"{addr[0]}:{addr[1]}"  # type: ignore[index]


def from_systemd(environ: MutableMapping[str, str],
                 stored: list[tuple[int, str]] | None = None) -> list[Listener] | None:
    """The sockets systemd passed to this process, or None when it passed none.

    Connections a previous instance left in systemd's fd store (named by fdstore.conn_name) are
    not listeners: their ``(fd, name)`` pairs go into ``stored``, or are closed without it.

    Drops LISTEN_* from ``environ`` too: systemd-python clears only the C environment,
    and forked workers or the app's subprocesses must not see stale values.
    """
    if "LISTEN_FDS" not in environ:
        return None
    from systemd import daemon  # imported late: dev mode and `sockact check` need no libsystemd

    passed = environ.get("LISTEN_FDS")
    try:
        fds = daemon.listen_fds_with_names(unset_environment=True)
    except OSError as exc:
        # "abc", a negative count, or more fds than are open: libsystemd says EINVAL or EBADF.
        raise ListenerError(f"LISTEN_FDS={passed!r}: {exc.strerror or exc}; expected the number of sockets "
                            "passed from fd 3 on, as systemd sets it") from None
    finally:
        for var in _ACTIVATION_VARS:
            environ.pop(var, None)
    if not fds:
        # LISTEN_PID named another process (a parent's leftover): not ours, fall back to --bind.
        return None
    listeners: list[Listener] = []
    for fd, name in sorted(fds.items()):
        if listener_of(name or "") is None:
            listeners.append(_adopt(fd, name or DEFAULT_NAME))
        elif stored is not None:
            stored.append((fd, name))
        else:
            os.close(fd)
    return listeners


def describe_passed(environ: Mapping[str, str], pid: int) -> list[str] | None:
    """What systemd passed, for `sockact check`: one 'NAME=ADDRESS (fd N)' per socket, None without
    LISTEN_FDS. Only looks: the fds stay open and the variables set, for the process they are for."""
    if "LISTEN_FDS" not in environ:
        return None
    target = environ.get("LISTEN_PID", "")
    if target and target != str(pid):
        return [f"LISTEN_PID={target} names another process: none of these sockets is this one's"]
    try:
        count = int(environ["LISTEN_FDS"])
    except ValueError:
        return [f"LISTEN_FDS={environ['LISTEN_FDS']!r} is not a number"]
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    out = []
    for i, fd in enumerate(range(3, 3 + max(count, 0))):
        name = names[i] if i < len(names) and names[i] else DEFAULT_NAME
        if listener_of(name) is not None:
            out.append(f"{name} (fd {fd}): a connection kept in the fd store, not a socket to listen on")
            continue
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            out.append(f"{name} (fd {fd}): {exc.strerror or exc}")
            continue
        try:
            out.append(f"{name}={format_address(sock.family, sock.getsockname())} (fd {fd})")
        except OSError as exc:
            out.append(f"{name} (fd {fd}): {exc.strerror or exc}")
        finally:
            sock.detach()
    return out


def _adopt(fd: int, name: str) -> Listener:
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise ListenerError(f"fd {fd} ({name}) passed by systemd is not open: {exc.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise ListenerError(f"fd {fd} ({name}) passed by systemd is not a socket; "
                            "use ListenStream= in the .socket unit")
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ListenerError(f"fd {fd} ({name}) is not a stream socket; use ListenStream=, "
                            "not ListenDatagram= or ListenSequentialPacket=")
    if sock.family not in SUPPORTED_FAMILIES:
        sock.detach()
        raise ListenerError(f"fd {fd} ({name}) has unsupported address family {sock.family!r}")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise ListenerError(f"fd {fd} ({name}) is not listening; the .socket unit must not set Accept=yes")
    sock.setblocking(False)
    os.set_inheritable(fd, False)
    return Listener(sock, name, owned=False)


# How long the kernel holds a connection whose client has sent nothing before it is accepted all the same (it is
# then a FRESH connection, closed at header_timeout): rounded up to a SYN-ACK retransmission, about 1 s.
DEFER_ACCEPT_SECONDS = 1
# The mode of a Unix socket sockact binds itself: systemd's default SocketMode=.
UNIX_SOCKET_MODE = 0o666


def parse_bind(spec: str) -> tuple[str, int, str | tuple[str, int]]:
    """Parse '[NAME=]ADDR' into (name, family, address), as the bind setting's parser does."""
    try:
        return bind_address(spec)
    except ValueError as exc:
        raise ListenerError(str(exc)) from None


def bind_all(specs: Iterable[str], backlog: int) -> list[Listener]:
    """Bind and listen on each --bind address (dev mode)."""
    listeners: list[Listener] = []
    try:
        for spec in specs:
            listeners.append(_bind(spec, backlog))
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    if not listeners:
        raise ListenerError("no sockets from systemd and nothing to --bind; pass --bind HOST:PORT "
                            "or start sockact from a .socket unit")
    return listeners


def _bind(spec: str, backlog: int) -> Listener:
    name, family, addr = parse_bind(spec)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_UNIX:
            _remove_stale_unix_socket(str(addr), spec)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # The kernel completes accept() once the client's first bytes are in: a worker's first read of a
            # new connection then finds its request, with no wait in its poller (two epoll_ctl, a second read).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT_SECONDS)
        sock.bind(addr)
        if family == socket.AF_UNIX:
            # Any local user may connect, as to a .socket unit's (SocketMode=0666): a proxy runs as its own
            # user, and connect() needs write permission, which the umask takes away. The directory's
            # permissions say who may reach it.
            os.chmod(str(addr), UNIX_SOCKET_MODE)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if family == socket.AF_UNIX and exc.errno == errno.ENOENT:
            raise ListenerError(f"bind '{spec}': the directory {os.path.dirname(str(addr)) or '.'} does not exist; "
                                "make it first (under systemd, RuntimeDirectory= does)") from None
        if exc.errno == errno.EADDRINUSE:
            raise ListenerError(f"bind '{spec}': address already in use; stop the other server or "
                                "choose another --bind") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ListenerError(f"bind '{spec}': no such local address") from None
        if exc.errno == errno.EACCES and isinstance(addr, tuple) and addr[1] < (first := unprivileged_port_start()):
            raise ListenerError(
                f"bind '{spec}': permission denied: a port below {first} (net.ipv4.ip_unprivileged_port_start) "
                "needs root or CAP_NET_BIND_SERVICE; better, let systemd bind it for sockact, in the packaged "
                f"sockact.socket (systemctl edit sockact.socket: ListenStream={spec.rpartition('=')[2]}); or bind "
                f"a port of {first} or above") from None
        raise ListenerError(f"bind '{spec}': {exc.strerror or exc}") from None
    except socket.gaierror as exc:
        sock.close()
        raise ListenerError(f"bind '{spec}': cannot resolve host: {exc.strerror}") from None
    sock.setblocking(False)
    return Listener(sock, name, owned=True)


def unprivileged_port_start(path: str = "/proc/sys/net/ipv4/ip_unprivileged_port_start") -> int:
    """The lowest port a process without CAP_NET_BIND_SERVICE may bind (IPv6 too): Linux's 1024 unless
    the sysctl lowers it (containers often set 0)."""
    try:
        with open(path, encoding="ascii") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 1024


def _remove_stale_unix_socket(path: str, spec: str) -> None:
    """Unlink a leftover socket file nobody listens on; refuse to touch anything else."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ListenerError(f"bind '{spec}': {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except OSError:
        return  # let bind() report the real problem
    finally:
        probe.close()
    raise ListenerError(f"bind '{spec}': address already in use; another server listens on {path}")
