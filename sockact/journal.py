"""Logging setup: journald with structured fields when stderr goes to the journal, else stderr lines.

(Interface stub; the full journald handler and catalog replace this.)
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

# Lifecycle events: name -> journald MESSAGE_ID (documented in packaging/systemd/sockact.catalog).
MESSAGE_IDS: dict[str, str] = {
    "ready": "5d3b9f3a0c7e4d52a6f1d2c4b8e90a11",
    "reload": "7a1c2e9b44f04a8fb1d3e6c5a2f70b22",
    "stop": "c4e8a1b7d9024f35a0b6e3d1f8c27c33",
    "worker_spawned": "1f6d3a8c5b9e4e07b2a4c6d8e0f13d44",
    "worker_exited": "9b2e4c6a8d0f4f19a3b5c7e9d1f24e55",
    "worker_timeout": "e3a5c7b9d1f34a2bb4c6d8e0f2a35f66",
    "watchdog_unhealthy": "2c4e6a8b0d1f4c3db5e7f9a1c3e46a77",
}


def setup_logging(level: str, target: str, environ: Mapping[str, str]) -> str:
    """Configure the 'sockact' loggers; returns the target chosen: 'journal' or 'stderr'."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(process)d] %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("sockact")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    return "stderr"


def lifecycle(logger: logging.Logger, event: str, message: str, *args: Any,
              level: int = logging.INFO, **fields: Any) -> None:
    """Log a lifecycle event with its MESSAGE_ID and extra upper-case journal fields."""
    extra = {"MESSAGE_ID": MESSAGE_IDS[event], **{k.upper(): v for k, v in fields.items()}}
    logger.log(level, message, *args, extra=extra)
