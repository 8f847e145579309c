"""sockact.logs.access without a server: every atom, the escaping, JSON lines, batching, rotation."""

from __future__ import annotations

import base64
import errno
import json
import os
import re
from datetime import datetime
from pathlib import Path

import pytest

from sockact import config
from sockact.errors import ConfigError
from sockact.http.events import Request
from sockact.http.logline import connection_entry, entry_for, fill_entry
from sockact.logs import access as accesslog
from sockact.logs import logfile
from sockact.logs.access import GUNICORN_FORMAT, AccessLog, Entry, compile_format, escape

WHEN = 1_700_000_000.25
HOSTILE = "/a\r\nFORGED CRITICAL\x1b[31m\x00\"\\\x7f\xe9"


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The access log's monotonic clock: 100 s, until a test moves it on."""
    clock = [100.0]
    monkeypatch.setattr(accesslog.time, "monotonic", lambda: clock[0])
    return clock


def entry(**overrides: object) -> Entry:
    values: dict = {
        "remote": "192.0.2.7", "method": "GET", "target": "/p%20q?x=1", "path": "/p q", "query": "x=1",
        "protocol": "HTTP/1.1", "status": 200, "sent": 14, "duration_us": 2_345_678, "pid": 4242,
        "conn_id": 9, "listener": "http", "when": WHEN,
        "headers": [(b"HOST", b"example.test"), (b"USER-AGENT", b"curl/8"), (b"REFERER", b"http://r/"),
                    (b"X-REQUEST-ID", b"abc")],
        "response_headers": [("Content-Type", "text/plain")],
    }
    values.update(overrides)
    return Entry(**values)


def test_the_default_format_is_gunicorns():
    assert config.BY_NAME["access_logformat"].default == GUNICORN_FORMAT
    line = compile_format(GUNICORN_FORMAT)(entry())
    stamp = accesslog.clf_time(WHEN)
    assert line == f'192.0.2.7 - - {stamp} "GET /p%20q?x=1 HTTP/1.1" 200 14 "http://r/" "curl/8"'
    assert re.fullmatch(r"\[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", stamp)


@pytest.mark.parametrize(("atom", "expected"), [
    ("h", "192.0.2.7"), ("l", "-"), ("u", "-"), ("r", "GET /p%20q?x=1 HTTP/1.1"), ("m", "GET"), ("U", "/p q"),
    ("q", "x=1"), ("H", "HTTP/1.1"), ("s", "200"), ("B", "14"), ("b", "14"), ("f", "http://r/"),
    ("a", "curl/8"), ("T", "2"), ("M", "2345"), ("D", "2345678"), ("L", "2.345678"), ("p", "<4242>"),
    ("conn", "9"), ("listener", "http"), ("{x-request-id}i", "abc"), ("{content-type}o", "text/plain"),
    ("{missing}i", "-"),
])
def test_every_atom(atom: str, expected: str):
    assert compile_format(f"%({atom})s")(entry()) == expected


def test_empty_values_and_a_bad_request_line():
    bad = entry(method="", target="", path="", query="", protocol="", status=400, sent=0, headers=[])
    assert compile_format('%(r)s %(b)s %(B)s "%(f)s" "%(a)s" %(m)s %(H)s')(bad) == '- - 0 "-" "-" - -'


def test_basic_auth_user():
    token = base64.b64encode(b"alice:secret").decode()
    assert compile_format("%(u)s")(entry(headers=[(b"AUTHORIZATION", f"Basic {token}".encode())])) == "alice"
    assert compile_format("%(u)s")(entry(headers=[(b"AUTHORIZATION", b"Basic !!")])) == "-"


