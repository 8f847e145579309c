"""The supervisor's metrics: restart reasons, histograms, and the exposition read back by prometheus_client."""

import re
from pathlib import Path

import pytest

from sockact.ipc.tally import CLASSES, DURATION_BUCKETS, METHODS, WS_DURATION_BUCKETS, WS_ENDS, Tally, ws_end
from sockact.policy.states import WorkerState
from sockact.supervisor.metrics import HANDOFF_BUCKETS, Histogram, Snapshot, count_states, restart_reason

parser = pytest.importorskip("prometheus_client.parser")
from sockact.supervisor import exposition, metricserver  # noqa: E402 - after the skip


@pytest.mark.parametrize(("state", "recycled", "old", "stopping", "reason"), [
    (WorkerState.READY, None, False, False, "exit"),  # died on its own
    (WorkerState.STALLED, None, False, False, "exit"),
    (WorkerState.ABORTED, None, False, False, "timeout"),
    (WorkerState.OVERDUE, None, False, False, "timeout"),
    (WorkerState.RETIRING, "max-requests", False, False, "max-requests"),
    (WorkerState.RETIRING, "memory", False, False, "memory"),
    (WorkerState.READY, "memory", False, False, "memory"),  # died before its successor was ready
    (WorkerState.RETIRING, None, True, False, "reload"),
    (WorkerState.RETIRING, None, False, False, None),  # one worker fewer (TTOU): not replaced
    (WorkerState.READY, None, False, True, None),  # stopping
])
def test_restart_reason(state, recycled, old, stopping, reason):
    assert restart_reason(state, recycled, old, stopping) == reason


def test_histogram_buckets_are_upper_bounds():
    h = Histogram((0.1, 1.0))
    for v in (0.1, 0.5, 2.0):
        h.observe(v)
    assert h.counts == [1, 1, 1]
    assert h.sum == pytest.approx(2.6)


def snapshot() -> Snapshot:
    tally = Tally(slots=1, listeners=2)
    writer = tally.writer(0, 0)
    writer.record(0, b"GET", 200, 0.002)
    writer.record(0, b"GET", 404, 0.2)
    for _ in range(3):
        writer.ws_opened(0)
    writer.ws_ended(0, ws_end(True, 1000, False, False, False), 2.5)
    writer.ws_ended(0, ws_end(False, 1006, True, False, False), None)
    writer.flush()
    handoff = Histogram(HANDOFF_BUCKETS)
    handoff.observe(0.0001)
    cells = tally.read(0, 1)
    layout = tally.layout
    tally.close()
    return Snapshot(
        listeners={0: "http"}, layout=layout, tally=cells, in_flight=1,
        app_threads={"busy": 1, "idle": 3}, app_threads_max=32,
        connections={"worker": 3, "parked": 2, "queued": 0},
        workers=count_states([WorkerState.READY, WorkerState.READY, WorkerState.BOOTING, WorkerState.STALLED]),
        accepted=[5, 7], accept_errors=1, handoff=handoff, handbacks=2,
        restarts={"exit": 1, "timeout": 0, "max-requests": 0, "reload": 2},
        reloads={"succeeded": 1, "failed": 1}, watchdog_pings=9, start_time=1700000000.0,
        worker_memory={(0, 101): 52428800, (3, 104): 1 << 30}, worker_cpu={(0, 101): 1.5, (3, 104): 0.25})


