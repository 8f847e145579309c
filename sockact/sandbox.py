"""Why a configured path is not there: the part of it that is missing, and the part of the
packaged unit's sandbox that hides it.

`sockact check` run from a shell sees the whole file system; the service does not. Under the
unit's ProtectHome=yes, /home, /root and /run/user are empty, so an app or a virtualenv kept
there is simply missing, and "no pyvenv.cfg there" would send the user looking in the wrong place.
"""

from __future__ import annotations

import os

# What ProtectHome=yes empties (systemd.exec(5)).
HIDDEN_HOMES = ("/home", "/root", "/run/user")


def explain_missing(path: str) -> str:
    """A clause for an error about ``path``, which does not exist: which directory is missing, and
    why a service might not see it."""
    path = os.path.abspath(path)
    missing = path
    while os.path.dirname(missing) != missing and not os.path.exists(os.path.dirname(missing)):
        missing = os.path.dirname(missing)
    home = next((h for h in HIDDEN_HOMES if path == h or path.startswith(h + "/")), None)
    if home is not None:
        return (f"{missing} is not there; in the service's sandbox (ProtectHome=yes) {home} is empty: "
                f"keep the app under /srv, or give the service ProtectHome=read-only in a drop-in")
    return f"{missing} does not exist"