def test_a_connections_memo_gives_the_lines_fresh_entries_give():
    # While a connection's request repeats, the request's atoms are made once (Memo); the response's
    # and the time are made for every line. Two connections' memos interleave without mixing.
    line = compile_format(GUNICORN_FORMAT + " %(D)s %({content-type}o)s %({x-request-id}i)s %(conn)s")
    ours, theirs = accesslog.Memo(), accesslog.Memo()
    request, other = Request(b"GET", b"/p%20q?x=1", "1.1", [], None, False, True, False, False), object()
    ours.renew(request, ("GET", "/p%20q?x=1", "/p q", "x=1", "HTTP/1.1"))
    for status, sent, when, ctype in ((200, 14, WHEN, "text/plain"), (404, 0, WHEN + 5, "text/html"),
                                      (500, 3, WHEN + 9, "")):
        fields = {"status": status, "sent": sent, "when": when, "response_headers": [("Content-Type", ctype)]}
        assert line(entry(memo=ours, **fields)) == line(entry(**fields))
        theirs.renew(other, ("", "", "", "", ""))
        assert line(entry(remote="192.0.2.8", memo=theirs)).startswith("192.0.2.8 ")
    # fill_entry fills a connection's memo, and uses it while the request is the same object
    e = connection_entry("192.0.2.7", 1, 9, "http")
    memo = e.memo
    assert memo is not None
    first = line(fill_entry(e, request, 200, 14, 0.0, ()))
    assert memo.key is request and memo.text == ("GET", "/p%20q?x=1", "/p q", "x=1", "HTTP/1.1")
    again = fill_entry(e, request, 304, 0, 0.0, ())
    assert (again.method, again.target, again.path, again.query, again.protocol) == memo.text
    assert line(again).split(" ")[:2] == first.split(" ")[:2] and again.status == 304


def test_a_memo_over_requests_that_share_their_fields_gives_the_lines_fresh_entries_give():
    # Heads that differ by their request line alone share their fields (the same list, from the engine):
    # the atoms of the fields and the client are made once for them, those of each line anew.
    token = base64.b64encode(b"alice:secret").decode()
    fields = [(b"AUTHORIZATION", f"Basic {token}".encode()), (b"USER-AGENT", b"curl/8"), (b"X-REQUEST-ID", b"abc")]
    other_fields = [(b"USER-AGENT", b"wget"), (b"REFERER", b"http://r/")]
    line = compile_format(GUNICORN_FORMAT + " %(m)s %(U)s %(q)s %(H)s %({x-request-id}i)s %(p)s %(conn)s")
    memo = accesslog.Memo()
    for n, (headers, method, target) in enumerate([(fields, "GET", "/?n=1"), (fields, "POST", "/a?n=2"),
                                                   (fields, "GET", "/?n=1"), (other_fields, "HEAD", "/b"),
                                                   (other_fields, "GET", "/c?d"), (fields, "GET", "/e")]):
        request = Request(method.encode(), target.encode(), "1.1", headers, None, False, True, False, False)
        path, _, query = target.partition("?")
        memo.renew(request, (method, target, path, query, "HTTP/1.1"))
        text = {"method": method, "target": target, "path": path, "query": query, "headers": headers, "status": 200 + n}
        assert line(entry(memo=memo, **text)) == line(entry(**text))
        assert line(entry(memo=memo, **text)) == line(entry(**text)) and memo.fields is headers  # the memo filled
        assert line(entry(memo=memo, remote="192.0.2.99", **text)).startswith("192.0.2.99 ")  # another client


@pytest.mark.parametrize("spec", [GUNICORN_FORMAT, GUNICORN_FORMAT + " %(conn)s %(listener)s %(p)s %(D)s"])
def test_a_new_connection_takes_the_last_lines_atoms_only_for_the_same_request_fields_and_connection_values(spec):
    # A Connection: close client sends the head the last one did, and the engine gives its new connection
    # the very request parsed then: the next connection's memo starts empty, yet its line takes the atoms
    # the last line made of that request and those fields, unless its client, or a value of its own that
    # the format names (its id, its listener), differs. Every line is the one a fresh entry gives.
    line = compile_format(spec)
    headers = [(b"USER-AGENT", b"curl/8"), (b"REFERER", b"http://r/")]
    request = Request(b"GET", b"/p%20q?x=1", "1.1", headers, None, False, True, False, False)
    text = ("GET", "/p%20q?x=1", "/p q", "x=1", "HTTP/1.1")
    other = Request(b"GET", b"/o", "1.1", headers, None, False, True, False, False)
    other_text = ("GET", "/o", "/o", "", "HTTP/1.1")
    for conn_id, remote, listener, (key, (method, target, path, query, _)) in [
            (1, "192.0.2.7", "http", (request, text)), (2, "192.0.2.7", "http", (request, text)),
            (3, "192.0.2.8", "http", (request, text)), (4, "192.0.2.8", "admin", (request, text)),
            (5, "192.0.2.8", "admin", (other, other_text)), (6, "192.0.2.8", "admin", (request, text))]:
        memo = accesslog.Memo()  # a new connection's
        memo.renew(key, (method, target, path, query, "HTTP/1.1"))
        values = {"conn_id": conn_id, "remote": remote, "listener": listener, "method": method, "target": target,
                  "path": path, "query": query, "headers": headers}
        assert line(entry(memo=memo, **values)) == compile_format(spec)(entry(**values))  # a builder of its own