def test_the_exposition_reads_back_with_prometheus_clients_parser():
    text = exposition.exposition(snapshot()).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in parser.text_string_to_metric_families(text) for s in family.samples}

    def get(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert get("sockact_requests_total", listener="http", method="GET", code="2xx") == 1
    assert get("sockact_requests_total", listener="http", method="GET", code="4xx") == 1
    assert get("sockact_request_duration_seconds_bucket", listener="http", le="0.0025") == 1
    assert get("sockact_request_duration_seconds_bucket", listener="http", le="0.25") == 2  # cumulative
    assert get("sockact_request_duration_seconds_count", listener="http") == 2
    assert get("sockact_request_duration_seconds_sum", listener="http") == pytest.approx(0.202)
    assert get("sockact_connections", state="parked") == 2
    assert get("sockact_workers", state="ready") == 2 and get("sockact_workers", state="retiring") == 0
    # "stalled" was called "busy" before: the old label value still counts the same workers.
    assert get("sockact_workers", state="stalled") == 1 and get("sockact_workers", state="busy") == 1
    assert get("sockact_connections_accepted_total", listener="http") == 5
    assert ("sockact_connections_accepted_total", (("listener", "metrics"),)) not in samples
    assert get("sockact_connections_handed_off_total") == 1
    assert get("sockact_handoff_latency_seconds_bucket", le="0.0001") == 1
    assert get("sockact_worker_restarts_total", reason="reload") == 2
    assert get("sockact_reloads_total", result="failed") == 1
    assert get("sockact_watchdog_pings_total") == 9
    assert get("sockact_accept_errors_total") == 1
    assert get("sockact_handbacks_total") == 2
    assert get("sockact_requests_in_flight") == 1
    assert get("sockact_app_threads", state="busy") == 1 and get("sockact_app_threads", state="idle") == 3
    assert get("sockact_app_threads_max") == 32
    assert get("sockact_start_time_seconds") == 1700000000.0
    assert get("sockact_worker_memory_bytes", worker="0", pid="101") == 52428800
    assert get("sockact_worker_memory_bytes", worker="3", pid="104") == 1 << 30
    assert get("sockact_worker_cpu_seconds_total", worker="0", pid="101") == 1.5
    # WebSocket sessions: three opened, one of them ended with 1000; one denied, which never opened.
    assert get("sockact_websockets_open", listener="http") == 2
    assert get("sockact_websockets_ended_total", listener="http", close="1000") == 1
    assert get("sockact_websockets_ended_total", listener="http", close="denied") == 1
    assert ("sockact_websockets_ended_total", (("close", "1001"), ("listener", "http"))) not in samples
    assert get("sockact_websocket_duration_seconds_bucket", listener="http", le="1.0") == 0
    assert get("sockact_websocket_duration_seconds_bucket", listener="http", le="10.0") == 1
    assert get("sockact_websocket_duration_seconds_count", listener="http") == 1  # the opened one alone
    assert get("sockact_websocket_duration_seconds_sum", listener="http") == pytest.approx(2.5)


# -- docs/metrics.md says what the exposition has

METRICS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def _documented_metrics() -> dict[str, tuple[str, set[str]]]:
    """The page's table: each metric's type and labels."""
    rows = {}
    for line in METRICS_PAGE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`sockact_\w+`", cells[0]):
            rows[cells[0].strip("`")] = (cells[1], set(re.findall(r"`(\w+)`", cells[2])))
    return rows


def test_the_metrics_page_lists_every_metric_with_its_type_and_labels():
    text = exposition.exposition(snapshot()).decode()
    exported = {}
    for family in parser.text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = {label for s in family.samples for label in s.labels if label != "le"}
        exported[name] = (family.type, labels)
    assert _documented_metrics() == exported


def test_the_metrics_page_gives_the_buckets_methods_and_close_labels_of_the_code():
    text = " ".join(METRICS_PAGE.read_text().split())

    def listed(after: str) -> tuple[float, ...]:
        found = re.search(re.escape(after) + r" ([0-9., ]+?)[;.] ", text)
        assert found, after
        return tuple(float(v) for v in found.group(1).split(", "))

    assert listed("request duration:") == DURATION_BUCKETS
    assert listed("hand-off latency:") == HANDOFF_BUCKETS
    assert listed("WebSocket session duration:") == WS_DURATION_BUCKETS
    assert f"`method` is one of {' '.join(METHODS[:-1])} or `{METHODS[-1]}`" in text
    assert f"`{CLASSES[1]}`..`{CLASSES[-1]}`, or `{CLASSES[0]}`" in text
    close_list = text.split("Its `close` label is one of a fixed set", 1)[1].split("Histogram buckets", 1)[0]
    assert set(re.findall(r"`(\w+)`", close_list)) >= set(WS_ENDS)
    assert f"within {metricserver.CLIENT_TIMEOUT:g} seconds" in text
    assert f"At most {metricserver.MAX_CLIENTS} are held at once" in text
