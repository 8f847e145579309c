"""Memory pressure on the service, as systemd tells it (MemoryPressureWatch=, systemd 254 and later).

systemd gives the service $MEMORY_PRESSURE_WATCH, the path of a file to watch, and
$MEMORY_PRESSURE_WRITE, what to write into it first (base64). The file is, as sd-event's
sd_event_add_memory_pressure() reads it:

- a regular file: the cgroup's PSI file (memory.pressure). The decoded bytes (e.g.
  "some 200000 2000000" and a NUL: 200 ms stalled per 2 s) are written to it as a trigger, and the kernel
  raises POLLPRI on it each window the threshold is passed;
- a FIFO: whoever writes a byte to it signals pressure (POLLIN), which lets a test, or a helper
  that watches something else, signal pressure by hand (sd-event also takes a Unix socket; a
  service manager that passes one gets a one-line error and no watch here);
- /dev/null, or no variable (systemd 252, Debian 12; MemoryPressureWatch=off): nothing to watch.

The supervisor's selector waits for reading only, and a PSI file never becomes readable, so the
watched fd sits in an epoll of its own, whose fd is readable when it has an event: that one goes in
the selector. Nothing here decides what to do about pressure; the supervisor does.
"""

from __future__ import annotations

import binascii
import contextlib
import os
import select
import stat
from collections.abc import Mapping


class PressureWatch:
    """One watched file (or socket) and the epoll that holds it."""

    def __init__(self, fd: int, events: int) -> None:
        self._fd = fd
        self._readable = bool(events & select.EPOLLIN)  # a FIFO: its bytes are read and dropped
        self._epoll = select.epoll()
        self._epoll.register(fd, events)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> PressureWatch | None:
        """The watch systemd asks for, or None when it asks for none. Raises OSError or ValueError
        (a trigger that is not base64) when it cannot be set up."""
        path = environ.get("MEMORY_PRESSURE_WATCH", "")
        if not path or path == "/dev/null":
            return None
        import base64  # here: only a service systemd watches for memory pressure needs it

        trigger = base64.b64decode(environ.get("MEMORY_PRESSURE_WRITE", ""), validate=True)
        mode = os.stat(path).st_mode
        if stat.S_ISFIFO(mode):
            # read-write: a FIFO whose last writer left would otherwise poll as hung up forever
            return cls(os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC), select.EPOLLIN)
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path} is neither a PSI file nor a FIFO")
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if trigger:
                os.write(fd, trigger)  # the kernel keeps the trigger as long as this fd is open
        except OSError:
            os.close(fd)
            raise
        return cls(fd, select.EPOLLPRI)

    def fileno(self) -> int:
        """What the supervisor's selector waits on (for reading)."""
        return self._epoll.fileno()

    def fired(self) -> bool:
        """Whether pressure was signalled since the last call; takes the event (and any bytes) in."""
        events = self._epoll.poll(0)
        if any(mask & (select.EPOLLERR | select.EPOLLHUP) for _, mask in events):
            self._epoll.unregister(self._fd)  # the file went away: stop watching, rather than wake for ever
            return False
        if events and self._readable:
            with contextlib.suppress(OSError):
                while os.read(self._fd, 4096):
                    pass
        return bool(events)

    def close(self) -> None:
        self._epoll.close()
        os.close(self._fd)


def describe(environ: Mapping[str, str]) -> str:
    """What is watched, for the start-up log line."""
    import base64  # as in from_environ

    path = environ.get("MEMORY_PRESSURE_WATCH", "")
    try:
        trigger = base64.b64decode(environ.get("MEMORY_PRESSURE_WRITE", "")).decode("ascii", "replace").strip("\0 \n")
    except (binascii.Error, ValueError):
        trigger = ""
    return f"{path} ({trigger})" if trigger else path