def test_a_memo_gives_its_last_line_again_only_while_nothing_in_it_changed():
    # With the time, status and size as its only response atoms, a line repeats for the same request in
    # the same second: the memo keeps it, and any change (the second, the status, the size, the client,
    # the fields, the request) makes a new one.
    line = compile_format(GUNICORN_FORMAT + " %(B)s %(m)s %(conn)s")
    memo = accesslog.Memo()
    request = Request(b"GET", b"/p%20q?x=1", "1.1", [], None, False, True, False, False)
    memo.renew(request, ("GET", "/p%20q?x=1", "/p q", "x=1", "HTTP/1.1"))
    other_fields = [(b"USER-AGENT", b"wget")]
    for change in ({}, {}, {"when": WHEN + 0.5}, {"when": WHEN + 1}, {"status": 304}, {"sent": 0}, {"sent": 15},
                   {"remote": "192.0.2.8"}, {"headers": other_fields}, {}, {"method": "HEAD"}, {"method": "HEAD"}):
        if "method" in change and memo.text[0] != "HEAD":
            request = Request(b"HEAD", b"/p%20q?x=1", "1.1", [], None, False, True, False, False)
            memo.renew(request, ("HEAD", "/p%20q?x=1", "/p q", "x=1", "HTTP/1.1"))
        fresh = entry(**change)
        assert line(entry(memo=memo, **change)) == line(fresh)
        assert memo.line == line(fresh)


@pytest.mark.parametrize("spec", [GUNICORN_FORMAT + " %(B)s %(m)s %(conn)s", '"%(r)s" %(s)s %(b)s %(t)s',
                                  GUNICORN_FORMAT + " %(D)s"])
def test_a_connections_logged_lines_are_those_fresh_entries_give(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   spec: str):
    # AccessLog.log_response gives a connection's last line again while nothing it was made of changed; its
    # entry changes as a connection's does between requests, and every line written is the one a fresh entry
    # gives.
    end = WHEN + 0.7  # late in its second: the next one begins within the batch's flush interval
    now = [end]
    monkeypatch.setattr(accesslog.time, "time", lambda: now[0])
    path = tmp_path / "access.log"
    log = AccessLog(spec, str(path), None)
    fresh = compile_format(spec)
    conn = connection_entry("192.0.2.7", 4242, 9, "http")
    headers = [(b"USER-AGENT", b"curl/8"), (b"REFERER", b"http://r/")]
    request = Request(b"GET", b"/p%20q?x=1", "1.1", headers, None, False, True, False, False)
    expected = []
    changes = ({"when": end + 0.02}, {"when": end + 0.08}, {"status": 304}, {"sent": 0}, {"sent": 15},
               {"remote": "192.0.2.8"}, {"headers": [(b"USER-AGENT", b"wget")]}, {"request": b"HEAD"},
               {"request": b"GET"})
    for change in ({}, *(step for one in changes for step in (dict(one), {}))):  # each line one change from the last
        if "request" in change:
            request = Request(change.pop("request"), b"/p%20q?x=1", "1.1", headers, None, False, True, False, False)
        values = {"remote": "192.0.2.7", "status": 200, "sent": 14, "when": end, "headers": request.headers,
                  **change}
        entry_for(conn, request)
        conn.remote, conn.headers, now[0] = values["remote"], values["headers"], values["when"]
        log.log_response(conn, values["status"], values["sent"], 0.0, ())
        expected.append(fresh(entry(**{**values, "method": request.method.decode(), "duration_us": 0,
                                       "response_headers": ()})))
    log.flush()
    assert path.read_text().splitlines() == expected
    # The same line again, once the batch is due, writes the batch.
    log.log_response(conn, 200, 14, 0.0, ())
    now[0] += 0.05
    log.log_response(conn, 200, 14, 0.0, ())
    assert path.read_text().count("\n") == len(expected)
    now[0] += accesslog.FLUSH_INTERVAL - 0.05
    log.log_response(conn, 200, 14, 0.0, ())
    assert path.read_text().count("\n") == len(expected) + 3


