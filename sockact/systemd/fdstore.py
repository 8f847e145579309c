"""Keep-alive clients across a restart: systemd's file descriptor store.

A stopping supervisor gives each idle keep-alive connection to systemd (sd_pid_notify_with_fds:
``FDSTORE=1`` and ``FDNAME=``) instead of closing it, once its worker has finished the request in
hand. systemd keeps the fds while the service restarts (``FileDescriptorStoreMax=`` in the unit)
and passes them to the next instance after the listeners, in LISTEN_FDS / LISTEN_FDNAMES.
That instance tells them from the listeners by name, parks them, and serves their next request.

Names: a stored connection is named PREFIX + its listener's name (``sockact-conn.http``), so the
next instance knows which app serves it. FDNAME= may not hold a colon, nor does a listener name
(LISTEN_FDNAMES is colon-separated).

What systemd does with them (systemd.service(5), sd_pid_notify_with_fds(3)):
- It keeps its own duplicate of each stored fd, so a connection that its holder closes stays
  open (its client never sees FIN) until it is removed from the store with ``FDSTOREREMOVE=1``
  and its ``FDNAME=``. The next instance therefore removes every stored connection as soon as it
  has taken them back: from then on it is their only holder, closing one closes it, and a
  supervisor that crashes mid-request never passes a half-answered connection on.
- It polls the stored fds (``FDPOLL=1``, the default) and drops one whose client hangs up.
- systemd 252 (Debian 12) keeps the store across ``systemctl restart``, but empties it when the
  service stops: it has no ``FileDescriptorStorePreserve=`` (255+). ``stop`` then ``start`` loses
  the connections; ``restart`` keeps them.

Sans-I/O where it can be: ``conn_name`` and ``listener_of`` are pure; ``take_back`` looks at each
fd (fstat, getsockopt, poll) and closes the ones that cannot be served.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sockact.policy.parking import Conn

PREFIX = "sockact-conn."
_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)
# The client has hung up, or half-closed its side: nothing more will come on the connection.
_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL | getattr(select, "POLLRDHUP", 0x2000)


def conn_name(listener: str) -> str:
    """The FDNAME= of a stored connection accepted on ``listener``."""
    return PREFIX + listener


def listener_of(name: str) -> str | None:
    """The listener a stored connection's name points at; None for any other name (a listener's)."""
    return name[len(PREFIX):] if name.startswith(PREFIX) else None


@dataclass(eq=False, repr=False)
class TakenBack:
    """What the next instance found in the store: connections to park, and the ones it closed."""

    conns: list[Conn] = field(default_factory=list)
    names: set[str] = field(default_factory=set)  # every stored name seen: all are removed from the store
    closed: dict[str, int] = field(default_factory=dict)  # why -> how many

    def summary(self) -> str:
        """One log line for the whole store, however many fds were bad."""
        text = f"took back {len(self.conns)} keep-alive connections from systemd's fd store"
        if self.closed:
            text += "; closed " + ", ".join(f"{n} {why}" for why, n in sorted(self.closed.items()))
        return text


def take_back(stored: Iterable[tuple[int, str]], listeners: Sequence[str], first_id: int) -> TakenBack:
    """Turn the stored ``(fd, name)`` pairs into parked-to-be connections, with ids from ``first_id``.

    An fd that is not a connected stream socket of ours (stale, half-closed by its client, a
    listener, a name no listener has) is closed and counted, never served.
    """
    found = TakenBack()
    next_id = first_id
    for fd, name in stored:
        found.names.add(name)
        listener = listener_of(name)
        why = "for a listener this instance has not" if listener not in listeners else _unusable(fd)
        if why:
            found.closed[why] = found.closed.get(why, 0) + 1
            with contextlib.suppress(OSError):
                os.close(fd)
            continue
        assert listener is not None
        os.set_inheritable(fd, False)
        family = _family(fd)
        peer = None
        if family != socket.AF_UNIX:
            with socket.socket(fileno=fd) as sock:
                address = sock.getpeername()
                sock.detach()
            peer = (address[0], address[1])
        found.conns.append(Conn(next_id, fd, listeners.index(listener), family, peer))
        next_id += 1
    return found


def _family(fd: int) -> int:
    with socket.socket(fileno=fd) as sock:
        try:
            return sock.family
        finally:
            sock.detach()


def _unusable(fd: int) -> str:
    """Why a stored fd cannot be served, or '' when it can."""
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return "that were not sockets"
        with socket.socket(fileno=fd) as sock:
            try:
                if sock.type != socket.SOCK_STREAM or sock.family not in _FAMILIES:
                    return "that were not stream sockets"
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    return "that were listening sockets"
                sock.getpeername()
            finally:
                sock.detach()
    except OSError:
        return "stale (not connected)"
    poller = select.poll()
    poller.register(fd, select.POLLIN | _GONE)
    events = poller.poll(0)
    if events and events[0][1] & _GONE:
        return "half-closed by their clients"
    return ""
