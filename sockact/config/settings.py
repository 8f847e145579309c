"""The one list of settings, and the frozen Config that declares it.

Every option is declared once, as a field of Config (or of ListenerSettings, for the ones a
[listeners.NAME] table may override) whose metadata holds its Setting: parser, default, help,
flags. SETTINGS is derived from those fields, and the CLI, the environment (SOCKACT_*), the TOML
file, ``sockact check`` and the man pages all read it, so they cannot drift. Sources are merged
in this order, later ones winning: defaults < TOML file < environment < command line.

Nothing here reads the environment at import time, logs, or exits: callers pass the environment
in and catch ConfigError. Reading the sources is sources.py's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sockact.config import parsers
from sockact.errors import ConfigError
from sockact.hooks import Hooks
from sockact.hooks import parse as parse_hooks
from sockact.ipc.scoreboard import MAX_THREADS, MAX_WORKERS
from sockact.logs.access import GUNICORN_FORMAT, check_format

ENV_PREFIX = "SOCKACT_"
DEFAULT_APP = "sockact.apps.demo:app"
# gunicorn's 0 for limit_request_line and limit_request_field_size: what to write instead (sockact convert does).
_NO_UNLIMITED = "0 is gunicorn's unlimited, which sockact does not take: write 65536, the request head's own bound"
# The settings of the packaged sockact.service (the .deb installs it).
PACKAGED_CONFIG = "/etc/sockact/sockact.toml"

# The classes here generate no __eq__, __hash__ or __repr__ (equality is identity): nothing compares
# or prints them, and each generated method is compiled at import, on a cold start's way to its
# first fork; for Config's fields that is about 2.5% of the start's imports.


@dataclass(frozen=True, eq=False, repr=False)
class Setting:
    """One option. ``name`` is the TOML key and the Config attribute (filled in from the field)."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    section: str = "server"
    per_listener: bool = False  # may also be set in a [listeners.NAME] table
    metavar: str = ""
    cli: bool = True
    aliases: tuple[str, ...] = ()  # more command-line spellings, e.g. gunicorn's "-w"
    # Read once, as the supervisor starts (its log, its sockets, what it imports): a reload leaves the
    # running value and names the change; the next restart applies it.
    restart: bool = False

    @property
    def described(self) -> str:
        """The help, and for a setting only a restart applies, that too (--help, the man pages)."""
        if not self.restart:
            return self.help
        return self.help + " Read at start only: a reload leaves the running value, and names the change in its log."

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def flags(self) -> tuple[str, ...]:
        """Every command-line spelling: short aliases first, as --help shows them."""
        return (*sorted(a for a in self.aliases if not a.startswith("--")), self.flag,
                *(a for a in self.aliases if a.startswith("--")))

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def boolean(self) -> bool:
        """A switch: --flag / --no-flag on the command line."""
        return self.parse is parsers.boolean

    @property
    def repeatable(self) -> bool:
        """May be given several times on the command line (a list)."""
        return self.parse in parsers.REPEATABLE

    @property
    def kind(self) -> str:
        return (self.parse.__doc__ or "").strip()


def _opt(parse: Callable[[Any], Any], default: Any, help: str, section: str, *, metavar: str = "",
         aliases: tuple[str, ...] = (), cli: bool = True, restart: bool = False) -> Any:
    """A Config field that declares its setting; the name and per_listener come from the field."""
    setting = Setting("", parse, default, help, section, metavar=metavar, aliases=aliases, cli=cli, restart=restart)
    return field(default=default, metadata={"setting": setting})


