"""uvicorn's command-line flags that sockact does not take, and what to write instead.

uvicorn's flags that sockact has under the same name (--workers, --reload, --lifespan, --interface,
--ws, --ws-max-size, --ws-ping-interval, --ws-ping-timeout, --log-level, --forwarded-allow-ips,
--root-path, --backlog...) mean the same there. The CLI looks a refused flag up here, after gunicorn's
(config.fromgunicorn.flag_hint).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sockact.config.fromgunicorn import NOT_CARRIED

_APP = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")  # the app named on the command line, module:callable
_TLS = NOT_CARRIED["keyfile"]  # the same answer as to gunicorn's TLS flags
_RELOAD = "--reload watches every .py file of the app's project, polled each second"
_WS = "not configurable (--ws, --ws-max-size, --ws-ping-interval and --ws-ping-timeout are)"
_BIND = "sockact binds host and port together: -b {bind} (under systemd, ListenStream= of the .socket unit)"
_UDS = "sockact's flag is -b unix:{path}"
_FACTORY = "write the factory's call as the app, as gunicorn does: sockact run '{app}'"
_FIELDS = "not configurable: every response carries Date and Server: sockact; add fields in the app"

# uvicorn's flag -> what sockact has instead, or why there is none.
HINTS: dict[str, str] = {
    "--host": _BIND, "--port": _BIND,
    "--uds": _UDS,
    "--fd": "sockets come as systemd passes them (LISTEN_FDS): a .socket unit, or systemd-socket-activate",
    "--reload-dir": _RELOAD, "--reload-include": _RELOAD, "--reload-exclude": _RELOAD, "--reload-delay": _RELOAD,
    "--loop": "uvloop's event loop where it is installed, else asyncio's",
    "--http": "sockact's own HTTP/1.1 engine, over httptools",
    "--http2": "HTTP/1.1 only: terminate HTTP/2 in a proxy in front",
    "--ws-max-queue": _WS, "--ws-per-message-deflate": _WS,
    "--env-file": "-e KEY=VALUE for each variable, or EnvironmentFile= in the service unit",
    "--use-colors": "log lines are plain text; the journal shows their priority",
    "--no-use-colors": "log lines are plain text; the journal shows their priority",
    "--proxy-headers": "forwarded fields are read from the proxies --forwarded-allow-ips trusts",
    "--no-proxy-headers": "forwarded fields are read from the proxies --forwarded-allow-ips trusts",
    "--server-header": _FIELDS, "--no-server-header": _FIELDS, "--date-header": _FIELDS,
    "--no-date-header": _FIELDS, "--header": _FIELDS,
    "--limit-concurrency": "no such limit: connections no worker can take wait in the supervisor (--queue-size)",
    "--limit-max-requests": "sockact's flag is --max-requests",
    "--limit-max-requests-jitter": "sockact's flag is --max-requests-jitter",
    "--timeout-keep-alive": "sockact's flag is --keepalive",
    "--timeout-graceful-shutdown": "sockact's flag is --graceful-timeout",
    "--timeout-worker-healthcheck": "-t/--timeout: a worker whose loop stops turning that long is replaced",
    "--ssl-keyfile": _TLS, "--ssl-certfile": _TLS, "--ssl-keyfile-password": _TLS, "--ssl-version": _TLS,
    "--ssl-cert-reqs": _TLS, "--ssl-ca-certs": _TLS, "--ssl-ciphers": _TLS,
    "--app-dir": "sockact's flag is --chdir DIR (changed to and imported from), or --pythonpath DIR",
    "--h11-max-incomplete-event-size": "sockact's flag is --limit-request-head",
    "--reset-contextvars": "not configurable",
    "--factory": _FACTORY,
}


def hint(flag: str, words: Sequence[str]) -> str | None:
    """What to write instead of uvicorn's ``flag``; ``words`` is the command line (--host and --port
    become the one -b address they make together, uvicorn's defaults filling in the other)."""
    text = HINTS.get(flag)
    if text == _BIND:
        return text.format(bind=_bind_of(words))
    if text == _UDS:
        return text.format(path=_value_of(flag, words) or "PATH")
    if text == _FACTORY:
        apps = [word for word in words if _APP.match(word)]
        return text.format(app=f"{apps[0]}()" if apps else "module:create_app()")
    return text


def _value_of(flag: str, words: Sequence[str]) -> str | None:
    """The value given to ``flag`` on the command line (``--flag VALUE`` or ``--flag=VALUE``)."""
    for at, word in enumerate(words):
        name, eq, value = word.partition("=")
        if name == flag and (eq or at + 1 < len(words)):
            return value if eq else words[at + 1]
    return None


def _bind_of(words: Sequence[str]) -> str:
    host, port = _value_of("--host", words) or "127.0.0.1", _value_of("--port", words) or "8000"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
