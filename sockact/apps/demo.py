"""The demo app: shows which worker served the request and how the connection got there."""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Plain text by default; /json for machines; HTML when a browser asks for it."""
    hops = environ.get("sockact.hops", 0)
    facts = {
        "worker_pid": environ.get("sockact.worker_pid", os.getpid()),
        "supervisor_pid": os.getppid(),
        "listener": environ.get("sockact.listener", ""),
        "connection_id": environ.get("sockact.conn_id", 0),
        "handoff": _handoff(hops),
        "client": f"{environ.get('REMOTE_ADDR', '')}:{environ.get('REMOTE_PORT', '')}".rstrip(":"),
        "request": f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')} {environ['SERVER_PROTOCOL']}",
    }
    path = environ.get("PATH_INFO", "")
    if path == "/json":
        import json

        body = json.dumps(facts).encode()
        ctype = "application/json"
    elif "text/html" in environ.get("HTTP_ACCEPT", ""):
        rows = "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
        body = (f"<!doctype html><title>sockact</title><h1>Served by sockact</h1>"
                f"<table>{rows}</table>").encode()
        ctype = "text/html; charset=utf-8"
    else:
        body = ("Served by sockact\n" + "".join(f"{k}: {v}\n" for k, v in facts.items())).encode()
        ctype = "text/plain; charset=utf-8"
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def _handoff(hops: int) -> str:
    if hops <= 1:
        return "accepted by the supervisor, handed to this worker over SCM_RIGHTS"
    return (f"keep-alive connection parked in the supervisor and handed over again "
            f"(hand-off #{hops}, SCM_RIGHTS)")
