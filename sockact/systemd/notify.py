"""sd_notify for Type=notify: READY, STATUS, RELOADING, STOPPING, EXTEND_TIMEOUT_USEC and the watchdog,
and the outcome of each reload, published for `sockact reload` (reloadctl.py).

Every call is a no-op when NOTIFY_SOCKET is unset, and none of them ever raises:
a failing notification must not take the server down.

sd_notify cannot say that a reload failed: READY=1 ends it either way. So the supervisor also
writes the outcome of each reload to $RUNTIME_DIRECTORY/reload (RuntimeDirectory= in the unit),
replacing the file atomically. Each outcome carries the supervisor's pid and a sequence number
that grows by one per finished reload, so a reader that saw number N before its SIGHUP knows that
N+1 or later answers it, and a file left by another process is never taken for this one's.

Two reloads may overlap (a HUP while a rolling reload runs): a file that fails the second at once is
no answer to the first. So each `sockact reload` first leaves a request, reload.PID.request (its own
pid); at the HUP the supervisor takes every request there, and the outcome that answers them goes to
reload.PID too, for each, and lists them (``answers``). A newer supervisor's outcome always lists its
requesters (maybe none); an older one's has no such field, and the sequence number alone tells.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import select
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

log = logging.getLogger("sockact.notify")

# systemd-python reads NOTIFY_SOCKET from the C environment, so the supervisor keeps these;
# workers drop them after the fork (NotifyAccess=main would ignore their messages anyway).
_NOTIFY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


RELOAD_FILE = "reload"  # under $RUNTIME_DIRECTORY
REQUEST_SUFFIX = ".request"  # reload.PID.request: `sockact reload` process PID waits for an answer in reload.PID


@dataclass(frozen=True)
class ReloadOutcome:
    """How the supervisor's reload number ``seq`` ended: ``ok``, or failed with ``reason`` while it
    keeps ``kept`` serving ("generation 1"); an ``ok`` one's reason names the changed settings that
    only a restart applies, if any."""

    seq: int
    pid: int
    ok: bool
    reason: str = ""
    # Empty for an ok one. None (from_text): the file has no such field, published by a supervisor older than it
    # (still running after an upgrade, while the command is the new one), whose reason said what it kept, if anything.
    kept: str | None = ""
    # The `sockact reload` processes (their pids) whose requests this outcome answers. None (from_text): a
    # supervisor older than the field, which took no requests.
    answers: tuple[int, ...] | None = ()

    def to_text(self) -> str:
        return json.dumps(dataclasses.asdict(self)) + "\n"

    @classmethod
    def from_text(cls, text: str) -> ReloadOutcome | None:
        """The outcome in ``text``, or None if it is not one (empty, cut short, foreign)."""
        try:
            fields = json.loads(text)
            outcome = cls(**{"kept": None, "answers": None, **fields})
            answers = outcome.answers
            if answers is not None:
                outcome = dataclasses.replace(outcome, answers=tuple(answers))
        except (ValueError, TypeError):
            return None
        valid = (type(outcome.seq) is int and type(outcome.pid) is int and isinstance(outcome.ok, bool)
                 and isinstance(outcome.reason, str) and (outcome.kept is None or isinstance(outcome.kept, str))
                 and (outcome.answers is None or all(type(pid) is int for pid in outcome.answers)))
        return outcome if valid else None


def failed_reload(reason: str, kept: str) -> str:
    """A failed reload's reason as the operator reads it (log, STATUS=, `sockact reload`): with what
    the supervisor keeps serving, when ``kept`` says."""
    return f"{reason}; keeping {kept}" if kept else reason


def runtime_dir(environ: Mapping[str, str]) -> str | None:
    """The service's runtime directory: the first of $RUNTIME_DIRECTORY's colon-separated paths."""
    return environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or None


def read_reload_outcome(directory: str, requester: int = 0) -> ReloadOutcome | None:
    """The last reload outcome published in ``directory`` (for ``requester``'s request alone: reload.PID), or
    None if there is none yet."""
    name = f"{RELOAD_FILE}.{requester}" if requester else RELOAD_FILE
    try:
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            return ReloadOutcome.from_text(f.read())
    except OSError:
        return None


def forget(environ: MutableMapping[str, str]) -> None:
    """Drop the notification variables, in a forked worker, so the app never inherits them."""
    for var in _NOTIFY_VARS:
        environ.pop(var, None)


class Notifier:
    """The supervisor's line to systemd."""

    def __init__(self, environ: MutableMapping[str, str], pid: int) -> None:
        values = {var: environ.get(var) for var in _NOTIFY_VARS}
        self._socket = values["NOTIFY_SOCKET"]
        self.watchdog_usec = _watchdog_usec(values["WATCHDOG_USEC"], values["WATCHDOG_PID"], pid)
        self._last_status = ""
        # A failed reload leaves the old generation serving: the reason stays in front of STATUS=
        # until a reload succeeds, so `systemctl status` still says why the new code is not live.
        self._failure = ""
        # After a halt, the reason is the last STATUS=: systemd keeps it for `systemctl status` of the
        # failed unit, where the counts of the quick stop that follows would say nothing.
        self._halted = False
        self._pid = pid
        self._runtime_dir = runtime_dir(environ)
        self._reloads = 0  # finished reloads, the sequence number of the last published outcome
        self._ready_sent = False
        # systemd 254+ says how many fds it would keep (FileDescriptorStoreMax=); 252 says nothing.
        self._fdstore_max = environ.get("FDSTORE")
        self._send = None
        if self._socket:
            try:
                from systemd import daemon

                self._send = daemon.notify
            except ImportError:
                log.warning("NOTIFY_SOCKET is set but systemd-python is missing; not notifying")

    @property
    def enabled(self) -> bool:
        return self._send is not None

    @property
    def can_store_fds(self) -> bool:
        """Whether fds sent with FDSTORE=1 may be kept: notifying, and no FDSTORE=0 from systemd."""
        return self.enabled and self._fdstore_max != "0"

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half the interval systemd expects, as sd_watchdog_enabled advises."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def _notify(self, state: str, fds: list[int] | None = None) -> bool:
        if self._send is None:
            return False
        try:
            if fds:
                return bool(self._send(state, unset_environment=False, fds=fds))
            return bool(self._send(state, unset_environment=False))
        except Exception as exc:
            log.debug("sd_notify failed: %s", exc)
            return False

    def ready(self, status: str | None = None) -> None:
        self._ready_sent = True
        self._notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd (253+) match the reload to this notification.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def claim_reload_requests(self) -> tuple[int, ...]:
        """The `sockact reload` processes that asked for the reload a SIGHUP starts: their requests, taken."""
        if self._runtime_dir is None:
            return ()
        try:
            names = os.listdir(self._runtime_dir)
        except OSError:
            return ()
        pids = []
        for name in names:
            pid = name[len(RELOAD_FILE) + 1:-len(REQUEST_SUFFIX)]
            if name.startswith(f"{RELOAD_FILE}.") and name.endswith(REQUEST_SUFFIX) and pid.isdigit():
                try:
                    os.unlink(os.path.join(self._runtime_dir, name))
                except OSError:
                    continue  # another took it
                pids.append(int(pid))
        return tuple(sorted(pids))

    def reload_finished(self, ok: bool, reason: str, kept: str = "", answers: tuple[int, ...] = (),
                        under_way: bool = False) -> None:
        """End a reload (READY=1, and the reason in STATUS= if it failed) and publish its outcome, to each of
        ``answers`` (the requesters it answers) and for all.

        A SIGHUP before the first READY=1 never sends it: the start is not over. Nor does one that failed at
        once ``under_way`` another: that one's end does.
        """
        states = ["READY=1"] if self._ready_sent and not under_way else []
        self._failure = "" if ok else f"reload failed: {failed_reload(reason, kept)}"
        if not ok:
            self._last_status = self._failure
            states.append(f"STATUS={self._last_status}")
        if states:  # before the outcome: systemd sees READY=1 before `sockact reload` exits
            self._notify("\n".join(states))
        self._reloads += 1
        outcome = ReloadOutcome(self._reloads, self._pid, ok, reason, kept, answers)
        for pid in answers:  # first: a requester that sees the shared file looks for its own
            self._publish(outcome, f"{RELOAD_FILE}.{pid}")
        self._publish(outcome)

    def _publish(self, outcome: ReloadOutcome, name: str = RELOAD_FILE) -> None:
        if self._runtime_dir is None:
            return
        path = os.path.join(self._runtime_dir, name)
        partial = f"{path}.{self._pid}.tmp"
        try:
            with open(partial, "w", encoding="utf-8") as f:
                f.write(outcome.to_text())
            os.replace(partial, path)  # a reader sees the old outcome or the new one, never half of one
        except OSError as exc:
            log.warning("cannot publish the reload outcome in %s: %s", self._runtime_dir, exc)

    def stopping(self) -> None:
        self._notify("STOPPING=1")

    def halted(self, reason: str) -> None:
        """The supervisor stops on an error no restart fixes (the app does not load): say why, last."""
        self._notify(f"STATUS={reason}")
        self._halted = True

    def status(self, text: str) -> None:
        if self._halted:
            return
        if self._failure:
            text = f"{self._failure}; {text}"
        if text != self._last_status:
            self._last_status = text
            self._notify(f"STATUS={text}")

    def watchdog(self) -> None:
        self._notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        self._notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def store_fd(self, fd: int, name: str) -> bool:
        """Give systemd a duplicate of ``fd`` to keep under ``name`` (FDSTORE=1); True if sent.

        The caller still owns ``fd``. Whether systemd kept it (FileDescriptorStoreMax= not reached)
        is not said back: a refused fd is closed by systemd and logged in its journal.
        """
        return self._notify(f"FDSTORE=1\nFDNAME={name}", [fd])

    def remove_stored(self, name: str) -> None:
        """Close systemd's duplicates of every fd stored under ``name`` (FDSTOREREMOVE=1)."""
        self._notify(f"FDSTOREREMOVE=1\nFDNAME={name}")

    def barrier(self, timeout: float) -> bool:
        """Wait until systemd has read every notification sent before (BARRIER=1, sd_notify_barrier(3)).

        Sent before exiting, so that the fds just stored reach systemd while this process is still
        its main process. False when not notifying, or when systemd did not answer in ``timeout``.
        """
        if self._send is None:
            return False
        try:
            r, w = os.pipe()
        except OSError:
            return False
        try:
            sent = self._notify("BARRIER=1", [w])
            os.close(w)
            w = -1
            # systemd closes its copy of the pipe's write end once it has read the message: POLLHUP.
            # poll, not select: select() cannot watch an fd of 1024 or more, and a supervisor may hold more.
            poller = select.poll()
            poller.register(r, select.POLLIN)
            return sent and bool(poller.poll(max(0, timeout) * 1000))
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)


def _watchdog_usec(usec: str | None, wpid: str | None, pid: int) -> int | None:
    if not usec:
        return None
    if wpid and wpid.strip() != str(pid):
        return None  # the watchdog is meant for another process
    try:
        value = int(usec)
    except ValueError:
        return None
    return value if value > 0 else None
