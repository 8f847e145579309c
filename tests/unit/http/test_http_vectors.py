"""gunicorn's request corpus replayed through the engine: whole, byte by byte, in random pieces.

The corpus ships in gunicorn's sdist (tests/requests/{valid,invalid}/*.http with a .py
expectation each); it is fetched at test time with pip and cached under
$XDG_CACHE_HOME/sockact-tests (~/.cache by default), never committed. Without network and
cache the tests skip, except under CI (CI=true), where a missing corpus fails the run: a green
run must not hide that its largest protocol test never ran.
Valid requests must parse to what the .py expects, invalid ones must get a 4xx, except
the vectors in DIFFERENCES, where sockact deliberately differs (see docs/http.md).
"""

from __future__ import annotations

import builtins
import dataclasses
import os
import re
import subprocess
import sys
import tarfile
import types
from pathlib import Path
from typing import Any

import pytest
from test_http_engine import Replay, replay_all

from sockact.http import proxyprotocol
from sockact.http.limits import Limits

# The corpus DIFFERENCES was checked against: the same for every interpreter, whatever gunicorn is
# installed (its venv pins this one). Corpora change their minds: 23.0.0 still expected TE identity
# with Content-Length and non-ASCII targets to be served; 27 refuses both, as sockact does.
GUNICORN = "27.0.1"

# A missing or malformed PROXY header gets no HTTP answer: the worker closes the connection.
CLOSED = 0
# vector -> (sockact's status, None for "served" or CLOSED; the one-line reason it differs from gunicorn)
DIFFERENCES: dict[str, tuple[int | None, str]] = {
    "valid/025.http": (501, "transfer codings other than chunked are not decoded: 501, not passed through"),
    "valid/025_line.http": (501, "transfer codings other than chunked are not decoded: 501, not passed through"),
    "valid/rfc9112_smuggle_gzip_chunked_01.http": (501, "gzip transfer coding is not decoded: 501"),
    "valid/013.http": (400, "whitespace in chunk extensions (BWS) is refused, as llhttp refuses it"),
    "valid/099.http": (400, "the body is shorter than its Content-Length: an error, not a short body"),
    "valid/028.http": (400, "no strip_header_spaces option: whitespace before the colon is always refused"),
    "valid/031.http": (400, "httptools knows only the registered methods; '-BLARGH' is refused"),
    "valid/031compat.http": (400, "httptools knows only the registered methods; '-blargh' is refused"),
    "valid/031compat2.http": (400, "httptools knows only the registered methods; '-blargh' is refused"),
    "valid/040_compat.http": (None, "no header_map option: fields with '_' are always dropped from environ"),
    "valid/compat_obs_fold.http": (400, "no permit_obsolete_folding option: obs-fold is always refused"),
    "valid/compat_obs_fold_huge.http": (400, "no permit_obsolete_folding option: obs-fold is always refused"),
    "valid/pp_03.http": (CLOSED, "proxy_protocol requires the header: without one the connection is closed"),
    "invalid/006.http": (None, "sockact's default limit on the request line is 8190 bytes, gunicorn's 4094"),
    "invalid/019.http": (None, "no trusted peer here: X-Forwarded-* are plain fields, never the scheme"),
    "invalid/040.http": (None, "no header_map=refuse: fields with '_' are dropped from environ, not refused"),
    "invalid/chunked_07.http": (None, "no header_map=refuse: 'Transfer_Encoding' is dropped, not refused"),
}
# gunicorn settings these vectors use that map onto sockact's limits
_LIMITS = {"limit_request_line": "request_line", "limit_request_fields": "header_fields",
           "limit_request_field_size": "header_field_size"}


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sockact-tests"


def _corpus() -> Path | None:
    """The tests/requests directory of a gunicorn sdist, downloaded once; None if impossible."""
    cache = _cache_dir()
    wanted = cache / f"gunicorn-{GUNICORN}" / "tests" / "requests"
    if wanted.is_dir():
        return wanted
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", f"gunicorn=={GUNICORN}",
           "-d", str(cache)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    for sdist in cache.glob(f"gunicorn-{GUNICORN}.tar.gz"):
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and "/tests/requests/" in m.name
                       and not m.name.startswith("/") and ".." not in m.name.split("/")]
            # Python before 3.11.4 (Debian 12 has 3.11.2) lacks extraction filters.
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(cache, members=members, **safe)
    return wanted if wanted.is_dir() else None


CORPUS = _corpus()
MISSING = f"gunicorn {GUNICORN}'s sdist could not be downloaded (offline?), and it is not in {_cache_dir()}"


def test_corpus_is_present() -> None:
    if CORPUS is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(MISSING)
        pytest.skip(MISSING)


def _load_http(path: Path) -> bytes:
    """The vector's bytes, decoded as gunicorn's treq.py does."""
    data = path.read_bytes().replace(b"\n", b"").replace(b"\\r\\n", b"\r\n")
    data = data.replace(b"\\0", b"\0").replace(b"\\n", b"\n").replace(b"\\t", b"\t")
    return re.sub(rb"\\x([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), data)


class _Config:
    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}

    def set(self, name: str, value: Any) -> None:
        self.settings[name] = value