def test_literal_percent_and_format_errors():
    assert compile_format("100%% %(s)s")(entry()) == "100% 200"
    # Literal text goes into the builder's f-string: braces, quotes and backslashes stay as written.
    assert compile_format("{x} }}{ \\ \" ' \t%(s)s %(s)s")(entry()) == "{x} }}{ \\ \" ' \t200 200"
    with pytest.raises(ValueError, match="unknown atom"):
        compile_format("%(zz)s")
    with pytest.raises(ValueError, match="stray"):
        compile_format("%(s)d")
    with pytest.raises(ConfigError, match=r"access-logformat.*unknown atom %\(nope\)s"):
        config.build({"access_logformat": "%(nope)s"}, {}, None)


def test_escape_makes_control_bytes_visible():
    assert escape("/plain/path?x=1") == "/plain/path?x=1"
    assert escape(HOSTILE) == '/a\\x0d\\x0aFORGED CRITICAL\\x1b[31m\\x00\\x22\\x5c\\x7f\\xe9'


def test_no_client_text_reaches_a_line_unescaped():
    hostile = entry(remote=HOSTILE, method=HOSTILE, target=HOSTILE, path=HOSTILE, query=HOSTILE,
                    headers=[(b"USER-AGENT", HOSTILE.encode("latin-1")), (b"REFERER", HOSTILE.encode("latin-1")),
                             (b"AUTHORIZATION", b"Basic " + base64.b64encode(HOSTILE.encode("latin-1") + b":x"))])
    spec = " ".join(f"%({a})s" for a in accesslog.ATOMS) + " %({user-agent}i)s"
    line = compile_format(spec)(hostile)
    assert not re.search(r'[\x00-\x1f\x7f-\xff"]', line), line
    fields = accesslog.journal_fields(hostile, line)
    for item in fields:
        assert not re.search(r"[\x00-\x1f\x7f-\xff]", item), item


def test_json_lines_are_lossless_and_one_per_line():
    headers = [(b"HOST", b"example.test"), (b"USER-AGENT", b"x\ny")]
    line = compile_format("json")(entry(target=HOSTILE, headers=headers))
    assert "\n" not in line and "\r" not in line
    record = json.loads(line)
    assert record["path"] == "/p q" and record["user_agent"] == "x\ny"
    assert record["status"] == 200 and record["bytes"] == 14 and record["duration_us"] == 2_345_678
    assert record["remote_addr"] == "192.0.2.7" and record["host"] == "example.test"
    assert record["pid"] == 4242 and record["conn_id"] == 9 and record["listener"] == "http"
    assert record["time"].startswith("2023-11-1")
    for when in (WHEN, WHEN + 0.75, WHEN + 86_400.001):  # the second's text is kept; the milliseconds are not
        stamp = json.loads(compile_format("json")(entry(when=when)))["time"]
        assert stamp == datetime.fromtimestamp(when).astimezone().isoformat(timespec="milliseconds")


def test_lines_are_buffered_until_flushed(tmp_path: Path, now: list[float]):
    path = tmp_path / "access.log"
    log = AccessLog("%(s)s %(U)s", str(path), None)
    log.log(entry(path="/1"))
    log.log(entry(path="/2"))
    assert path.read_text() == ""
    assert not log.due(now[0])
    log.flush()  # the worker goes idle
    assert path.read_text() == "200 /1\n200 /2\n"
    log.flush()
    assert path.read_text() == "200 /1\n200 /2\n"


def test_a_line_waits_at_most_the_flush_interval(tmp_path: Path, now: list[float]):
    path = tmp_path / "access.log"
    log = AccessLog("%(U)s", str(path), None)
    log.log(entry(path="/1"))
    now[0] += accesslog.FLUSH_INTERVAL
    assert log.due(now[0])
    log.flush_if_due(now[0])
    assert path.read_text() == "/1\n"
    log.log(entry(path="/2"))
    now[0] += accesslog.FLUSH_INTERVAL
    # A busy worker writes what is due as it logs (a line's check reads the entry's time, Entry.when).
    log.log(entry(path="/3", when=WHEN + accesslog.FLUSH_INTERVAL))
    assert path.read_text() == "/1\n/2\n/3\n"


