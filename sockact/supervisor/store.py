"""systemd's fd store across a restart: at a graceful stop, idle keep-alive connections go into it;
at start, the next instance takes them back.

The sequence: handle_term() calls store_all() (parked and queued connections now; each worker
retires and hands its connections back at its next request boundary, and store() takes each); the
loop ends when the workers are gone; finish() waits for systemd to read the stored fds while this
process is still the service's main one. At the next start, take_back() parks them and empties the
store. The pure half (names, what comes back) is fdstore.py; see docs/restarts.md.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from sockact.logs.journal import lifecycle
from sockact.policy.parking import Conn
from sockact.systemd.fdstore import conn_name, take_back

if TYPE_CHECKING:
    from sockact.supervisor.core import Supervisor

log = logging.getLogger("sockact.supervisor")

STORE_BARRIER_TIMEOUT = 5.0  # seconds to wait for systemd to read the stored fds before exiting


class StoreSequence:
    def __init__(self, sup: Supervisor, stored: list[tuple[int, str]] | None) -> None:
        self.sup = sup
        self._from_store = stored or []  # (fd, name) of connections a previous instance stored
        self.count = 0  # connections given to systemd's fd store at this stop

    @property
    def keeping(self) -> bool:
        """Whether a graceful stop leaves idle keep-alive connections in systemd's fd store."""
        return self.sup.config.fd_store and self.sup.notifier.can_store_fds

    def store_all(self) -> None:
        """Stopping: parked and queued connections go to the store now; workers hand theirs back.

        A retired worker finishes its calls with keep-alive responses and hands every connection
        back at its next request boundary (PARK), where store() takes it.
        """
        sup = self.sup
        for conn in sup.parked.take_all():
            sup.unregister(conn.fd)
            self.store(conn)
        for conn in sup.dispatcher.take_queued():
            self.store(conn)
        for pid in list(sup.workers):
            sup.retire(pid)  # what waits in its outbox comes back to store()

    def store(self, conn: Conn) -> None:
        """Give ``conn`` to systemd's fd store and close our copy (a request already read cannot go)."""
        sup = self.sup
        if conn.proxy is not None:
            pass  # its PROXY header would be looked for again after the restart: the balancer reconnects
        elif not conn.data and sup.notifier.store_fd(conn.fd, conn_name(sup.listeners[conn.listener].name)):
            self.count += 1
        elif conn.data:
            log.warning("closing connection %d at stop: its request was read but not served", conn.id)
        os.close(conn.fd)

    def take_back(self) -> None:
        """Park the connections the previous instance stored, and empty the store: they are ours alone now."""
        if not self._from_store:
            return
        sup = self.sup
        found = take_back(self._from_store, [lst.name for lst in sup.listeners],
                          sup.acceptor.reserve_ids(len(self._from_store)))
        self._from_store = []
        for name in sorted(found.names):
            sup.notifier.remove_stored(name)
        for conn in found.conns:
            sup.switchboard.park(conn, False)
        log.log(logging.WARNING if found.closed else logging.INFO, "%s", found.summary())

    def finish(self) -> None:
        """The loop has ended: the stored fds must reach systemd while this process is still the
        service's main one."""
        if self.count:
            self.sup.notifier.barrier(STORE_BARRIER_TIMEOUT)
            lifecycle(log, "stop", "stopped: %d keep-alive connections left in systemd's fd store "
                      "for the next instance", self.count)
