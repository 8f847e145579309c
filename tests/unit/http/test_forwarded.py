"""forwarded.py: who the client is behind trusted proxies; and the WSGI environ that uses it."""

from __future__ import annotations

from typing import Any

import pytest

from sockact import config
from sockact.errors import ConfigError
from sockact.http.engine import Connection, Request
from sockact.http.forwarded import NOBODY, Origin, Trust, collect, resolve
from sockact.http.limits import Limits
from sockact.wsgi.environ import InputStream, connection_environ, request_environ, site_environ

LOOPBACK = Trust.parse(config.Config().forwarded_allow_ips)
BALANCERS = Trust.parse("10.0.0.0/24, 2001:db8::/32")


def test_the_default_trusts_loopback_and_unix_sockets_only() -> None:
    assert LOOPBACK.trusts_peer(("127.0.0.1", 5000)) and LOOPBACK.trusts_peer(("::1", 5000))
    assert LOOPBACK.trusts_peer(None) and LOOPBACK.trusts_peer("")  # a Unix-socket peer
    assert not LOOPBACK.trusts_peer(("127.0.0.2", 5000)) and not LOOPBACK.trusts_peer(("10.0.0.1", 1))


def test_a_list_without_unix_does_not_trust_unix_sockets() -> None:
    assert not BALANCERS.trusts_peer(None)
    assert BALANCERS.trusts_peer(("10.0.0.77", 1)) and BALANCERS.trusts_peer(("2001:db8::5", 1))
    assert not NOBODY.trusts_peer(("127.0.0.1", 1)) and not NOBODY.trusts_peer(None)


def test_star_trusts_everyone() -> None:
    star = Trust.parse("*")
    assert star.trusts_peer(("203.0.113.9", 1)) and star.trusts_peer(None) and star.trusts("not-an-ip")


@pytest.mark.parametrize("bad", ["x", "10.0.0.0/33", "unix:/x", "10.0.0.1;10.0.0.2"])
def test_a_bad_list_is_a_config_error_naming_the_key(bad: str) -> None:
    with pytest.raises(ConfigError, match="forwarded-allow-ips"):
        config.build({"forwarded_allow_ips": bad}, {}, None)


def test_a_listener_table_sets_its_own_trust(tmp_path: Any) -> None:
    path = tmp_path / "sockact.toml"
    path.write_text('[listeners.public]\nforwarded_allow_ips = "10.0.0.5"\n')
    cfg = config.build({}, {}, str(path))
    assert cfg.listener("public").forwarded_allow_ips == "10.0.0.5"
    assert cfg.listener("http").forwarded_allow_ips == "127.0.0.1,::1,unix"


def fields(**values: str) -> dict[str, str]:
    return {name.replace("_", "-"): value for name, value in values.items()}


def test_an_untrusted_peer_is_never_acted_on() -> None:
    assert resolve(("203.0.113.9", 1), fields(x_forwarded_for="1.2.3.4", x_forwarded_proto="https"),
                   BALANCERS) is None


def test_no_forwarding_fields_means_nothing_to_do() -> None:
    assert resolve(("10.0.0.1", 1), {}, BALANCERS) is None


@pytest.mark.parametrize(("chain", "client"), [
    ("198.51.100.7", "198.51.100.7"),
    # the right-most untrusted address wins: the client may have written anything to its left
    ("6.6.6.6, 198.51.100.7", "198.51.100.7"),
    ("6.6.6.6, 198.51.100.7, 10.0.0.9", "198.51.100.7"),
    ("198.51.100.7,10.0.0.9,10.0.0.8", "198.51.100.7"),
    # every hop trusted: the left-most is as far as anyone can see
    ("10.0.0.9, 10.0.0.8", "10.0.0.9"),
    # garbage ends the walk: the nearest trusted proxy is the best answer
    ("198.51.100.7, garbage, 10.0.0.9", "10.0.0.9"),
    ("garbage", None),
    ("2001:db8::1, 2001:db9::7", "2001:db9::7"),
    # with ports, as some proxies write them
    ("198.51.100.7:4711, 10.0.0.9:80", "198.51.100.7"),
    ("[2001:db9::7]:4711", "2001:db9::7"),
    # a zone is no address past the proxy that wrote it, and any text may follow its "%"
    ('198.51.100.7, fe80::1%x" 200 "forged', None),
    ("fe80::1%eth0, 10.0.0.9", "10.0.0.9"),
])
def test_x_forwarded_for(chain: str, client: str | None) -> None:
    origin = resolve(("10.0.0.1", 1), fields(x_forwarded_for=chain), BALANCERS)
    assert origin is not None and origin.client == client


def test_proto_host_and_port_from_the_hop_that_saw_the_client() -> None:
    origin = resolve(("10.0.0.1", 1), fields(
        x_forwarded_for="198.51.100.7, 10.0.0.9", x_forwarded_proto="https, http",
        x_forwarded_host="shop.example, inner", x_forwarded_port="443, 8080"), BALANCERS)
    assert origin == Origin("198.51.100.7", None, "https", "shop.example", "443")


def test_one_proxy_without_x_forwarded_for() -> None:
    origin = resolve(("127.0.0.1", 1), fields(x_forwarded_proto="HTTPS"), LOOPBACK)
    assert origin == Origin(scheme="https")


@pytest.mark.parametrize(("name", "value"), [
    ("x_forwarded_proto", "javascript"), ("x_forwarded_host", "a b"), ("x_forwarded_host", "x/y"),
    ("x_forwarded_port", "0"), ("x_forwarded_port", "65536"), ("x_forwarded_port", "8o"),
])
def test_bad_values_are_ignored(name: str, value: str) -> None:
    assert resolve(("127.0.0.1", 1), fields(**{name: value}), LOOPBACK) == Origin()


