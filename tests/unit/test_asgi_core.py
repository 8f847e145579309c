"""The ASGI side's pure parts: which interface an app speaks, and the scopes built from request heads."""

from __future__ import annotations

import asyncio
import functools
import logging

import pytest

from sockact.asgi.interface import ASGI, WSGI, choose, is_asgi, one_interface
from sockact.asgi.lifespan import Lifespan
from sockact.asgi.scope import conn_scope, request_scope
from sockact.errors import AppLoadError
from sockact.http.events import Request
from sockact.http.forwarded import Trust


async def asgi_function(scope, receive, send):
    pass


def wsgi_function(environ, start_response):
    return []


class AsgiInstance:
    async def __call__(self, scope, receive, send):
        pass


class WsgiInstance:
    def __call__(self, environ, start_response):
        return []


async def two_arguments(scope, receive):
    pass


@pytest.mark.parametrize(("app", "expected"), [
    (asgi_function, True),
    (AsgiInstance(), True),
    (functools.partial(asgi_function), True),
    (wsgi_function, False),
    (WsgiInstance(), False),
    (AsgiInstance, False),  # a class: calling it builds an instance (ASGI 2's shape)
    (two_arguments, False),
])
def test_asgi_is_an_async_callable_of_scope_receive_send(app, expected):
    assert is_asgi(app) is expected


def test_the_setting_wins_over_detection():
    assert choose("auto", asgi_function) == ASGI
    assert choose("auto", wsgi_function) == WSGI
    assert choose("wsgi", asgi_function) == WSGI
    assert choose("asgi", wsgi_function) == ASGI


def test_listeners_of_one_worker_share_one_interface():
    assert one_interface([("http", ASGI), ("api", ASGI)]) == ASGI
    with pytest.raises(AppLoadError, match=r"http \(wsgi\), api \(asgi\)"):
        one_interface([("http", WSGI), ("api", ASGI)])


