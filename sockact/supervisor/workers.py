"""The supervisor's handle on one worker process: fork it, signal it, note how it ended.

Fork discipline: everything a worker needs is built before the fork and touches nothing.
In the child, the supervisor's own descriptors (listeners, other channels, parked and
queued connections, the selector, the wakeup socket) are closed first, and the child's
branch always leaves through os._exit() in a finally, so it can never fall back into
the supervisor's code.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sockact.errors import EXIT_FAILURE
from sockact.ipc import handoff
from sockact.policy.parking import Conn
from sockact.supervisor import orphans

log = logging.getLogger("sockact.workers")

@dataclass(eq=False, repr=False)
class WorkerProcess:
    """A worker process, seen from the supervisor: its channel and what it holds."""

    pid: int
    chan: socket.socket  # the supervisor's end of the channel
    slot: int  # scoreboard slot
    generation: int
    threads: int  # app threads, each with a line on the scoreboard
    requests: int = 0  # as last read from the scoreboard
    recycled: str | None = None  # why it is recycled: "max-requests" or "memory" (a restart reason)
    failure: str = ""  # why it could not start, as it said (FAILED) before it exited
    on_sent: Callable[[Conn], None] | None = None  # told of each connection sent (the metrics)
    receiver: handoff.Receiver = field(init=False)
    # Connections given to this worker that its full channel could not take yet, in order. The
    # supervisor still owns their fds; they go out when the channel is writable again.
    outbox: deque[Conn] = field(init=False, default_factory=deque)
    out_watched: bool = field(init=False, default=False)  # its channel is watched for room (the outbox waits)
    # The supervisor's own copy of each connection this worker holds, by id: if the worker dies
    # before answering, the supervisor still can (502/504). Closed when the worker hands the
    # connection back (PARK) or reports it closed (DONE).
    holding: dict[int, Conn] = field(init=False, default_factory=dict)
    sent: int = 0  # connections sent on the channel (CONNs, or each in a CONNS); Conn.sent_as numbers each

    def __post_init__(self) -> None:
        self.chan.setblocking(False)
        self.receiver = handoff.Receiver(self.chan)

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone: SIGCHLD will tell
            os.kill(self.pid, signum)

    def stopped(self) -> bool:
        """Whether the process is stopped (SIGSTOP, a debugger), as /proc says."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            return False
        # "pid (comm) state ...": comm may hold spaces and parentheses, so the state follows the last ")".
        return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] in (b"T", b"t")

    def give(self, conn: Conn) -> bool:
        """Hand ``conn`` over; False when the channel is full and it waits in the outbox instead.

        Once sent, the worker serves it; our copy of the fd stays in ``holding`` until the worker
        is done with it. Raises OSError when the channel is broken (the worker is gone): ``conn``
        then waits in the outbox with the others, still the supervisor's (take_outbox).
        """
        waiting = bool(self.outbox)
        self.outbox.append(conn)
        return not waiting and self.flush()

    def flush(self) -> bool:
        """Send what waits in the outbox, in order, up to handoff.MAX_BATCH in one message; True once it
        is empty. Raises OSError like give()."""
        outbox = self.outbox
        while outbox:
            sent = self._send(list(itertools.islice(outbox, handoff.MAX_BATCH)))
            if not sent:
                return False
            for _ in range(sent):
                outbox.popleft()
        return True

    def take_outbox(self) -> list[Conn]:
        conns = list(self.outbox)
        self.outbox.clear()
        return conns

    def _send(self, conns: list[Conn]) -> int:
        """Send the first of ``conns`` that fit in one message; how many went (0: the channel is full)."""
        encoded, fds = [], []  # one loop, not a comprehension each: this runs for every message sent
        for conn in conns:
            if conn.written < 0:
                # Back from a worker, or restored from the fd store: what was written on it so far, the base
                # of what the next worker will count (supervisor/orphans.py, if it dies). Read before the
                # message goes: once the worker has it, it may write at once.
                written = orphans.written_bytes(conn.fd)
                conn.written = -1 if written is None else written
            encoded.append(handoff.encode_fields(handoff.CONN, conn.id, conn.listener, conn.family, conn.peer,
                                                 conn.hops + 1, conn.data, conn.proxy, conn.head_started))
            fds.append(conn.fd)
        try:
            count = handoff.send_batch(self.chan, encoded, fds)
        except BlockingIOError:
            return 0
        # Numbered one by one, as the worker counts them (a CONNS counts its CONNs): the books of
        # what never arrived (take_holding) stay exact per connection.
        for conn in conns[:count]:
            conn.hops += 1
            self.sent += 1
            conn.sent_as = self.sent
            self.holding[conn.id] = conn
            if self.on_sent is not None:
                self.on_sent(conn)
        return count

    def done_with(self, conn_id: int) -> Conn | None:
        """The worker handed the connection back or closed it: close our copy, and return it (None:
        we held none)."""
        conn = self.holding.pop(conn_id, None)
        if conn is not None:
            os.close(conn.fd)
        return conn

    def done_with_all(self, conn_ids: Iterable[int]) -> None:
        """done_with() for each of the connections a worker's DONE reports closed."""
        holding = self.holding
        for conn_id in conn_ids:
            conn = holding.pop(conn_id, None)
            if conn is not None:
                os.close(conn.fd)

    def release(self, conn_id: int) -> Conn | None:
        """The worker no longer holds the connection: our copy, out of the books and still open (None:
        we held none)."""
        return self.holding.pop(conn_id, None)

    def take_holding(self, received: int) -> tuple[list[Conn], set[int]]:
        """The connections the worker held when it died, and which of them never reached it, by id:
        those sent after the first ``received`` messages. The caller answers, closes or reroutes them."""
        conns = list(self.holding.values())
        unreceived = {conn.id for conn in conns if conn.sent_as > received}
        self.holding.clear()
        return conns, unreceived

    def retire(self) -> None:
        """Ask the worker to hand back what it holds and exit: EOF on its channel (the pool's Retire)."""
        with contextlib.suppress(OSError):
            self.chan.shutdown(socket.SHUT_WR)


def spawn(child_main: Callable[[socket.socket], int], close_in_child: Callable[[], None],
          slot: int, generation: int, threads: int) -> WorkerProcess:
    """Fork a worker that runs ``child_main(channel)`` and exits with its return value."""
    parent_end, child_end = handoff.channel_pair()
    # Unflushed buffers would be written twice, once by each process.
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child
        code = EXIT_FAILURE
        try:
            parent_end.close()
            close_in_child()
            code = child_main(child_end)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else EXIT_FAILURE
        except BaseException:
            log.exception("worker %d crashed", os.getpid())
        finally:
            try:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    child_end.close()
    return WorkerProcess(pid, parent_end, slot, generation, threads)


def describe_status(status: int) -> tuple[str, int | None, int | None]:
    """('exited with code 3' | 'killed by SIGKILL', exit code, signal number) from a wait status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}", None, sig
    code = os.waitstatus_to_exitcode(status)
    return f"exited with code {code}", code, None
