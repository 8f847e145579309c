"""The benchmark report's arithmetic and rendering, on made-up results: no server, no wrk, no timing."""

import pytest

from bench import markdown, report


def wrk(requests: int, seconds: float = 1.0, **extra) -> dict:
    return {"requests": requests, "duration_us": int(seconds * 1e6), "bytes": 0, **extra}


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert report.percentile(values, 50) == 50
    assert report.percentile(values, 99) == 99
    assert report.percentile([7.0], 99) == 7.0
    assert report.percentile([], 50) is None


def test_throughput_skips_failed_runs_in_the_median():
    rounds = [wrk(1000), wrk(3000, seconds=2), {"error": "wrk did not finish"}, wrk(5000)]
    assert report.throughput(rounds[1]) == 1500
    assert report.throughput(rounds[2]) is None
    assert report.median_throughput(rounds) == 1500
    assert report.median_throughput([]) is None


def test_ratio_and_errors():
    assert report.ratio(30, 10) == 3
    assert report.ratio(None, 10) is None
    assert report.ratio(5, 0) is None
    assert report.errors(wrk(1, read=2, timeout=3)) == 5


def test_fast_latency_is_the_median_of_per_round_percentiles():
    rounds = [{"fast_us": [1000, 2000, 3000]}, {"fast_us": [4000]}, {"fast_us": [5000, 6000]}, {}]
    assert report.fast_latency_ms(rounds, 50) == pytest.approx(4.0)
    assert report.fast_latency_ms([], 99) is None


def results() -> dict:
    idle_round = {**wrk(950), "idle": {"opened": {"requested": 10, "answered": 10, "failed": {}, "seconds": 1},
                                        "released": {"closed_by_server": 0}}}
    servers = ("sockact", "gunicorn sync", "gunicorn gthread", "granian", "nginx")
    per = {"sockact": 1000, "gunicorn sync": 300, "gunicorn gthread": 100, "granian": 1200, "nginx": 5000}
    load = {key: {s: [wrk(per[s])] * 3 for s in servers} for key in ("keepalive", "close", "json", "static")}
    load["idle"] = {"sockact": [idle_round]}
    load["mixed"] = {"sockact": [{**wrk(100), "fast_us": [1000] * 98 + [9000] * 2}],
                     "gunicorn gthread": [{**wrk(100), "fast_us": [1000] * 98 + [30000] * 2}]}
    meta = {"date": "2000-01-01 00:00 UTC", "elapsed_s": 60, "rounds": 3, "idle_rounds": 1, "seconds": 3,
            "cold_runs": 2, "machine": {"cpu": "Test CPU", "cores": 2, "kernel": "6.1", "python_sockact": "3.11.2",
                                        "python_peers": "3.11.2"}, "versions": {"sockact": "0.1.0"}}
    memory = {k: {"supervisor_rss": 20e6, "worker_uss_2": 3.5e6, "worker_uss_3": uss, "extra_worker_pss": 3e6}
              for k, uss in (("no_preload", 5e6), ("preload", 2.5e6))}
    return {"meta": meta, "load": load, "scenario_titles": {k: k.title() for k in (*load, "static")},
            "handoff": {"streaming_per_s": 60_000, "round_trip_per_s": 30_000}, "memory": memory,
            "cold": {"sockact": [100.0, 120.0, 90.0], "gunicorn": [200.0, 210.0]}}


def test_targets_are_judged_from_ratios_of_the_same_run():
    found = {(t.scenario, t.goal): t for t in report.targets(results())}
    assert found[("Keep-alive hello world", "≥ 6\N{MULTIPLICATION SIGN} gunicorn gthread")].met is True  # 10x
    assert found[("Keep-alive hello world", "≥ 0.7\N{MULTIPLICATION SIGN} granian")].met is True  # 0.83x
    assert found[("`Connection: close`", "≥ 2.5\N{MULTIPLICATION SIGN} gunicorn sync")].met is True  # 3.3x
    assert found[("10,000 idle keep-alive clients", "throughput ≥ 90% of keep-alive")].met is True  # 95%
    mixed = next(t for (scenario, _), t in found.items() if scenario.startswith("Mixed"))
    assert mixed.met is True  # 9 ms against 30 ms
    assert [t.met for t in found.values() if t.scenario.startswith(("Handoffs", "Supervisor", "Extra", "Cold"))] == [
        True, True, True, True]
    assert found[("Keep-alive hello world", "how far from nginx")].met is None


def test_a_missing_figure_is_not_met_nor_invented():
    res = results()
    del res["load"]["keepalive"]["granian"]
    target = next(t for t in report.targets(res) if t.goal.endswith("granian") and t.scenario.startswith("Keep"))
    assert target.met is None
    assert target.measured.startswith("n/a")


def test_markdown_names_the_machine_and_links_the_chart():
    text = markdown.render(results(), "chart.png")
    assert "Test CPU, 2 cores, Linux 6.1" in text
    assert "![Throughput relative to sockact](chart.png)" in text
    assert "| gunicorn gthread | 100 (0.10\N{MULTIPLICATION SIGN})" in text