def _request(target: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    return Request(b"GET", target, "1.1", headers or [(b"HOST", b"x"), (b"X-A", b"1")], None, False, True,
                   False, False)


def test_the_http_scope():
    base = conn_scope(("10.0.0.1", 5000), ("127.0.0.1", 8000), "", {"db": 1}, {"sockact.conn_id": 7})
    scope = request_scope(base, _request(b"/caf%C3%A9/x?q=%20"))
    assert scope["type"] == "http" and scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == ("/café/x", b"/caf%C3%A9/x", b"q=%20")
    assert scope["headers"] == [(b"host", b"x"), (b"x-a", b"1")]
    assert scope["client"] == ("10.0.0.1", 5000) and scope["server"] == ("127.0.0.1", 8000)
    assert scope["method"] == "GET" and scope["scheme"] == "http" and scope["http_version"] == "1.1"
    assert scope["extensions"]["sockact"]["sockact.conn_id"] == 7
    # Each request gets its own copy of the lifespan state.
    scope["state"]["db"] = 2
    assert base["state"] == {"db": 1}


def test_root_path_only_under_the_prefix():
    base = conn_scope(None, None, "/app", {}, {})
    assert base["client"] is None
    inside = request_scope(base, _request(b"/app/x"))
    assert (inside["root_path"], inside["path"]) == ("/app", "/app/x")
    assert request_scope(base, _request(b"/app"))["root_path"] == "/app"
    assert request_scope(base, _request(b"/application"))["root_path"] == ""


def test_the_websocket_scope():
    base = conn_scope(("::1", 1, 0, 0), None, "", {}, {})
    request = _request(b"/ws", [(b"SEC-WEBSOCKET-PROTOCOL", b"chat, superchat")])
    scope = request_scope(base, request, websocket=True)
    assert scope["type"] == "websocket" and scope["scheme"] == "ws" and "method" not in scope
    assert scope["subprotocols"] == ["chat", "superchat"]


FORWARDED = [(b"HOST", b"inner:8000"), (b"X-FORWARDED-FOR", b"198.51.100.7, 10.0.0.1"),
             (b"X-FORWARDED-PROTO", b"https"), (b"X-FORWARDED-HOST", b"shop.example")]


def test_a_trusted_proxy_sets_client_scheme_host_and_server():
    base = conn_scope(("10.0.0.1", 5000), ("127.0.0.1", 8000), "", {}, {})
    scope = request_scope(base, _request(b"/", FORWARDED), trust=Trust.parse("10.0.0.0/8"))
    assert scope["client"] == ("198.51.100.7", 0)  # the proxy names no port: 0, as uvicorn says
    assert scope["scheme"] == "https" and scope["server"] == ("shop.example", 443)
    assert (b"host", b"shop.example") in scope["headers"] and (b"host", b"inner:8000") not in scope["headers"]
    assert (b"x-forwarded-for", b"198.51.100.7, 10.0.0.1") in scope["headers"]  # the fields stay
    assert base["client"] == ("10.0.0.1", 5000)  # the connection's keys are untouched
    ws = request_scope(base, _request(b"/ws", FORWARDED), websocket=True, trust=Trust.parse("10.0.0.0/8"))
    assert ws["scheme"] == "wss" and ws["client"] == ("198.51.100.7", 0)


def test_rfc7239_forwarded_and_a_forwarded_port():
    base = conn_scope(("10.0.0.1", 5000), ("127.0.0.1", 8000), "", {}, {})
    trust = Trust.parse("10.0.0.1")
    field = (b"FORWARDED", b'for="198.51.100.7:4711";proto=https;host="a.test:8443"')
    scope = request_scope(base, _request(b"/", [field]), trust=trust)
    assert (scope["client"], scope["scheme"], scope["server"]) == (("198.51.100.7", 4711), "https", ("a.test", 8443))
    scope = request_scope(base, _request(b"/", [(b"HOST", b"x"), (b"X-FORWARDED-PORT", b"9443")]), trust=trust)
    assert scope["server"] == ("127.0.0.1", 9443) and scope["client"] == ("10.0.0.1", 5000)


def test_forwarded_fields_count_only_with_trust():
    base = conn_scope(("10.0.0.1", 5000), ("127.0.0.1", 8000), "", {}, {})
    scope = request_scope(base, _request(b"/", FORWARDED))
    assert (scope["client"], scope["scheme"], scope["server"]) == (("10.0.0.1", 5000), "http", ("127.0.0.1", 8000))
    assert (b"host", b"inner:8000") in scope["headers"]


def test_interface_and_lifespan_are_settings_and_interface_is_per_listener(tmp_path):
    from sockact import config
    from sockact.errors import ConfigError

    path = tmp_path / "sockact.toml"
    path.write_text('interface = "asgi"\nlifespan = "on"\n[listeners.api]\ninterface = "auto"\n')
    cfg = config.build({}, {}, str(path))
    assert (cfg.interface, cfg.lifespan) == ("asgi", "on")
    assert cfg.listener("api").interface == "auto" and cfg.listener("http").interface == "asgi"
    assert config.build({"interface": "WSGI"}, {}, None).interface == "wsgi"
    with pytest.raises(ConfigError, match="--interface: invalid value 'rsgi'"):
        config.build({"interface": "rsgi"}, {}, None)
    with pytest.raises(ConfigError, match="SOCKACT_LIFESPAN"):
        config.build({}, {"SOCKACT_LIFESPAN": "maybe"}, None)


# -- the lifespan protocol, driven on a plain asyncio loop


def _lifespan_app(startup: str = "complete", shutdown: str = "complete", seen: list | None = None):
    async def app(scope, receive, send):
        assert scope["type"] == "lifespan"
        message = await receive()
        (seen if seen is not None else []).append(message["type"])
        if startup == "raise":
            raise ConnectionError("no database")
        await send({"type": f"lifespan.startup.{startup}", "message": "no database"})
        if startup != "complete":
            return
        scope["state"]["db"] = "up"
        message = await receive()
        (seen if seen is not None else []).append(message["type"])
        if shutdown == "hang":
            await asyncio.sleep(60)
        await send({"type": "lifespan.shutdown.complete"})
    return app


def test_lifespan_startup_and_shutdown_in_order_with_state():
    seen: list[str] = []
    lifespan = Lifespan(_lifespan_app(seen=seen), "auto", "m:app")

    async def life():
        await lifespan.startup()
        assert lifespan.state == {"db": "up"}
        await lifespan.shutdown(5)

    asyncio.run(life())
    assert seen == ["lifespan.startup", "lifespan.shutdown"]


@pytest.mark.parametrize(("mode", "startup", "fails"), [
    ("auto", "failed", "lifespan startup failed: no database"),
    ("on", "failed", "lifespan startup failed: no database"),
    ("on", "raise", "lifespan startup failed: ConnectionError: no database"),
    ("auto", "raise", None),  # as uvicorn's auto: the app does not do lifespan
])
def test_lifespan_startup_failures(mode, startup, fails):
    lifespan = Lifespan(_lifespan_app(startup), mode, "m:app")
    if fails is None:
        asyncio.run(lifespan.startup())
        return
    with pytest.raises(AppLoadError, match=fails):
        asyncio.run(lifespan.startup())


def test_lifespan_auto_tells_a_failed_startup_from_an_app_without_lifespan(caplog):
    """The spec asks 'auto' to go on either way; an app that took lifespan.startup and then raised had a startup
    that failed, and its traceback is an error in the log, not a line at info."""
    caplog.set_level(logging.INFO, logger="sockact.worker")
    asyncio.run(Lifespan(_lifespan_app("raise"), "auto", "m:app").startup())
    failed = [r for r in caplog.records if "lifespan startup failed" in r.getMessage()]
    assert [r.levelno for r in failed] == [logging.ERROR]
    assert failed[0].exc_info is not None and "ConnectionError: no database" in caplog.text
    assert "does not do lifespan" not in caplog.text
    caplog.clear()

    async def http_only(scope, receive, send):
        assert scope["type"] == "http", "only http"

    asyncio.run(Lifespan(http_only, "auto", "m:app").startup())
    refused = [r for r in caplog.records if "does not do lifespan" in r.getMessage()]
    assert [r.levelno for r in refused] == [logging.INFO]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_lifespan_off_never_calls_the_app_and_a_hung_shutdown_is_bounded(caplog):
    seen: list[str] = []
    asyncio.run(Lifespan(_lifespan_app("raise", seen=seen), "off", "m:app").startup())
    assert seen == []  # off: the app never hears of a lifespan
    lifespan = Lifespan(_lifespan_app(shutdown="hang", seen=seen), "on", "m:app")

    async def life() -> None:
        await lifespan.startup()
        # The outer bound only keeps a broken shutdown from hanging the test run; its own is 0.1 s.
        await asyncio.wait_for(lifespan.shutdown(0.1), 10)

    asyncio.run(life())
    assert seen == ["lifespan.startup", "lifespan.shutdown"]  # it asked, then gave up on the app
    assert "lifespan shutdown did not finish in 0.1s" in caplog.text