def _uri(raw: str) -> dict[str, str]:
    path, _, query = raw.partition("?") if raw.startswith("/") else (raw, "", "")
    if "://" in raw:
        from urllib.parse import urlsplit

        parts = urlsplit(raw)
        path, query = parts.path, parts.query
    return {"raw": raw, "path": path.partition("#")[0], "query": query.partition("#")[0]}


def _load_expectation(path: Path) -> tuple[Any, dict[str, Any]]:
    """Run the .py next to a vector with gunicorn's names stubbed; (request(s), settings)."""
    stub = types.ModuleType("gunicorn")
    stub.__getattr__ = lambda name: _Config if name == "Config" else type(name, (Exception,), {})  # type: ignore

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        return stub if name.startswith("gunicorn") else builtins.__import__(name, *args, **kwargs)

    cfg = _Config()
    namespace: dict[str, Any] = {"__builtins__": {**vars(builtins), "__import__": fake_import}, "uri": _uri,
                                 "cfg": cfg}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace["request"], namespace["cfg"].settings


def _vectors(kind: str) -> list[str]:
    if CORPUS is None:
        return []
    return sorted(f"{kind}/{p.name}" for p in (CORPUS / kind).glob("*.http"))


def _limits(settings: dict[str, Any]) -> Limits:
    """sockact's limits for a vector's gunicorn settings; the others sockact lacks (see DIFFERENCES)."""
    values = {_LIMITS[k]: v for k, v in settings.items() if k in _LIMITS and v}  # 0 means the default
    return Limits(**values)


def _after_proxy_header(data: bytes) -> bytes | None:
    """For gunicorn's proxy_protocol vectors: the bytes after the PROXY header, read as the worker
    reads it, one more byte at a time; None when it is refused or never whole."""
    for end in range(1, len(data) + 1):
        try:
            parsed = proxyprotocol.parse(data[:end], "auto")
        except proxyprotocol.ProxyProtocolError:
            return None
        if parsed is not None:
            return data[parsed[1]:]
    return None


def _replay(name: str) -> tuple[Replay, Any] | None:
    """Replay a vector; for a deliberate difference check sockact's outcome and return None."""
    assert CORPUS is not None
    expected, settings = _load_expectation(CORPUS / name.replace(".http", ".py"))
    data = _load_http(CORPUS / name)
    if settings.get("proxy_protocol"):
        rest = _after_proxy_header(data)
        result = Replay(status=CLOSED, end="closed") if rest is None else replay_all(rest, _limits(settings))
    else:
        result = replay_all(data, _limits(settings))
    if name in DIFFERENCES:
        assert result.status == DIFFERENCES[name][0], result
        return None
    return result, expected


@pytest.mark.parametrize("name", _vectors("valid"))
def test_valid_vector(name: str) -> None:
    replayed = _replay(name)
    if replayed is None:
        return
    result, expected = replayed
    assert result.status is None, result
    expected = expected if isinstance(expected, list) else [expected]
    assert len(result.requests) == len(expected)
    for seen, want in zip(result.requests, expected, strict=True):
        assert seen.method.decode() == want["method"]
        assert seen.target.decode("latin-1") == want["uri"]["raw"]
        if seen.path:  # "*" and CONNECT's authority have none
            assert (seen.path.decode(), seen.query.decode()) == (want["uri"]["path"], want["uri"]["query"])
        assert seen.version == "{}.{}".format(*want["version"])
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in seen.headers if b"_" not in n]
        assert headers == want["headers"]
        body = want["body"]
        assert seen.body == (body.encode("latin-1") if isinstance(body, str) else body)


@pytest.mark.parametrize("name", _vectors("valid"))
def test_a_listener_refuses_the_valid_vectors_without_host(name: str) -> None:
    # The corpus is gunicorn's, which serves an HTTP/1.1 request without Host; test_valid_vector replays it
    # with the engine alone, which does too. A listener refuses one (RFC 9112 3.2): a 400, unless the head
    # is refused for its size first; any other vector gets what the engine alone gives it.
    assert CORPUS is not None
    expected, settings = _load_expectation(CORPUS / name.replace(".http", ".py"))
    data: bytes | None = _load_http(CORPUS / name)
    if settings.get("proxy_protocol"):
        data = _after_proxy_header(data)
    if data is None:
        return
    alone = replay_all(data, _limits(settings))
    listener = replay_all(data, dataclasses.replace(_limits(settings), host_required=True))
    requests = expected if isinstance(expected, list) else [expected]
    hostless = any(tuple(r["version"]) == (1, 1) and all(n.upper() != "HOST" for n, _ in r["headers"])
                   for r in requests)
    assert listener.status == (400 if hostless and alone.status not in (414, 431) else alone.status), (alone, listener)


@pytest.mark.parametrize("name", _vectors("invalid"))
def test_invalid_vector(name: str) -> None:
    replayed = _replay(name)
    if replayed is not None:
        status = replayed[0].status
        assert status is not None and (400 <= status < 500 or status == CLOSED), replayed[0]


@pytest.mark.skipif(CORPUS is None, reason=MISSING)
def test_every_difference_names_a_vector() -> None:
    assert CORPUS is not None
    for name in DIFFERENCES:
        assert (CORPUS / name).is_file(), name