@dataclass(frozen=True, eq=False, repr=False)
class ListenerSettings:
    """The settings a [listeners.NAME] table may override; Config and ListenerConfig share them."""

    app: str = _opt(
        parsers.app_spec, DEFAULT_APP,
        "The WSGI or ASGI application to serve, as 'module:callable'; a bare 'module' means 'module:application', "
        "and 'module:create_app()' serves what that factory returns (literal arguments, as gunicorn's). "
        "A listener without its own [listeners.NAME] table serves this one. Named nowhere, the built-in demo is "
        "served, and a warning at start says so.", "app", metavar="MODULE:CALLABLE")
    interface: str = _opt(
        parsers.choice("auto", "wsgi", "asgi"), "auto",
        "How the app is called: 'wsgi' (PEP 3333), 'asgi' (ASGI 3, on an asyncio loop per worker, uvloop "
        "where installed), or 'auto', which takes an async callable of (scope, receive, send) for ASGI and "
        "anything else for WSGI, and logs which it chose. The listeners of one sockact share one interface. "
        "A 'wsgi' or 'asgi' that contradicts the app's shape is a warning in check and at each worker's start.",
        "app", metavar="INTERFACE")
    root_path: str = _opt(
        parsers.mount, "",
        "The URL prefix the app is mounted under, e.g. '/app' behind a proxy that forwards /app/...: it "
        "becomes SCRIPT_NAME and is cut from PATH_INFO. Unset, the SCRIPT_NAME environment variable gives "
        "it, as with gunicorn.", "app", metavar="PREFIX")
    keepalive: float = _opt(
        parsers.seconds, 75.0, "Close a parked keep-alive connection after this many idle seconds.", "http",
        metavar="SECONDS", aliases=("--keep-alive",))
    header_timeout: float = _opt(
        parsers.seconds, 10.0, "A request head must arrive within this many seconds (slowloris guard).", "http",
        metavar="SECONDS")
    park_after: float = _opt(
        parsers.seconds, 0.1,
        "A connection idle at a request boundary this long goes back to the supervisor.", "http",
        metavar="SECONDS")
    limit_request_line: int = _opt(
        parsers.integer(16, zero=_NO_UNLIMITED), 8190, "Longest request line in bytes (else 414).", "http",
        metavar="BYTES")
    limit_request_fields: int = _opt(
        parsers.integer(1), 100, "Most header fields in a request (else 431).", "http", metavar="N")
    limit_request_field_size: int = _opt(
        parsers.integer(16, zero=_NO_UNLIMITED), 8190, "Longest header field, name and value, in bytes (else 431).",
        "http",
        metavar="BYTES", aliases=("--limit-request-field_size",))  # gunicorn's spelling
    limit_request_head: int = _opt(
        parsers.integer(256), 65536, "Largest request head in total, in bytes (else 431).", "http", metavar="BYTES")
    limit_request_body: int = _opt(
        parsers.integer(0), 100 * 1024 * 1024, "Largest request body in bytes (else 413); 0 means no limit.", "http",
        metavar="BYTES")
    body_buffer: int = _opt(
        parsers.integer(0), 64 * 1024,
        "A WSGI request body of up to this many bytes (by Content-Length) is read whole before the app is "
        "called, so a client that sends its body slowly holds no app thread meanwhile; a body not whole "
        "within the timeout of its head (plus a second per KiB received) gets 408. Larger bodies go to a file "
        "first, and so do chunked ones once they grow past this size (body_spool). 0: off.", "http",
        metavar="BYTES")
    body_spool: int = _opt(
        parsers.integer(0), 100 * 1024 * 1024,
        "A WSGI request body larger than body_buffer, of up to this many bytes (by Content-Length; a chunked "
        "body by its decoded size), is read whole by the worker's loop into a temporary file in $TMPDIR, "
        "else /var/tmp, which is on disk where /tmp is a tmpfs (unlinked at once) before the app is called, "
        "as nginx's client_body_temp_path: a client that "
        "uploads slowly holds no app thread, only its connection and its file. The body must be whole "
        "within the timeout of its head plus a second per KiB received, else 408. Larger bodies are read "
        "by the app as they come. 0: off.", "http", metavar="BYTES")
    forwarded_allow_ips: str = _opt(
        parsers.networks, "127.0.0.1,::1,unix",
        "Front-end proxies trusted to set X-Forwarded-For/-Proto/-Host/-Port and Forwarded (RFC 7239): "
        "comma-separated addresses or networks, 'unix' for Unix-socket peers, or '*' for any. From them "
        "these fields set REMOTE_ADDR (the right-most untrusted address), the URL scheme, the host and "
        "the port; from anyone else they reach the app untouched.", "http", metavar="ADDRS")
    proxy_protocol: str = _opt(
        parsers.choice("off", "v1", "v2", "auto"), "off",
        "Expect a PROXY protocol header (HAProxy's) before each connection's first request: 'v1' (text), "
        "'v2' (binary) or 'auto' (either). Its client address becomes REMOTE_ADDR; a connection without "
        "a valid header within header_timeout is closed.", "http", metavar="VERSION")
    health_path: str = _opt(
        parsers.url_path, "",
        "Answer GET or HEAD of this exact path, e.g. '/-/health', without calling the app: 200 while "
        "serving, 503 once stopping, for a load balancer's health check. Empty: off.", "http",
        metavar="PATH")
    access_log: bool = _opt(parsers.boolean, True, "Log one line per request.", "logging")