@pytest.mark.parametrize(("value", "origin"), [
    ('for=198.51.100.7;proto=https;host=shop.example', Origin("198.51.100.7", None, "https", "shop.example")),
    ('for="[2001:db8:cafe::17]:4711"', Origin("2001:db8:cafe::17", "4711")),
    ('For="198.51.100.7:80";Proto=http', Origin("198.51.100.7", "80", "http")),
    ('for=6.6.6.6;proto=http, for=198.51.100.7;proto=https, for=10.0.0.9;proto=http',
     Origin("198.51.100.7", None, "https")),
    ('for=unknown;proto=https', Origin(None, None, "https")),
    ('for=_hidden, for=10.0.0.9', Origin("10.0.0.9")),
    ('for="[fe80::1%x y]:80", for=10.0.0.9', Origin("10.0.0.9")),
    ('for=198.51.100.7;by=10.0.0.1;host="a.example:8443"', Origin("198.51.100.7", None, None, "a.example:8443")),
])
def test_rfc7239_forwarded(value: str, origin: Origin) -> None:
    assert resolve(("10.0.0.1", 1), fields(forwarded=value), BALANCERS) == origin


@pytest.mark.parametrize("value", ['for', 'for=', 'for=1.2.3.4;for=5.6.7.8', 'for="1.2.3.4', 'for=1.2.3.4;;',
                                   'for=1.2.3.4 proto=https'])
def test_a_malformed_forwarded_field_is_not_acted_on(value: str) -> None:
    assert resolve(("10.0.0.1", 1), fields(forwarded=value, x_forwarded_proto="https"), BALANCERS) is None


def test_forwarded_wins_over_x_forwarded() -> None:
    origin = resolve(("10.0.0.1", 1), fields(forwarded="for=198.51.100.7", x_forwarded_for="6.6.6.6"), BALANCERS)
    assert origin is not None and origin.client == "198.51.100.7"


def test_collect_joins_repeated_fields_of_any_case() -> None:
    got = collect([(b"X-Forwarded-For", b"1.1.1.1"), (b"host", b"h"), (b"x-forwarded-for", b"2.2.2.2"),
                   (b"FORWARDED", b"for=3.3.3.3")])
    assert got == {"x-forwarded-for": "1.1.1.1, 2.2.2.2", "forwarded": "for=3.3.3.3"}


# -- the WSGI environ

def environ(raw: bytes, peer: Any, trust: Trust | None, scheme: str = "http") -> dict[str, Any]:
    conn = Connection(Limits())
    conn.receive_data(raw)
    request = conn.next_event()
    assert isinstance(request, Request)
    conn_env = connection_environ(site_environ(scheme), peer, None)
    return request_environ(conn_env, request, InputStream(lambda: b""), lambda: ("local", "8000"), trust)


FORWARDED_REQUEST = (b"GET / HTTP/1.1\r\nHost: inner:8000\r\nX-Forwarded-For: 198.51.100.7, 127.0.0.1\r\n"
                     b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: shop.example\r\nX-Forwarded-Port: 8443\r\n\r\n")


def test_a_trusted_proxy_sets_the_environ() -> None:
    env = environ(FORWARDED_REQUEST, ("127.0.0.1", 40000), LOOPBACK)
    assert env["REMOTE_ADDR"] == "198.51.100.7" and "REMOTE_PORT" not in env
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTP_HOST"] == "shop.example" and env["SERVER_NAME"] == "shop.example"
    assert env["SERVER_PORT"] == "8443"
    assert env["HTTP_X_FORWARDED_FOR"] == "198.51.100.7, 127.0.0.1"  # still there for the app


def test_forwarded_host_with_a_port_and_the_scheme_default() -> None:
    env = environ(b"GET / HTTP/1.1\r\nHost: inner\r\nX-Forwarded-Proto: https\r\n\r\n", ("127.0.0.1", 1), LOOPBACK)
    assert env["SERVER_PORT"] == "443" and env["SERVER_NAME"] == "inner"


def test_an_untrusted_peer_gets_its_fields_passed_through_untouched() -> None:
    env = environ(FORWARDED_REQUEST, ("203.0.113.9", 40000), None)
    assert env["REMOTE_ADDR"] == "203.0.113.9" and env["REMOTE_PORT"] == "40000"
    assert env["wsgi.url_scheme"] == "http" and env["HTTP_HOST"] == "inner:8000" and env["SERVER_PORT"] == "8000"
    assert env["HTTP_X_FORWARDED_PROTO"] == "https" and env["HTTP_X_FORWARDED_HOST"] == "shop.example"


def test_underscored_names_cannot_pose_as_forwarding_fields() -> None:
    env = environ(b"GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\nX_Forwarded_Proto: https\r\n"
                  b"Forwarded_: for=6.6.6.6\r\n\r\n", ("127.0.0.1", 1), LOOPBACK)
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"
    assert not any("X_FORWARDED" in key or "FORWARDED" in key for key in env)


def test_a_trust_remembers_its_answer_for_each_address_within_a_bound():
    from sockact.http import forwarded

    trust = Trust.parse("10.0.0.0/8,unix")
    assert trust.trusts("10.1.2.3") and trust.trusts("10.1.2.3") and not trust.trusts("192.0.2.1")
    assert trust._known == {"10.1.2.3": True, "192.0.2.1": False}
    assert trust == Trust.parse("10.0.0.0/8,unix") and hash(trust) == hash(Trust.parse("10.0.0.0/8,unix"))
    for i in range(forwarded._KNOWN_MAX + 10):
        trust.trusts(f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}")
    assert len(trust._known) == forwarded._KNOWN_MAX
    assert trust.trusts("10.255.255.255") and not trust.trusts("not an address")