def test_a_full_buffer_is_written_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "access.log"
    log = AccessLog("%(s)s", str(path), None)
    for _ in range(accesslog.MAX_BUFFERED):
        log.log(entry())
    assert path.read_text().count("\n") == accesslog.MAX_BUFFERED
    # A connection's line again and again, in one second, as well.
    monkeypatch.setattr(accesslog.time, "time", lambda: WHEN)
    conn = entry_for(connection_entry("192.0.2.7", 4242, 9, "http"), None)
    for _ in range(accesslog.MAX_BUFFERED):
        log.log_response(conn, 200, 14, 0.0, ())
    assert path.read_text().count("\n") == 2 * accesslog.MAX_BUFFERED


def test_a_rotated_file_is_reopened(tmp_path: Path, now: list[float]):
    path = tmp_path / "access.log"
    log = AccessLog("%(U)s", str(path), None)
    log.log(entry(path="/before"))
    log.flush()
    os.rename(path, tmp_path / "access.log.1")  # what logrotate does
    now[0] += accesslog.REOPEN_CHECK
    log.log(entry(path="/after"))
    log.flush()
    assert (tmp_path / "access.log.1").read_text() == "/before\n"
    assert path.read_text() == "/after\n"
    log.close()


def test_journal_target_sends_one_record_per_line():
    records: list[tuple[str, ...]] = []
    log = AccessLog(GUNICORN_FORMAT, None, lambda *fields: records.append(fields))
    log.log(entry())
    log.log(entry(status=404))
    assert records == []
    log.flush()
    assert len(records) == 2
    first = dict(item.split("=", 1) for item in records[0])
    assert first["MESSAGE"] == '192.0.2.7 "GET /p%20q?x=1 HTTP/1.1" 200 14B 2345678us pid=4242'
    assert (first["PRIORITY"], first["HTTP_HOST"], first["HTTP_USER_AGENT"], first["HTTP_REFERER"]) == (
        "6", "example.test", "curl/8", "http://r/")
    assert (first["REMOTE_ADDR"], first["HTTP_PROTOCOL"], first["SOCKACT_CONN_ID"]) == ("192.0.2.7", "HTTP/1.1", "9")


def test_a_journal_record_is_made_for_every_line_that_repeats():
    records: list[tuple[str, ...]] = []
    log = AccessLog('"%(r)s" %(s)s', None, lambda *fields: records.append(fields))
    conn = entry_for(connection_entry("192.0.2.7", 4242, 9, "http"), None)
    for _ in range(3):
        log.log_response(conn, 400, 11, 0.0, ())
    log.flush()
    assert [dict(item.split("=", 1) for item in r)["MESSAGE"] for r in records] == ['"-" 400'] * 3


def test_a_failing_target_loses_lines_but_never_raises():
    def broken(*fields: str) -> None:
        raise OSError("journal socket gone")

    log = AccessLog(GUNICORN_FORMAT, None, broken)
    log.log(entry())
    log.flush()


def test_stderr_target_writes_timestamped_lines(capfd: pytest.CaptureFixture[str]):
    log = AccessLog(GUNICORN_FORMAT, "-", None)
    log.log(entry())
    log.flush()
    assert re.fullmatch(r'192\.0\.2\.7 - - \[[^]]+\] "GET /p%20q\?x=1 HTTP/1\.1" 200 14 .*\n', capfd.readouterr().err)


def test_check_file(tmp_path: Path):
    accesslog.check_file(str(tmp_path / "new.log"))
    assert not (tmp_path / "new.log").exists()  # checking creates nothing
    accesslog.check_file(str(tmp_path / "nodir" / "a.log"))  # LogsDirectory= comes at the service's start
    with pytest.raises(ConfigError, match=r"access_logfile .*No such file"):
        AccessLog(GUNICORN_FORMAT, str(tmp_path / "nodir" / "a.log"))
    with pytest.raises(ConfigError, match="is a directory"):
        accesslog.check_file(str(tmp_path))


