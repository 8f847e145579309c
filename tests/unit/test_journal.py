"""sockact.logs.journal without a journal: the fields of each record, the fallbacks, the catalog."""

from __future__ import annotations

import io
import logging
import os
import re
from pathlib import Path

import pytest

from sockact.logs import journal

CATALOG = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "sockact.catalog"

ACCESS_FIELDS = {
    "SOCKACT_CONN_ID": 7, "REMOTE_ADDR": "127.0.0.1", "HTTP_METHOD": "GET", "HTTP_PATH": "/x",
    "HTTP_STATUS": 200, "DURATION_US": 1234, "BYTES_SENT": 56,
}


class Recorder:
    """Stands in for systemd.journal.sendv: keeps each record's fields as a dict."""

    def __init__(self, fail: bool = False) -> None:
        self.records: list[dict[str, str | bytes]] = []
        self.fail = fail

    def __call__(self, *items: str | bytes) -> None:
        if self.fail:
            raise OSError("journal socket gone")
        fields: dict[str, str | bytes] = {}
        for item in items:
            if isinstance(item, bytes):
                key, _, raw = item.partition(b"=")
                fields[key.decode()] = raw
            else:
                key, _, value = item.partition("=")
                fields[key] = value
        self.records.append(fields)


@pytest.fixture
def logger():
    """A private logger, so tests do not disturb the 'sockact' logger."""
    log = logging.getLogger("sockact.test_journal")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    log.handlers.clear()


def attach(logger: logging.Logger, sendv) -> None:
    logger.handlers[:] = [journal.JournalHandler(sendv)]


def test_every_record_has_the_common_fields(logger):
    rec = Recorder()
    attach(logger, rec)
    logger.warning("hello %s", "world")
    (fields,) = rec.records
    assert fields["MESSAGE"] == "hello world"
    assert fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "sockact"
    assert fields["SOCKACT_WORKER_PID"] == str(os.getpid())
    assert fields["SOCKACT_LISTENER"] == ""
    assert fields["CODE_FUNC"] == "test_every_record_has_the_common_fields"


def test_access_fields_pass_through_and_lower_case_keys_are_dropped(logger):
    rec = Recorder()
    attach(logger, rec)
    extra = {**ACCESS_FIELDS, "SOCKACT_LISTENER": "http", "SOCKACT_WORKER_PID": 4242, "lowercase": "x"}
    logger.info("GET /x 200", extra=extra)
    (fields,) = rec.records
    for key, value in ACCESS_FIELDS.items():
        assert fields[key] == str(value)
    assert fields["SOCKACT_LISTENER"] == "http"
    assert fields["SOCKACT_WORKER_PID"] == "4242"
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", key) for key in fields)


def test_extra_cannot_override_the_handlers_own_fields(logger):
    rec = Recorder()
    attach(logger, rec)
    logger.error("real", extra={"MESSAGE": "forged", "PRIORITY": 7, "SYSLOG_IDENTIFIER": "other"})
    (fields,) = rec.records
    assert (fields["MESSAGE"], fields["PRIORITY"], fields["SYSLOG_IDENTIFIER"]) == ("real", "3", "sockact")


def test_bytes_values_are_sent_unchanged(logger):
    rec = Recorder()
    attach(logger, rec)
    logger.info("raw", extra={"HTTP_PATH": b"/caf\xc3"})
    assert rec.records[0]["HTTP_PATH"] == b"/caf\xc3"


@pytest.mark.parametrize(("level", "prio"), [
    (logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3),
    (logging.CRITICAL, 2), (logging.INFO + 5, 6), (logging.ERROR + 1, 3),
])
def test_priority_mapping(level, prio):
    assert journal.priority(level) == prio


def test_exception_text_is_in_the_message_and_its_own_field(logger):
    rec = Recorder()
    attach(logger, rec)
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("app failed")
    (fields,) = rec.records
    assert fields["MESSAGE"].startswith("app failed\nTraceback")
    assert "ValueError: boom" in fields["EXCEPTION_TEXT"]


def test_lifecycle_sets_message_id_and_upper_cases_fields(logger):
    rec = Recorder()
    attach(logger, rec)
    journal.lifecycle(logger, "worker_spawned", "worker %d spawned", 99, sockact_worker_pid=99, generation=2)
    (fields,) = rec.records
    assert fields["MESSAGE_ID"] == journal.MESSAGE_IDS["worker_spawned"]
    assert fields["SOCKACT_WORKER_PID"] == "99"
    assert fields["GENERATION"] == "2"


def test_a_failing_journal_falls_back_to_stderr_and_never_raises(logger, monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    attach(logger, Recorder(fail=True))
    logger.error("still %s", "visible")
    logger.error("bad format %d", "not a number")  # getMessage() itself raises
    assert f"[{os.getpid()}] ERROR sockact.test_journal: still visible" in err.getvalue()


def test_stderr_handler_lines_carry_the_pid(logger, monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    logger.handlers[:] = [journal.StderrHandler()]
    logger.info("plain")
    assert err.getvalue() == f"[{os.getpid()}] INFO sockact.test_journal: plain\n"


def test_journal_stream_must_match_the_fd(tmp_path):
    with open(tmp_path / "f", "w") as fh:
        st = os.fstat(fh.fileno())
        assert journal.stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, fh.fileno())
        assert not journal.stderr_is_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, fh.fileno())
        assert not journal.stderr_is_journal({"JOURNAL_STREAM": "garbage"}, fh.fileno())
        assert not journal.stderr_is_journal({}, fh.fileno())


