"""uvicorn's command-line flags that sockact does not take, and what to write instead.

uvicorn's flags that sockact has under the same name (--workers, --reload, --lifespan, --interface,
--ws, --ws-max-size, --ws-ping-interval, --ws-ping-timeout, --log-level, --forwarded-allow-ips,
--root-path, --backlog...) mean the same there. The CLI looks a refused flag up here, after gunicorn's
(config.fromgunicorn.flag_hint).
"""

from __future__ import annotations

from collections.abc import Sequence

from sockact.config.fromgunicorn import NOT_CARRIED

_TLS = NOT_CARRIED["keyfile"]  # the same answer as to gunicorn's TLS flags
_RELOAD = "--reload watches every .py file of the app's project, polled each second"
_WS = "not configurable (--ws, --ws-max-size, --ws-ping-interval and --ws-ping-timeout are)"
_BIND = "sockact binds host and port together: -b {bind} (under systemd, ListenStream= of the .socket unit)"
_FIELDS = "not configurable: every response carries Date and Server: sockact; add fields in the app"

# uvicorn's flag -> what sockact has instead, or why there is none.
HINTS: dict[str, str] = {
    "--host": _BIND, "--port": _BIND,
    "--uds": "sockact's flag is -b unix:PATH",
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
    "--factory": "no app factories: name an app a module makes, e.g. app = create_app() in a module of yours",
}


def hint(flag: str, words: Sequence[str]) -> str | None:
    """What to write instead of uvicorn's ``flag``; ``words`` is the command line (--host and --port
    become the one -b address they make together, uvicorn's defaults filling in the other)."""
    text = HINTS.get(flag)
    return text.format(bind=_bind_of(words)) if text == _BIND else text


def _bind_of(words: Sequence[str]) -> str:
    given = {"--host": "127.0.0.1", "--port": "8000"}
    for at, word in enumerate(words):
        flag, eq, value = word.partition("=")
        if flag in given and (eq or at + 1 < len(words)):
            given[flag] = value if eq else words[at + 1]
    host = given["--host"]
    return f"[{host}]:{given['--port']}" if ":" in host else f"{host}:{given['--port']}"