@dataclass(frozen=True, eq=False, repr=False)
class Config(ListenerSettings):
    """The effective settings: every source merged. Fields after the listener ones are global."""

    virtualenv: str | None = _opt(
        parsers.path, None,
        "A virtualenv whose site-packages are added to the path before the app is imported. "
        "Its Python version must match sockact's.", "app", metavar="DIR")
    chdir: str | None = _opt(
        parsers.path, None,
        "Change to this directory before the app is imported (the project's directory), and put it on "
        "the import path.", "app", metavar="DIR")
    pythonpath: tuple[str, ...] = _opt(
        parsers.dirs, (),
        "Directories, separated by commas, put in front of the import path before the app is imported.",
        "app", metavar="DIRS")
    env: tuple[str, ...] = _opt(
        parsers.env_pairs, (),
        "Set an environment variable, as KEY=VALUE, before the app is imported. In SOCKACT_ENV, pairs are "
        "separated by spaces.", "app", metavar="KEY=VALUE", aliases=("-e",))
    preload: bool = _opt(
        parsers.boolean, False,
        "Import the app once in the supervisor before forking workers (less memory per worker; "
        "a reload then re-forks but does not re-import).", "app", restart=True)
    lifespan: str = _opt(
        parsers.choice("auto", "on", "off"), "auto",
        "ASGI lifespan protocol: 'on' runs the app's startup in each worker before it serves (a failed "
        "startup halts like an app that cannot import) and its shutdown when the worker stops, within "
        "graceful_timeout; 'auto' does so unless the app refuses lifespan (a startup that raises after it took "
        "lifespan.startup is logged as an error, with its traceback, and serving goes on); 'off' never.", "app",
        metavar="MODE")
    ws: str = _opt(
        parsers.choice("auto", "websockets", "wsproto"), "auto",
        "The WebSocket library of ASGI apps: 'auto' takes websockets (11 or later) if it is installed, else "
        "wsproto, as uvicorn does. Without either, a WebSocket request reaches the app as plain HTTP, and "
        "the log says what to install.", "http", metavar="LIBRARY")
    body_spool_total: int = _opt(
        parsers.integer(0), 1024 * 1024 * 1024,
        "The most bytes a worker's spooled request bodies (body_spool) may hold at once, over all its "
        "connections: a Content-Length body takes its length as its file starts, a chunked one its decoded "
        "size as it comes, and each gives it back when its call ends or its connection closes. A body that "
        "would pass it gets 503, and the log names this setting; bodies already spooling go on (a chunked "
        "one that would pass it is read by the app as it comes, as past body_spool, and so is a body longer "
        "than it, which no file could hold). 1 GiB: ten bodies of "
        "the default body_spool per worker, so that slow uploaders fill at most workers times this much of "
        "$TMPDIR (else /var/tmp), however many connect; a fixed figure, not a share of the free space at "
        "start, which other workers and services spend too. 0: no bound.", "http", metavar="BYTES")
    ws_max_size: int = _opt(
        parsers.integer(1), 16 * 1024 * 1024,
        "Largest WebSocket message in bytes (uvicorn's setting and default); a larger one closes the "
        "WebSocket with 1009.", "http", metavar="BYTES")
    ws_ping_interval: float = _opt(
        parsers.seconds_or_off, 20.0,
        "Seconds between the pings each open WebSocket sends its client (uvicorn's setting and default): "
        "they keep proxies and NATs from dropping a quiet session, and find a client that vanished "
        "without a FIN (a phone off the network, a host powered off), which would otherwise hold its "
        "session, its app task and a file descriptor for good. A conforming client answers them by "
        "itself. 0: no pings.", "http", metavar="SECONDS")
    ws_ping_timeout: float = _opt(
        parsers.seconds_or_off, 20.0,
        "Seconds a WebSocket client has to answer a ping (uvicorn's setting and default; any byte it "
        "sends counts, since its pong waits unparsed while the app does not receive). Past it the "
        "session ends as a vanished client's does: the app's receive() gets websocket.disconnect with "
        "1006, and the connection closes after a close frame with 1011, as websockets and uvicorn "
        "send. 0: pings never end a session.", "http", metavar="SECONDS")
    bind: tuple[str, ...] = _opt(
        parsers.binds, ("127.0.0.1:8000",),
        "Addresses to listen on when systemd passes no sockets: HOST:PORT, [V6]:PORT or unix:PATH "
        "(made with mode 0666, as a .socket unit's default SocketMode=). Ignored under socket activation; an "
        "empty list is an error.", "listeners", metavar="ADDR",
        aliases=("-b",), restart=True)
    backlog: int = _opt(
        # listen() takes a C int (a larger one raised OverflowError at start); the kernel caps it at somaxconn.
        parsers.integer(1, 2**31 - 1), 1024, "listen() backlog for sockets bound with --bind.", "listeners",
        metavar="N", restart=True)
    metrics_listener: str = _opt(
        parsers.listener_name, "metrics",
        "The listener (socket FileDescriptorName=, or NAME= of a --bind address) on which the supervisor "
        "answers GET /metrics with Prometheus metrics instead of serving the app; needs prometheus_client "
        "(python3-prometheus-client). Without such a listener there are no metrics and nothing is counted; "
        "a name other than the default must name a listener.", "listeners", metavar="NAME", restart=True)
    workers: int = _opt(
        parsers.integer(1, MAX_WORKERS), 2, "Number of worker processes; at most 512.", "workers", metavar="N",
        aliases=("-w",))
    threads: int = _opt(
        parsers.integer(1, MAX_THREADS), 1,
        "App threads per worker that are always there; 1 serves one request at a time per worker, as a "
        "sync worker, unless max_threads lets the worker grow. An ASGI app runs on its worker's event "
        "loop instead, many requests at a time.", "workers", metavar="N")
    max_threads: int = _opt(
        parsers.integer(0, MAX_THREADS), 0,
        "The most app threads a worker runs: when every thread is in a call and another request is "
        "ready, the worker starts one more, up to this many, so a fast request does not wait behind "
        "slow ones; the threads beyond 'threads' exit after thread_idle_timeout. 0: as many as "
        "'threads' (a fixed pool). Only for an app that is thread-safe (Django and Flask are): 16 "
        "suits most.", "workers", metavar="N")
    thread_idle_timeout: float = _opt(
        parsers.seconds, 30.0,
        "An app thread beyond 'threads' that has had no request for this long exits.", "workers",
        metavar="SECONDS")
    max_requests: int = _opt(
        parsers.integer(0), 0, "Recycle a worker after this many requests (0: never).", "workers", metavar="N")
    max_requests_jitter: int = _opt(
        parsers.integer(0), 0, "Add a random 0..N to max_requests per worker, so workers do not recycle together.",
        "workers", metavar="N")
    max_worker_memory: int = _opt(
        parsers.size_or_off, 0,
        "Recycle a worker whose memory of its own (USS: its private pages, as /proc/PID/smaps_rollup counts "
        "them) passes this size, e.g. '512M': its successor starts first, then it finishes its calls and "
        "exits, and no client sees an error. Read on the supervisor's timer, about once a second. 0: off.",
        "workers", metavar="SIZE")
    worker_memory_limit: int = _opt(
        parsers.size_or_off, 0,
        "A hard memory limit per worker, e.g. '1G', that the kernel enforces: each worker runs in a "
        "cgroup of its own with this memory.max, and a worker that passes it is killed by the kernel "
        "alone (its clients in a call get a 502) and replaced. Needs systemd with Delegate=yes and "
        "ProtectControlGroups=no (the memory-limit.conf drop-in); sockact refuses to start without "
        "them. Set it above max_worker_memory, which recycles gracefully first. A reload applies it to "
        "the new workers. 0: off.",
        "workers", metavar="SIZE")
    queue_size: int = _opt(
        parsers.integer(1), 1024,
        "Connections held in the supervisor while no worker can take one (each is stalled, starting or "
        "retiring). When full, sockact stops accepting and the kernel backlog holds new clients.",
        "workers", metavar="N")
    timeout: float = _opt(
        parsers.seconds_or_off, 30.0,
        "A worker busy on one request for longer, or whose loop stops turning for as long (stopped, or "
        "blocked outside a request), is killed (SIGABRT, then SIGKILL) and replaced; the watchdog stops "
        "while one is overdue. A worker not ready this long after its start is killed as a failed boot. "
        "0 turns the timeout off.", "workers", metavar="SECONDS",
        aliases=("-t",))
    send_timeout: float = _opt(
        parsers.seconds, 10.0,
        "Seconds a response write may make no progress (the client reads nothing), or a WSGI app's read "
        "of a request body (the client sends nothing), before the connection is closed (a read: after a "
        "408), with one log line. Either wait also ends 2 s before timeout since the app call began (half "
        "of timeout if that is under 4 s), so a slow client never gets its worker killed.", "http",
        metavar="SECONDS")
    graceful_timeout: float = _opt(
        parsers.seconds, 30.0, "On stop or reload, how long in-flight requests may take to finish; then the "
        "supervisor kills the worker. In the last fifth of it (at most 4 s), an ASGI worker closes its "
        "WebSocket sessions (1001), then cancels its tasks still running, and runs the app's lifespan shutdown.",
        "workers", metavar="SECONDS")
    drain_delay: float = _opt(
        parsers.seconds_or_off, 0.0,
        "On a graceful stop, first serve this many seconds more with the health path answering 503 and "
        "responses closing their connections, so load balancers take this host out before it stops "
        "accepting. Set it above the balancer's time to mark a server down (checks x interval).",
        "workers", metavar="SECONDS")
    fd_store: bool = _opt(
        parsers.boolean, True,
        "On a graceful stop under systemd, give idle keep-alive connections to systemd's fd store "
        "instead of closing them, and serve them again after the restart. Needs FileDescriptorStoreMax= "
        "in the service unit; without it, turn this off so that a stop answers with Connection: close.",
        "workers")
    batch_scheduling: bool = _opt(
        parsers.boolean, True,
        "Run the supervisor and its workers under the SCHED_BATCH CPU policy (sched(7)): a process woken "
        "for a connection then waits for the running one to sleep, or takes an idle CPU, instead of cutting "
        "into it mid-request. Workers, their loops and what the app starts inherit it; the app threads a "
        "worker starts beyond its loop thread, whose calls wait on a database or an upstream, keep the "
        "default policy. A policy set from outside (systemd's CPUSchedulingPolicy=, chrt) is kept either way. "
        "The cost: where every CPU is "
        "busy, a woken worker waits out the running process's slice, so fast requests' tail latency rises; "
        "turn it off where that tail matters more than throughput.", "workers", restart=True)
    handback_after: float = _opt(
        parsers.seconds, 0.05,
        "When every app thread of a worker, up to max_threads, has been in one call this long, its other "
        "connections go back to the supervisor.", "workers", metavar="SECONDS")
    access_logfile: str | None = _opt(
        parsers.log_file, None,
        "Write the access log to this file ('-': stderr) instead of the log target.", "logging",
        metavar="FILE")
    access_logformat: str = _opt(
        check_format, GUNICORN_FORMAT,
        "The access log line, with gunicorn's atoms: %(h)s client, %(t)s time, %(r)s request line, "
        "%(s)s status, %(b)s body bytes, %(f)s referer, %(a)s user agent, %(D)s microseconds, "
        "%({header}i)s...; or 'json' for one JSON object per line.", "logging", metavar="FORMAT")
    error_logfile: str | None = _opt(
        parsers.log_file, None, "Write sockact's own log to this file ('-': stderr) instead of the log target.",
        "logging", metavar="FILE", aliases=("--log-file",), restart=True)
    log_level: str = _opt(
        parsers.choice("debug", "info", "warning", "error"), "info", "Least severe level logged.", "logging",
        metavar="LEVEL", restart=True)
    log_target: str = _opt(
        parsers.choice("auto", "journal", "stderr"), "auto",
        "Where logs go: 'auto' uses journald when stderr is connected to it, else stderr.", "logging",
        metavar="TARGET", restart=True)
    reload: bool = _opt(
        parsers.boolean, False,
        "Development only: restart the workers when a .py file of the app's project changes (the "
        "directory the app is found on, with its other packages: --chdir, the working directory or a "
        "--pythonpath entry; not installed packages). Refused under "
        "systemd (INVOCATION_ID set) unless --reload-under-systemd, and with preload.", "development", restart=True)
    reload_under_systemd: bool = _opt(
        parsers.boolean, False, "Allow reload even when systemd runs sockact.", "development", restart=True)
    hooks: Hooks = _opt(  # noqa: RUF009 - Hooks is a frozen dataclass
        parse_hooks, Hooks(),
        "Python functions called at points of the service's life, as gunicorn's server hooks, each set as "
        "'module:callable' in a [hooks] table: on_starting(server) and when_ready(server) in the supervisor "
        "at start and once the workers serve, on_reload(server) at each reload, post_fork(server, worker) in "
        "each worker before it imports the app, worker_exit(server, worker) in each worker as it exits "
        "cleanly. A hook that does not import stops the start. In SOCKACT_HOOKS, NAME=module:callable pairs "
        "separated by spaces.", "hooks", metavar="TABLE", cli=False, restart=True)
    # per-listener overrides by fd name, e.g. {"api": {"app": "api.wsgi:app", "keepalive": 5.0}}
    listeners: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    config_file: str | None = None
    # Each setting a file, the environment or a flag set, and where from: the file's path, 'SOCKACT_X in the
    # environment', 'option --x' (an error naming two settings says where each came from).
    given: Mapping[str, str] = field(default_factory=dict)
    # Values of the file that the environment or a flag overrides, in words: said at start, by check, and by a
    # reload that finds one changed, since editing the file changes nothing there.
    overridden: tuple[str, ...] = ()

    def serves(self, name: str) -> bool:
        """Whether listener ``name``'s connections reach a worker: all but the metrics listener's, which the
        supervisor answers itself (so its app neither chooses a worker's interface nor runs a lifespan)."""
        return name != self.metrics_listener

    def apps(self, names: Iterable[str]) -> list[str]:
        """The apps the listeners ``names`` serve in a worker (each once, in order): what a worker, or a preload,
        imports. Not the metrics listener's (``serves``)."""
        return list(dict.fromkeys(self.listener(name).app for name in names if self.serves(name)))

    def listener(self, name: str) -> ListenerConfig:
        """The effective settings of the listener called ``name`` (fd name or bind address)."""
        values = {key: getattr(self, key) for key in LISTENER_KEYS}
        values.update(self.listeners.get(name, {}))
        return ListenerConfig(name=name, **values)

    @property
    def thread_ceiling(self) -> int:
        """The most app threads a worker may run (``max_threads``, or ``threads`` for a fixed pool)."""
        return max(self.threads, self.max_threads)

    def thread_mode(self) -> str:
        """How a WSGI app runs in each worker, in words, for ``sockact check`` and the worker's log."""
        if self.thread_ceiling == 1:
            return "one request at a time per worker (1 app thread, as gunicorn's sync worker)"
        if self.thread_ceiling == self.threads:
            return f"{self.threads} app threads per worker, a fixed pool (the app must be thread-safe)"
        return (f"{self.threads} to {self.thread_ceiling} app threads per worker: one more starts while "
                f"every thread is in a call, and those beyond {self.threads} exit after "
                f"{self.thread_idle_timeout:g} s idle (the app must be thread-safe)")

    def threads_unused(self) -> str | None:
        """What the settings ask of app threads that an ASGI app does not use, in words; None if nothing.
        A gunicorn config carried over with UvicornWorker and ``threads`` would otherwise be silently ignored."""
        given = [name for name in ("threads", "max_threads") if name in self.given]
        if not given:
            return None
        return (f"{' and '.join(given)}: ignored for an ASGI app, which runs on its worker's event loop, many "
                "requests at a time (app threads serve WSGI apps); for more at once, raise workers")

    def check_names(self, names: Sequence[str]) -> None:
        """The listener names the settings give must be among ``names``: a mistyped one would leave
        its table (trust, PROXY protocol, app) or the metrics silently unapplied. Raises ConfigError.
        Only a metrics_listener other than the default must exist: without it, no metrics is the rule."""
        have = f"(the listeners: {', '.join(names)})"
        for name in self.listeners:
            if name not in names:
                raise ConfigError(f"{self.config_file}: table 'listeners.{name}': no listener is named {name!r} {have}")
        if self.metrics_listener not in names and self.metrics_listener != BY_NAME["metrics_listener"].default:
            raise ConfigError(f"metrics_listener: no listener is named {self.metrics_listener!r} {have}")


@dataclass(frozen=True, eq=False, repr=False)
class ListenerConfig(ListenerSettings):
    """Settings of one named listener: the defaults overlaid with its [listeners.NAME] table."""

    name: str = field(default="", kw_only=True)


# The order settings are presented in (--help, man pages, ``describe``): by section, then as declared.
SECTIONS = ("app", "listeners", "workers", "http", "logging", "development", "hooks")


def _settings() -> tuple[Setting, ...]:
    per_listener = {f.name for f in dataclasses.fields(ListenerSettings)}
    declared = [dataclasses.replace(f.metadata["setting"], name=f.name, per_listener=f.name in per_listener)
                for f in dataclasses.fields(Config) if "setting" in f.metadata]
    return tuple(sorted(declared, key=lambda s: SECTIONS.index(s.section)))


SETTINGS: tuple[Setting, ...] = _settings()
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
LISTENER_KEYS: frozenset[str] = frozenset(s.name for s in SETTINGS if s.per_listener)

