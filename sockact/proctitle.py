"""Process titles for ps and systemctl status: ``sockact: supervisor [sockact.service]``.

setproctitle rewrites the title where it is installed (Debian: python3-setproctitle, a
Recommends:); without it, titles stay "python3 /usr/bin/sockact run ..." and nothing fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

PREFIX = "sockact"


def format_title(role: str, label: str = "", number: int | None = None) -> str:
    """``sockact: worker 3 [myapp.wsgi]``: the role, its number if any, and what it serves."""
    title = f"{PREFIX}: {role}" if number is None else f"{PREFIX}: {role} {number}"
    return f"{title} [{label}]" if label else title


def set_title(role: str, label: str = "", number: int | None = None) -> bool:
    """Set this process's title; False when setproctitle is not installed."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return False
    setproctitle(format_title(role, label, number))
    return True


def unit_name(environ: Mapping[str, str], cgroup: str | None = None) -> str:
    """The systemd unit running this process ("" when not under systemd).

    systemd sets INVOCATION_ID for every unit it starts; the unit's name is the last
    component of the process's cgroup path (``0::/system.slice/sockact.service``).
    """
    if not environ.get("INVOCATION_ID"):
        return ""
    if cgroup is None:
        cgroup = ""
        with contextlib.suppress(OSError), open("/proc/self/cgroup", encoding="utf-8") as fh:
            cgroup = fh.read()
    for line in cgroup.splitlines():
        for part in reversed(line.rpartition(":")[2].split("/")):
            if part.endswith((".service", ".scope")):
                return part
    return ""


def supervisor_title(environ: Mapping[str, str], app: str) -> bool:
    """Title the supervisor by its unit when systemd runs it, else by the app it serves."""
    return set_title("supervisor", unit_name(environ) or app)


def worker_title(number: int, app: str) -> bool:
    """Title a worker by its number and the app's module, e.g. ``sockact: worker 3 [myapp.wsgi]``."""
    return set_title("worker", app.partition(":")[0], number)