def test_a_websocket_session_is_one_line_written_at_once(tmp_path: Path):
    records: list[tuple[str, ...]] = []
    journal = AccessLog(GUNICORN_FORMAT, None, lambda *fields: records.append(fields))
    journal.log(entry())  # a request's line, buffered: it goes out first
    journal.log_websocket(entry(status=101), 1000, 5)
    assert [dict(item.split("=", 1) for item in r)["MESSAGE"] for r in records] == [
        '192.0.2.7 "GET /p%20q?x=1 HTTP/1.1" 200 14B 2345678us pid=4242',
        '192.0.2.7 "GET /p%20q?x=1 HTTP/1.1" 101 14B 2345678us pid=4242 websocket close=1000 in=5 out=14 '
        'duration=2.346s']
    path = tmp_path / "access.log"
    for spec in ("json", GUNICORN_FORMAT):
        log = AccessLog(spec, str(path))
        log.log_websocket(entry(status=403), 0, 0)
        log.close()
    first, second = path.read_text().splitlines()
    assert json.loads(first)["status"] == 403
    assert json.loads(first)["websocket"] == {"close_code": None, "bytes_in": 0, "bytes_out": 14}
    assert second.endswith('" 403 14 "http://r/" "curl/8" websocket close=- in=0 out=14 duration=2.346s')


def test_literal_text_of_any_kind_passes_verbatim():
    # The line builder is generated source (accesslog.compile_format): literal text must reach it as data.
    spec = "a'b\"c\\d{x}%%\t''' %(s)s\"\"\" %(l)s%(l)s end"
    assert compile_format(spec)(entry()) == "a'b\"c\\d{x}%\t''' 200\"\"\" -- end"
    assert compile_format("no atoms")(entry()) == "no atoms"
    assert compile_format("%(s)s%(b)s")(entry()) == "20014"


def test_a_connections_entry_serves_each_request_and_buffered_lines_keep_their_own():
    # A connection fills one entry for each of its requests (fill_entry); what is buffered, lines and
    # journal records alike, is made when it is logged, so the next request's fill changes none of it.
    records: list[tuple[str, ...]] = []
    journal = AccessLog('%(r)s %(s)s %(b)s "%(a)s"', None, lambda *fields: records.append(fields))
    first = Request(b"GET", b"/a?x=1", "1.1", [(b"USER-AGENT", b"curl/8")], None, False, True, False, False)
    second = Request(b"POST", b"/b", "1.1", [], None, False, True, False, False)
    e = connection_entry("192.0.2.7", 4242, 9, "http")
    for request, status, sent in ((first, 200, 14), (first, 304, 0), (second, 201, 3), (None, 400, 0)):
        fill_entry(e, request, status, sent, 0.0, ())
        journal.log(e)
        fresh = fill_entry(connection_entry("192.0.2.7", 4242, 9, "http"), request, status, sent, 0.0, ())
        assert (e.method, e.target, e.path, e.query, e.protocol, list(e.headers)) == (
            fresh.method, fresh.target, fresh.path, fresh.query, fresh.protocol, list(fresh.headers))
    journal.flush()
    fields = [dict(item.split("=", 1) for item in r) for r in records]
    assert [f["MESSAGE"] for f in fields] == [
        'GET /a?x=1 HTTP/1.1 200 14 "curl/8"', 'GET /a?x=1 HTTP/1.1 304 - "curl/8"', 'POST /b HTTP/1.1 201 3 "-"',
        '- 400 - "-"']
    assert [f["HTTP_STATUS"] for f in fields] == ["200", "304", "201", "400"]


