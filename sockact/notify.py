"""sd_notify for Type=notify: READY, STATUS, RELOADING, STOPPING, EXTEND_TIMEOUT_USEC and the watchdog.

Every call is a no-op when NOTIFY_SOCKET is unset, and none of them ever raises:
a failing notification must not take the server down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping

log = logging.getLogger("sockact.notify")

# systemd-python reads NOTIFY_SOCKET from the C environment, so the supervisor keeps these;
# workers drop them after the fork (NotifyAccess=main would ignore their messages anyway).
_NOTIFY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


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
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half the interval systemd expects, as sd_watchdog_enabled advises."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    def _notify(self, state: str) -> None:
        if self._send is None:
            return
        try:
            self._send(state, unset_environment=False)
        except Exception as exc:
            log.debug("sd_notify failed: %s", exc)

    def ready(self, status: str | None = None) -> None:
        self._notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd (253+) match the reload to this notification.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self._notify("STOPPING=1")

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self._notify(f"STATUS={text}")

    def watchdog(self) -> None:
        self._notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        self._notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")


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
