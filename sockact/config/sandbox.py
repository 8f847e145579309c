"""Why a configured path is not there: the part of it that is missing, and the part of the
packaged unit's sandbox that hides it.

`sockact check` run from a shell sees the whole file system; the service does not. Under the
unit's ProtectHome=yes, /home, /root and /run/user are empty, so an app or a virtualenv kept
there is simply missing, and "no pyvenv.cfg there" would send the user looking in the wrong place.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

# What ProtectHome=yes empties (systemd.exec(5)).
HIDDEN_HOMES = ("/home", "/root", "/run/user")


def explain_missing(path: str) -> str:
    """A clause for an error about ``path``, which this process cannot find: which directory is
    missing or closed to it, and why a service might not see it."""
    path = os.path.abspath(path)
    missing = path
    while os.path.dirname(missing) != missing and not os.path.exists(os.path.dirname(missing)):
        missing = os.path.dirname(missing)
    parent = os.path.dirname(missing)
    home = next((h for h in HIDDEN_HOMES if path == h or path.startswith(h + "/")), None)
    if home is not None and (parent == home or os.access(parent, os.X_OK)):
        # ProtectHome=yes puts an empty directory, closed to all, over each home
        return (f"{missing} is not there; in the service's sandbox (ProtectHome=yes) {home} is empty: "
                f"keep the app under /srv, or give the service ProtectHome=read-only in a drop-in")
    if not os.access(parent, os.X_OK):
        return (f"{parent} is closed to this user (uid {os.getuid()}): the service's user must be "
                f"able to enter every directory on the way (chmod o+x), or keep the app under /srv")
    return f"{missing} does not exist"


# The lines of the packaged sockact.service that decide what an app sees while it is imported, as
# systemd-run properties (tests/unit/test_docs.py holds them to the unit and to docs/deploy.md).
# User=sockact is the name of the unit's dynamic user: a check that shares it leaves the owner of
# the directories it is given (LogsDirectory=, a drop-in's StateDirectory=) as the service has them.
CHECK_PROPERTIES = ("DynamicUser=yes", "User=sockact", "ProtectSystem=strict", "ProtectHome=yes",
                    "PrivateTmp=yes", "PrivateUsers=yes", "MemoryDenyWriteExecute=yes",
                    "Environment=PYTHONDONTWRITEBYTECODE=1", "LogsDirectory=sockact")


def sandboxed_check(config_file: str, extra: Sequence[str] = ()) -> list[str]:
    """The systemd-run command that runs `sockact check` in a transient unit with the service's
    sandbox; ``extra`` adds the properties of the admin's drop-in (e.g. StateDirectory=myapp)."""
    argv = ["systemd-run", "--pipe", "--wait", "--collect", "--quiet"]
    for prop in (*CHECK_PROPERTIES, *extra):
        argv += ["-p", prop]
    return [*argv, "/usr/bin/sockact", "check", "--config", config_file]


def sandboxed_check_line(config_file: str, extra: Sequence[str] = (), width: int = 0) -> str:
    """sandboxed_check() as a shell line; with ``width``, continued on indented lines that fit it."""
    argv = sandboxed_check(config_file, extra)
    words = [shlex.join(argv[:5])]
    words += [shlex.join(argv[i:i + 2]) for i in range(5, len(argv) - 4, 2)]
    words.append(shlex.join(argv[-4:]))
    if not width:
        return " ".join(words)
    lines = [words[0]]
    for word in words[1:]:
        if len(lines[-1]) + len(word) + 3 > width:
            lines[-1] += " \\"
            lines.append("    " + word)
        else:
            lines[-1] += " " + word
    return "\n".join(lines)