def test_lines_logged_while_a_flush_writes_are_kept_for_the_next(tmp_path: Path):
    path = tmp_path / "access.log"
    log = AccessLog("%(U)s", str(path))
    write = os.write

    def slow_write(fd: int, data: bytes) -> int:
        log.log(entry(path="/during"))  # another thread's line, appended while this batch goes out
        return write(fd, data)

    log.log(entry(path="/before"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(accesslog.os, "write", slow_write)
        log.flush()
    log.flush()
    assert path.read_text() == "/before\n/during\n"


@pytest.mark.parametrize("spec", [GUNICORN_FORMAT, GUNICORN_FORMAT + " %(conn)s", GUNICORN_FORMAT + " %(listener)s"])
def test_a_new_connections_line_is_the_last_one_kept_only_when_nothing_in_it_differs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str):
    # A Connection: close client's connection logs one line; with the request, fields, client, second,
    # status and size of the line another connection kept last, AccessLog gives that line again. Every
    # line written is the one a fresh entry gives, whatever changes from one connection to the next.
    now = [WHEN]
    monkeypatch.setattr(accesslog.time, "time", lambda: now[0])
    path = tmp_path / "access.log"
    log = AccessLog(spec, str(path), None)
    fresh = compile_format(spec)
    headers = [(b"USER-AGENT", b"curl/8"), (b"REFERER", b"http://r/")]
    request = Request(b"GET", b"/p%20q?x=1", "1.1", headers, None, False, True, False, False)
    other = Request(b"GET", b"/o", "1.1", headers, None, False, True, False, False)
    other_fields = Request(b"GET", b"/p%20q?x=1", "1.1", [(b"USER-AGENT", b"wget")], None, False, True, False,
                           False)
    expected = []
    changes = ({"when": WHEN + 0.01}, {"when": WHEN + 0.9}, {"status": 304}, {"sent": 0}, {"remote": "192.0.2.8"},
               {"conn_id": 12}, {"listener": "admin"}, {"request": other}, {"request": other_fields})
    for conn_id, change in enumerate(({}, *(step for one in changes for step in (dict(one), {}))), start=1):
        values = {"remote": "192.0.2.7", "status": 200, "sent": 14, "when": WHEN + 0.02, "conn_id": conn_id,
                  "listener": "http", "request": request, **change}
        if "conn_id" in change:
            values["conn_id"] = change["conn_id"] + conn_id
        req = values.pop("request")
        now[0] = values.pop("when")
        conn = connection_entry(str(values["remote"]), 4242, int(values["conn_id"]), str(values["listener"]))
        entry_for(conn, req)
        log.log_response(conn, int(values["status"]), int(values["sent"]), 0.0, ())
        expected.append(fresh(entry(**values, when=now[0], method="GET", target=req.target.decode(),
                                    path="/o" if req is other else "/p q", query="" if req is other else "x=1",
                                    headers=req.headers, duration_us=0, response_headers=())))
    log.flush()
    assert path.read_text().splitlines() == expected


def test_an_access_log_takes_the_line_builder_the_supervisor_made_for_its_target(tmp_path: Path):
    # worker/shell.py's prepare makes AccessLog.line_builder before the fork, for the journal, stderr and a
    # file alike; the worker's AccessLog must take that very builder, not compile its own.
    def sendv(*fields: object) -> None:
        pass

    path = str(tmp_path / "access.log")
    for target, journal in ((None, sendv), ("-", sendv), (path, sendv), (None, None)):
        log = AccessLog(GUNICORN_FORMAT, target, journal)
        assert log.format is AccessLog.line_builder(GUNICORN_FORMAT, target, journal)
    assert AccessLog(GUNICORN_FORMAT, None, sendv).format is not AccessLog(GUNICORN_FORMAT, "-", sendv).format


def test_a_log_that_cannot_be_written_is_told_once_as_it_fails_and_once_as_it_works_again(
        tmp_path: Path, now: list[float], caplog: pytest.LogCaptureFixture):
    log = AccessLog("%(U)s", "/dev/full", None)  # a full disk: every write fails with ENOSPC
    for _ in range(3):
        log.log(entry())
        log.flush()
    told = [r.getMessage() for r in caplog.records]
    assert told == ["access log /dev/full: cannot write (No space left on device); its lines are lost until it can"]
    os.dup2(os.open(tmp_path / "space", os.O_WRONLY | os.O_CREAT), log.fd)  # room again
    log.log(entry())
    log.flush()
    assert [r.getMessage() for r in caplog.records][1:] == ["access log /dev/full: written again; 3 lines were lost"]
    assert (tmp_path / "space").read_text() == "/p q\n"
    # A failure that flaps is told at most once a REPORT_INTERVAL.
    os.dup2(os.open("/dev/full", os.O_WRONLY), log.fd)
    log.log(entry())
    log.flush()
    assert len(caplog.records) == 2
    log.close()


@pytest.mark.parametrize(("count", "words"), [
    (0, "no line was lost"), (1, "1 line was lost"), (2, "2 lines were lost"), (256, "256 lines were lost"),
])
def test_the_lines_an_outage_lost_are_counted_in_words(count, words):
    assert logfile.lines_lost(count) == words


def test_an_outage_that_lost_one_line_says_so_in_the_singular(
        tmp_path: Path, now: list[float], caplog: pytest.LogCaptureFixture):
    log = AccessLog("%(U)s", "/dev/full", None)
    log.log(entry())
    log.flush()
    os.dup2(os.open(tmp_path / "space", os.O_WRONLY | os.O_CREAT), log.fd)
    log.log(entry())
    log.flush()
    assert [r.getMessage() for r in caplog.records][1:] == ["access log /dev/full: written again; 1 line was lost"]
    log.close()


def test_the_whole_lines_a_full_target_took_before_it_failed_are_not_counted_lost(
        now: list[float], caplog: pytest.LogCaptureFixture):
    """A full disk (here a full pipe) takes part of a batch: the lines it took whole were written."""
    r, w = os.pipe()
    os.set_blocking(w, False)  # full, its write fails (EAGAIN) as one to a full disk does (ENOSPC)
    log = AccessLog("%(U)s", None, None)
    log.fd = w  # stderr's stand-in
    try:
        for n in range(accesslog.MAX_BUFFERED):  # 256 lines of 1 KiB: more than the pipe holds
            log.log(entry(path=f"/{n:03}" + "x" * 1020))
        log.flush()
        taken = b""
        while chunk := _read_some(r):
            taken += chunk
        whole = taken.count(b"\n")
        assert 0 < whole < accesslog.MAX_BUFFERED, whole
        log.log(entry(path="/after"))
        log.flush()
        assert [r.getMessage() for r in caplog.records] == [
            "access log stderr: cannot write (Resource temporarily unavailable); its lines are lost until it can",
            f"access log stderr: written again; {logfile.lines_lost(accesslog.MAX_BUFFERED - whole)}"]
        # The pipe took the start of a line (a full disk takes the same): the next line begins on a line of its own,
        # where it was joined to that start.
        assert not taken.endswith(b"\n") and _read_some(r) == b"\n/after\n"
    finally:
        os.close(r)
        os.close(w)


def _read_some(fd: int) -> bytes:
    """What the pipe holds now, without waiting."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""


def test_the_records_the_journal_took_before_it_failed_are_not_counted_lost(
        now: list[float], caplog: pytest.LogCaptureFixture):
    sent: list[object] = []

    def sendv(*fields: object) -> None:
        if len(sent) == 2:
            raise OSError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
        sent.append(fields)

    log = AccessLog("%(U)s", None, sendv)
    for n in range(5):
        log.log(entry(path=f"/{n}"))
    log.flush()
    assert len(sent) == 2
    del sent[:]
    log.log(entry(path="/after"))
    log.flush()
    assert [r.getMessage() for r in caplog.records][1:] == ["access log the journal: written again; 3 lines were lost"]


def test_a_rotated_file_that_cannot_be_opened_again_keeps_its_lines_and_is_told_once(
        tmp_path: Path, now: list[float], caplog: pytest.LogCaptureFixture):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = AccessLog("%(U)s", str(logs / "access.log"), None)
    logs.rename(tmp_path / "gone")  # its directory moved away: the path names no file, and none can be made
    for second in range(3):
        now[0] += accesslog.REOPEN_CHECK
        log.log(entry(path=f"/{second}"))
        log.flush()
    assert (tmp_path / "gone" / "access.log").read_text() == "/0\n/1\n/2\n"
    assert [r.getMessage() for r in caplog.records] == [
        f"access log {logs}/access.log: moved away and cannot be opened again (No such file or directory); "
        "lines go on to the file it was"]
    logs.mkdir()
    now[0] += accesslog.REOPEN_CHECK
    log.log(entry(path="/back"))
    log.flush()
    assert (logs / "access.log").read_text() == "/back\n"
    assert [r.getMessage() for r in caplog.records][1:] == [f"access log {logs}/access.log: opened again"]
    log.close()
