"""A listener as the workers serve it: its settings (Site), and the answer to its health path.

Both runners, WSGI and ASGI, read a Site; the health path is answered on the worker's loop, without
the app, the same way for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from sockact.errors import ProtocolError
from sockact.http.dates import http_date
from sockact.http.engine import DONE, Connection
from sockact.http.events import NEED_DATA, Data, Request
from sockact.http.forwarded import NOBODY, Trust
from sockact.http.limits import Limits, SpoolBudget

if TYPE_CHECKING:
    from sockact.logs.access import AccessLog


@dataclass(frozen=True)
class Site:
    """Everything per listener the HTTP layer and both runners need; built once in the worker before
    serving."""

    app: Callable[..., Any]  # the WSGI or ASGI application
    limits: Limits
    header_timeout: float  # seconds for a whole request head to arrive (deadline, not per recv)
    io_timeout: float  # per blocking send/recv while reading a body or writing a response
    access_log: bool  # this listener's switch
    listener: str  # listener name, e.g. "http"
    url_scheme: str = "http"
    access: AccessLog | None = None  # the worker's access log, shared by its sites
    trust: Trust = NOBODY  # forwarded_allow_ips: whose X-Forwarded-* and Forwarded count
    health_path: bytes = b""  # answered here, never by the app; b"": none
    proxy_protocol: str = "off"  # "v1", "v2" or "auto": a PROXY header precedes HTTP (the loop reads it)
    body_buffer: int = 0  # bodies up to this size are read whole by the loop before the app's call
    body_spool: int = 0  # larger bodies up to this size (chunked: decoded) the loop reads into a file first
    spool_budget: SpoolBudget | None = None  # what all spooled bodies hold at once (the worker's, body_spool_total)
    outbox_budget: SpoolBudget | None = None  # what all WSGI outboxes hold at once (OUTBOX_TOTAL); None: no outbox
    send_timeout: float = 0.0  # per response write that makes no progress (send_timeout); 0.0: io_timeout
    root_path: str = ""  # the prefix the app is mounted under (SCRIPT_NAME, ASGI's root_path)
    threaded: bool = False  # more than one app thread may call the app at once (wsgi.multithread)
    client_budget: float = 0.0  # seconds from a call's start by which its waits on the client end; 0.0: none
    # The local address of every connection on this listener, when it is bound to one IP address (so a
    # connection's is known without a getsockname()); None: a wildcard or Unix listener.
    local: tuple[str, int] | None = None


def no_app(*args: Any) -> NoReturn:
    """The app of a listener that serves none in a worker: the metrics listener, whose connections the
    supervisor answers itself (Config.serves). Its app is neither loaded nor given a lifespan there."""
    raise RuntimeError("this listener's connections never reach a worker")


class _Named(Protocol):
    def getsockname(self) -> Any: ...


def local_address(site: Site, sock: _Named) -> tuple[str, int] | str | None:
    """A connection's local address: its listener's when that is bound to one IP address (Site.local: no
    syscall), else the socket's own: (host, port) for TCP, the path for a Unix socket ("" unnamed); None
    when the kernel cannot say."""
    if site.local is not None:
        return site.local
    try:
        name = sock.getsockname()
    except OSError:
        return None
    if isinstance(name, tuple):
        return str(name[0]), int(name[1])
    return name.decode() if isinstance(name, bytes) else str(name)


# Giving up on a client (a 408 and its linger, or a close) takes at most about this long.
CLIENT_MARGIN = 2.0


def client_budget(timeout: float) -> float:
    """How long an app call may wait on its client in all (reading the body, sending the response):
    short of ``timeout`` by a margin, so that a slow client ends its call before the supervisor could
    take the call for stuck and kill the worker. 0.0 (none) when ``timeout`` is off."""
    if not timeout:
        return 0.0
    return max(timeout - CLIENT_MARGIN, timeout / 2)


def is_health(site: Site, request: Request) -> bool:
    """Whether ``request`` asks for the listener's health path, which the app never sees."""
    health = site.health_path
    return bool(health) and request.path == health and request.method in (b"GET", b"HEAD")


def health_response(engine: Connection, stopping: bool) -> tuple[int, bytes]:
    """The health path's whole answer, and its status: 200, or 503 once stopping or draining.

    It is answered on the worker's loop, which must never wait for a client: a request body
    already received whole is dropped, and one still on its way closes the connection.
    """
    whole_request = _body_buffered(engine)
    status = 503 if stopping else 200
    body = b"stopping\n" if stopping else b"ok\n"
    head = engine.start_response(
        "503 Service Unavailable" if stopping else "200 OK",
        [("Content-Type", "text/plain"), ("Cache-Control", "no-store")], close=stopping or not whole_request,
        date=http_date(), whole=len(body))
    return status, head + engine.send_data(body) + engine.end_response()


def _body_buffered(engine: Connection) -> bool:
    """Drop a request body already received whole; False if more is to come."""
    while engine.state != DONE:
        try:
            event = engine.next_event()
        except ProtocolError:
            return False
        if event is NEED_DATA:
            return False
        if not isinstance(event, Data):
            break
    return engine.state == DONE