@pytest.fixture
def restore_sockact_logger():
    log = logging.getLogger(journal.LOGGER_NAME)
    saved = (log.handlers[:], log.level, log.propagate)
    yield log
    log.handlers[:], log.level, log.propagate = saved


def test_setup_logging_picks_the_target(restore_sockact_logger):
    log = restore_sockact_logger
    assert journal.setup_logging("warning", "stderr", {}) == "stderr"
    assert isinstance(log.handlers[0], journal.StderrHandler)
    assert log.level == logging.WARNING and not log.propagate
    assert journal.setup_logging("info", "auto", {}) == "stderr"
    assert journal.setup_logging("info", "journal", {}) == "journal"
    assert isinstance(log.handlers[0], journal.JournalHandler)
    assert len(log.handlers) == 1


def test_setup_logging_auto_follows_journal_stream(restore_sockact_logger, tmp_path):
    saved = os.dup(2)
    try:
        with open(tmp_path / "stderr", "w") as fh:
            os.dup2(fh.fileno(), 2)
            st = os.fstat(2)
            assert journal.setup_logging("info", "auto", {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}) == "journal"
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def test_message_ids_are_distinct_128_bit_ids():
    ids = list(journal.MESSAGE_IDS.values())
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert set(journal.MESSAGE_IDS) == {"ready", "reload", "stop", "worker_spawned", "worker_exited",
                                        "worker_timeout", "watchdog_unhealthy"}


def test_committed_catalog_is_generated_from_events():
    assert CATALOG.read_text() == journal.catalog(), (
        "packaging/systemd/sockact.catalog is stale: run python -m sockact.logs.journal --catalog > it")


def test_catalog_entries_follow_the_format():
    text = journal.catalog()
    headers = re.findall(r"^-- ([0-9a-f]{32})$", text, re.M)
    assert headers == list(journal.MESSAGE_IDS.values())
    for event in journal.EVENTS.values():
        assert f"-- {event.message_id}\nSubject: {event.subject}\nDefined-By: sockact\n\n" in text
        assert "\n-- " not in event.body  # a body line starting "-- " would open a new entry


def test_catalog_command(capsys):
    assert journal.main(["--catalog"]) == 0
    assert capsys.readouterr().out == journal.catalog()
    assert journal.main([]) == 2


def test_wsgi_errors_logs_a_traceback_as_one_error_record(logger):
    rec = Recorder()
    attach(logger, rec)
    stream = journal.ErrorStream(logger, 7, "http", lambda: "GET /x HTTP/1.1")
    # what Flask's default handler, a logging.StreamHandler on wsgi.errors, does for an exception
    app_logger = logging.getLogger("sockact.test_journal.app")
    app_logger.propagate = False
    app_logger.handlers[:] = [logging.StreamHandler(stream)]
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        app_logger.exception("Exception on /x [GET]")
    app_logger.handlers.clear()
    (fields,) = rec.records
    assert fields["PRIORITY"] == "3"
    assert fields["MESSAGE"].startswith("Exception on /x [GET]\nTraceback (most recent call last):")
    assert fields["MESSAGE"].endswith("RuntimeError: boom")
    assert (fields["SOCKACT_CONN_ID"], fields["HTTP_REQUEST"], fields["SOCKACT_LISTENER"]) == (
        "7", "GET /x HTTP/1.1", "http")


def test_wsgi_errors_logs_complete_lines_and_the_rest_on_flush(logger):
    rec = Recorder()
    attach(logger, rec)
    stream = journal.ErrorStream(logger, 1, "http")
    print("one", file=stream)  # two writes: the text, then the newline
    stream.write("two\nthree\npart")
    assert [r["MESSAGE"] for r in rec.records] == ["one", "two\nthree"]
    stream.flush()
    stream.flush()
    assert [r["MESSAGE"] for r in rec.records] == ["one", "two\nthree", "part"]
    with pytest.raises(TypeError):
        stream.write(b"bytes")


def test_error_logfile_writes_timestamped_lines(tmp_path):
    path = tmp_path / "error.log"
    sockact_logger = logging.getLogger(journal.LOGGER_NAME)
    saved = (sockact_logger.handlers[:], sockact_logger.level, sockact_logger.propagate)
    try:
        assert journal.setup_logging("info", "auto", {}, str(path)) == "file"
        logging.getLogger("sockact.test").warning("to the file")
    finally:
        for handler in sockact_logger.handlers:
            handler.close()
        sockact_logger.handlers[:], sockact_logger.level, sockact_logger.propagate = saved
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[\d+\] WARNING sockact.test: to the file\n",
                        path.read_text())
    with pytest.raises(journal.ConfigError, match="error_logfile"):
        journal.setup_logging("info", "auto", {}, str(tmp_path / "no" / "such.log"))
