"""The benchmark report's arithmetic and rendering, on made-up results: no server, no wrk, no timing."""

import json
from pathlib import Path

import pytest

from bench import markdown, paired, report

DOCS = Path(__file__).resolve().parents[2] / "docs"


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


PER_SERVER = {"sockact": 1000, "gunicorn sync": 300, "gunicorn gthread": 100, "granian": 1200, "nginx": 5000}


def per_server(name: str) -> float:
    """A server's keep-alive req/s in results(), relative to sockact's."""
    return PER_SERVER[name] / PER_SERVER["sockact"]


def results() -> dict:
    servers, per = tuple(PER_SERVER), PER_SERVER
    load = {key: {s: [wrk(per[s])] * 3 for s in servers} for key in ("keepalive", "close", "json", "static")}
    load["idle"] = {"sockact": [idle_round(10, 10, 0)]}
    load["mixed"] = {"sockact (4 threads)": [{**wrk(100), "fast_us": [1000] * 98 + [9000] * 2}],
                     "gunicorn gthread": [{**wrk(100), "fast_us": [1000] * 98 + [30000] * 2}]}
    meta = {"date": "2000-01-01 00:00 UTC", "elapsed_s": 60, "rounds": 3, "idle_rounds": 1, "seconds": 3,
            "cold_runs": 2, "machine": {"cpu": "Test CPU", "cores": 2, "kernel": "6.1", "python_sockact": "3.11.2",
                                        "python_peers": "3.11.2"}, "versions": {"sockact": "0.1.0"}}
    memory = {k: {"supervisor_rss": 20e6, "worker_uss_2": 3.5e6, "worker_uss_3": uss, "extra_worker_pss": 3e6}
              for k, uss in (("no_preload", 5e6), ("preload", 2.5e6))}
    return {"meta": meta, "load": load, "scenario_titles": {k: k.title() for k in (*load, "static")},
            "handoff": {"streaming_per_s": 60_000, "round_trip_per_s": 30_000}, "memory": memory,
            "cold": {"sockact": [100.0, 120.0, 90.0], "gunicorn": [200.0, 210.0]}}


def summary(res: dict | None = None) -> dict:
    """The summary of ``res``, through JSON as it is saved: the report must render from that alone."""
    return json.loads(json.dumps(report.summarize(res or results())))


def test_targets_are_judged_from_ratios_of_the_same_run():
    found = {(t.scenario, t.goal): t for t in report.targets(summary())}
    assert found[("Keep-alive hello world", "≥ 3\N{MULTIPLICATION SIGN} gunicorn gthread")].met is True  # 10x
    assert found[("Keep-alive hello world", "≥ 1\N{MULTIPLICATION SIGN} granian")].met is False  # 0.83x
    assert found[("Keep-alive hello world", "stretch: ≥ 1.3\N{MULTIPLICATION SIGN} granian")].met is None
    assert found[("`Connection: close`", "≥ 1.5\N{MULTIPLICATION SIGN} gunicorn sync")].met is True  # 3.3x
    assert found[("10,000 idle keep-alive clients", "throughput ≥ 90% of keep-alive")].met is True  # 95%
    mixed = next(t for (scenario, _), t in found.items() if scenario.startswith("Mixed"))
    assert mixed.met is True  # 9 ms against 30 ms
    assert [t.met for t in found.values() if t.scenario.startswith(("Supervisor", "Extra", "Cold"))] == [
        True, True, True]
    assert found[("Keep-alive hello world", "how far from nginx")].met is None


def asgi_results() -> dict:
    res = results()
    res["load"]["asgi"] = {"sockact": [wrk(1300)] * 3, "uvicorn": [wrk(1000)] * 3, "granian": [wrk(2000)] * 3,
                           report.ASGI_LOGGED: [wrk(1100)] * 3, report.UVICORN_LOGGED: [wrk(1000)] * 3,
                           report.ASGI_WSGI: [wrk(1000), {"error": "wrk did not finish"}, wrk(1000)]}
    res["websocket"] = {"sockact": [{"round_trips": 9, "per_s": 9000.0}] * 3,
                        "uvicorn": [{"round_trips": 6, "per_s": 6000.0}, {"error": "ConnectionClosedError"}]}
    res["scenario_titles"]["asgi"] = "ASGI keep-alive hello world"
    return res


def test_the_asgi_targets_and_tables():
    found = {(t.scenario, t.goal): t for t in report.targets(summary(asgi_results()))
             if t.scenario.startswith(("ASGI", "WebSocket"))}
    hello = "ASGI keep-alive hello world"
    assert found[hello, "≥ 1.2\N{MULTIPLICATION SIGN} uvicorn"].met is True  # 1.3x
    logged = found[f"{hello}, both access logs on", "≥ 1.2\N{MULTIPLICATION SIGN} uvicorn"]
    assert (logged.measured, logged.met) == ("1.10\N{MULTIPLICATION SIGN} uvicorn", False)
    assert found[hello, "≥ 0.6\N{MULTIPLICATION SIGN} granian"].met is True  # 0.65x
    assert found[hello, "next to sockact's WSGI hello world"].measured == "1.30\N{MULTIPLICATION SIGN} WSGI"
    echo = found["WebSocket echo, one client", "next to uvicorn's"]
    assert echo.measured == "9,000 round trips/s (1.50\N{MULTIPLICATION SIGN} uvicorn)"
    text = markdown.render(summary(asgi_results()), "c.png")
    assert "| sockact (WSGI) | 1,000 (0.77\N{MULTIPLICATION SIGN}) [2/3] ✗ round 2 failed |" in text
    assert "| uvicorn (access log on) | 1,000 (0.77\N{MULTIPLICATION SIGN}) [3/3] |" in text
    assert "| uvicorn | 6,000 (0.67\N{MULTIPLICATION SIGN}) [1/2] ✗ round 2 failed |" in text


def test_a_run_without_the_asgi_lineup_says_so():
    s = summary()
    assert "## ASGI\n\nNot measured in this run." in markdown.render(s, "c.png")
    assert all(t.met is None for t in report.asgi_targets(s))


def test_the_handoff_target_is_judged_on_the_round_trip():
    res = results()
    res["handoff"] = {"streaming_per_s": 200_000, "round_trip_per_s": 45_000}
    [handoff] = [t for t in report.targets(summary(res)) if t.scenario.startswith("Hand-offs")]
    assert (handoff.scenario, handoff.measured, handoff.met) == ("Hand-offs, round trip", "45,000/s", False)


def test_a_missing_figure_is_not_met_nor_invented():
    res = results()
    del res["load"]["keepalive"]["granian"]
    target = next(t for t in report.targets(summary(res))
                  if t.goal.endswith("granian") and t.scenario.startswith("Keep"))
    assert target.met is None
    assert target.measured.startswith("n/a")


def test_markdown_names_the_machine_and_links_the_chart():
    text = markdown.render(summary(), "chart.png")
    assert "Test CPU, 2 cores, Linux 6.1" in text
    assert "![Throughput relative to sockact](chart.png)" in text
    assert "| gunicorn gthread | 100 (0.10\N{MULTIPLICATION SIGN}) [3/3] |" in text


def test_every_figure_shows_its_rounds_and_failed_rounds_are_named():
    res = results()
    res["load"]["close"]["granian"] = [wrk(1200), {"error": "wrk did not finish"}, {"error": "timeout"}]
    res["load"]["json"]["granian"] = [wrk(1200, read=5), wrk(1300), wrk(1100)]
    res["load"]["static"]["granian"] = [{"error": "wrk did not finish"}] * 3
    fig = summary(res)["load"]["close"]["granian"]
    assert fig == {"req_s": 1200, "rounds": 3, "used": 1, "failed": [2, 3], "errors": [0, 0, 0]}
    row = next(line for line in markdown.render(summary(res), "c.png").splitlines() if line.startswith("| granian |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "1,200 (1.20\N{MULTIPLICATION SIGN}) [3/3]"
    assert cells[2] == "1,200 (1.20\N{MULTIPLICATION SIGN}) [1/3] ✗ rounds 2, 3 failed"  # a median of one round
    assert cells[3] == "1,200 (1.20\N{MULTIPLICATION SIGN}) [3/3] ⚠"
    assert cells[4] == "failed [0/3] ✗ rounds 1, 2, 3 failed"


def idle_round(requested: int, answered: int, closed: int, req_s: int = 950) -> dict:
    return {**wrk(req_s), "idle": {"opened": {"requested": requested, "answered": answered, "failed": {}},
                                   "released": {"closed_by_server": closed}}}


def test_a_server_that_did_not_hold_the_idle_clients_gets_no_percentage():
    res = results()
    res["load"]["idle"]["gunicorn sync"] = [idle_round(10, 10, 10, req_s=290)] * 2  # answered, then closed them
    res["load"]["idle"]["granian"] = [idle_round(10, 4, 0, req_s=1200), idle_round(10, 10, 0, req_s=1200)]
    s = summary(res)
    assert [s["idle"][name]["held"] for name in ("sockact", "gunicorn sync", "granian")] == [True, False, False]
    text = markdown.render(s, "c.png")
    for name in ("gunicorn sync", "granian"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |") and "did not" in line)
        assert row.rstrip(" |").endswith(report.DID_NOT_HOLD) and "%" not in row
        assert report.bars(s, name, ["keepalive", "idle"]) == [pytest.approx(per_server(name)), report.DID_NOT_HOLD]
    assert report.bars(s, "sockact", ["idle"]) == [1.0]


def test_sockact_not_holding_the_idle_clients_misses_the_target():
    res = results()
    res["load"]["idle"]["sockact"] = [idle_round(10, 10, 3)]
    [idle] = [t for t in report.targets(summary(res)) if t.scenario.startswith("10,000")]
    assert (idle.measured, idle.met) == (report.DID_NOT_HOLD, False)


def test_the_doc_is_rendered_from_the_saved_summary_alone(tmp_path):
    saved = tmp_path / "benchmarks.json"
    saved.write_text(json.dumps(report.summarize(results())))
    assert markdown.render(json.loads(saved.read_text()), "c.png") == markdown.render(summary(), "c.png")


def test_committed_doc_matches_its_summary():
    saved = DOCS / "benchmarks.json"
    if not saved.exists():
        pytest.skip("no docs/benchmarks.json yet: the next `make bench` writes it")
    assert (DOCS / "benchmarks.md").read_text() == markdown.render(json.loads(saved.read_text()), "benchmarks.png")


def test_strace_totals_and_the_costs_table():
    from bench import costs

    summary_text = ("% time     seconds  usecs/call     calls    errors syscall\n"
                    "------ ----------- ----------- --------- --------- ----------------\n"
                    " 60.00    0.006000           2      3000       100 recvfrom\n"
                    " 40.00    0.004000           1      4000           sendto\n"
                    "------ ----------- ----------- --------- --------- ----------------\n"
                    "100.00    0.010000           1      7000       100 total\n")
    assert costs.strace_total(summary_text) == 7000
    with pytest.raises(ValueError):
        costs.strace_total("nothing traced\n")
    res = results()
    res["costs"] = {"access log on": {"keepalive": {"requests": 9, "worker_cpu_us": 21.5, "supervisor_cpu_us": 0.1,
                                                    "worker_syscalls": 3.0, "supervisor_syscalls": 0.0},
                                      "close": {"error": "no requests"}}}
    text = markdown.render(summary(res), "chart.png")
    assert "| Keepalive | access log on | 21.5 µs | n/a | 0.1 µs | 3.00 | 0.00 |" in text
    assert "| Close | access log on | ✗ no requests |" in text


def test_costs_are_judged_against_the_python_floor_of_the_same_interface():
    res = results()
    res["costs"] = {
        "floor": {"wsgi": {"keepalive": {"requests": 9, "cpu_us": 10.0}, "close": {"error": "no requests"}},
                  "asgi": {"keepalive": {"requests": 9, "cpu_us": 20.0}}},
        "access log off": {"keepalive": {"requests": 9, "worker_cpu_us": 12.0, "supervisor_cpu_us": 0.1,
                                         "worker_syscalls": 2.0, "supervisor_syscalls": 0.0}},
        "access log on": {"keepalive": {"requests": 9, "worker_cpu_us": 16.0, "supervisor_cpu_us": 0.1,
                                        "worker_syscalls": 2.0, "supervisor_syscalls": 0.0}},
        "ASGI, access log off": {"keepalive": {"requests": 9, "worker_cpu_us": 30.0, "supervisor_cpu_us": 0.1,
                                               "worker_syscalls": 2.0, "supervisor_syscalls": 0.0}},
    }
    found = {t.scenario: t for t in report.targets(summary(res))}
    assert (found["Keep-alive CPU per request, access log off"].measured,
            found["Keep-alive CPU per request, access log off"].met) == ("1.20\N{MULTIPLICATION SIGN} the floor", True)
    assert found["Keep-alive CPU per request, access log on"].met is False  # 1.6x > 1.5x
    assert found["ASGI keep-alive CPU per request, access log off"].met is False  # 1.5x of the ASGI floor
    assert found["ASGI keep-alive CPU per request, access log on"].met is None  # not measured: not invented
    text = markdown.render(summary(res), "chart.png")
    assert "| Keepalive | ASGI, access log off | 30.0 µs | 1.50\N{MULTIPLICATION SIGN} | 0.1 µs |" in text
    assert "WSGI Keepalive: 10.0 µs; WSGI Close: ✗ no requests; ASGI Keepalive: 20.0 µs." in text
    assert "| Keepalive | floor |" not in text


def run(req_s: float, cpu_us: float = 20.0, **extra) -> dict:
    """One run's figures as bench.paired.figures gives them."""
    return {"req_s": req_s, "cpu_us": cpu_us, **extra}


def pair(base: str, other: str, base_runs: list, other_runs: list, **extra) -> dict:
    """Raw paired rounds as bench.paired.measure returns them."""
    return {"rounds": len(base_runs), "seconds": 2, "sides": [base, other],
            "runs": {base: base_runs, other: other_runs}, **extra}


def test_the_metrics_cost_is_judged_on_the_paired_rounds():
    res = results()
    res["load"]["keepalive"]["sockact (metrics on)"] = [wrk(900)] * 3  # the throughput table's 10%
    res["metrics_cost"] = pair("metrics off", "metrics on", [run(r, 20.0) for r in (1000, 1010, 990, 1000)],
                               [run(r, 20.5) for r in (970, 980, 960, 975)])
    [cost] = [t for t in report.targets(summary(res)) if t.scenario.endswith("metrics on")]
    assert cost.met is True
    assert cost.measured == ("2.75% (4 paired rounds, round by round 2.5 to 3.0%; CPU per request +2.5%; "
                             "throughput table: 10.0%)")
    del res["metrics_cost"]
    [cost] = [t for t in report.targets(summary(res)) if t.scenario.endswith("metrics on")]
    assert (cost.measured, cost.met) == ("10.0% (throughput table)", False)


def test_paired_rounds_are_reduced_to_medians_each_run_and_the_ratio_round_by_round():
    failed = {"error": "wrk exited 1"}
    found = report.paired(pair("a", "b", [run(1000, 10.0), run(1100, 12.0), run(900, 11.0)],
                               [run(950, 11.0), failed, run(1000, 13.0, fast_mean_ms=0.2)]))
    assert found["sides"]["a"]["median"] == {"req_s": 1000, "cpu_us": 11.0}
    assert found["sides"]["b"] == {"median": {"req_s": 975, "cpu_us": 12.0, "fast_mean_ms": 0.2},
                                   "runs": {"cpu_us": [11.0, None, 13.0], "fast_mean_ms": [None, None, 0.2],
                                            "req_s": [950, None, 1000]},
                                   "failed": [2]}
    assert found["ratio"] == pytest.approx(0.975) and found["cpu_ratio"] == pytest.approx(12 / 11)
    assert found["round_ratios"] == [pytest.approx(0.95), None, pytest.approx(1000 / 900)]
    assert report.spread(found) == (pytest.approx(0.95), pytest.approx(1000 / 900))
    assert report.paired(None) == {} and report.paired({"runs": {}}) == {}


def growing(keepalive: dict | None = None, mixed: dict | None = None) -> dict:
    """results() with the throughput table's rows of growing threads, and the paired rounds given."""
    res = results()
    res["load"]["keepalive"][report.GROWING] = [wrk(930)] * 3  # the table: 7% fewer than sockact's 1000
    res["load"]["mixed"]["granian"] = [{**wrk(1900), "fast_us": [100] * 100}]
    res["load"]["mixed"][report.GROWING] = [{**wrk(1881), "fast_us": [300] * 98 + [1500] * 2}]
    res["growing"] = {key: value for key, value in (("keepalive", keepalive), ("mixed", mixed)) if value}
    return summary(res)


def growing_found(s: dict) -> dict:
    """The growing-threads targets by the start of their names."""
    return {t.scenario.removesuffix(f", {report.GROWING}"): t for t in report.growing_targets(s)}


def test_growing_threads_are_judged_on_fast_p99_and_on_paired_rounds():
    keepalive = pair(report.BASE, report.GROWING, [run(1000, 20.0), run(1020, 20.0), run(990, 20.0)],
                     [run(985, 20.4), run(1000, 20.6), run(960, 20.2)])
    mixed = pair("granian", report.GROWING, [run(1900, 90.0, fast_mean_ms=0.2, slow_mean_ms=50.5)] * 3,
                 [run(1920, 80.0, fast_mean_ms=0.1, slow_mean_ms=50.4)] * 3, ceiling_req_s=2000.0)
    found = growing_found(growing(keepalive, mixed))
    p99 = found["Mixed load, p99 of fast requests"]
    assert (p99.measured, p99.met) == ("1.50 ms", True)
    kept = found["Keep-alive hello world"]
    assert kept.met is True  # 1.5% on the paired medians, though the table says 7%
    assert kept.measured == ("1.50% (3 paired rounds, round by round 1.5 to 3.0%; CPU per request +2.0%; "
                             "throughput table: 7.0%)")
    total = found["Mixed load, all requests"]
    assert total.met is True
    assert total.measured == ("1.011\N{MULTIPLICATION SIGN} granian (3 paired rounds, round by round "
                              "1.011 to 1.011\N{MULTIPLICATION SIGN}; of the 2,000 req/s "
                              "ceiling: sockact 96.0%, granian 95.0%; throughput table: 0.99\N{MULTIPLICATION SIGN})")


def test_a_tie_with_granian_within_the_rounds_spread_is_named_and_judged_on_the_medians_alone():
    mixed = pair("granian", report.GROWING, [run(1900), run(1890), run(1910), run(1900)],
                 [run(1910), run(1870), run(1890), run(1895)], ceiling_req_s=2000.0)
    total = growing_found(growing(mixed=mixed))["Mixed load, all requests"]
    assert total.met is False  # 1,892.5 / 1,900: a tie, but the target asks for at least granian's
    assert total.measured.startswith("0.996\N{MULTIPLICATION SIGN} granian (4 paired rounds, round by round "
                                     "0.989 to 1.005\N{MULTIPLICATION SIGN}: a tie within their spread; of the "
                                     "2,000 req/s ceiling: sockact 94.6%, granian 95.0%; ")
    beaten = pair("granian", report.GROWING, [run(1900)] * 2, [run(1800)] * 2, ceiling_req_s=2000.0)
    total = growing_found(growing(mixed=beaten))["Mixed load, all requests"]
    assert total.met is False and "tie" not in total.measured


def test_a_loss_above_three_percent_on_the_paired_medians_is_not_met():
    keepalive = pair(report.BASE, report.GROWING, [run(1000)] * 3, [run(960), run(980), run(965)])
    kept = growing_found(growing(keepalive))["Keep-alive hello world"]
    assert kept.met is False and kept.measured.startswith("3.50% (3 paired rounds")


def test_growing_throughput_targets_without_paired_rounds_are_not_judged_on_the_table():
    found = growing_found(growing())
    for name in ("Keep-alive hello world", "Mixed load, all requests"):
        target = found[name]
        assert target.met is None and target.measured.startswith("n/a (no paired rounds in this run; ")
    assert found["Keep-alive hello world"].measured.endswith("throughput table: 7.0%)")
    assert all(t.met is None for t in report.growing_targets(summary()))  # not in the run: not judged


def test_the_paired_rounds_are_shown_run_by_run():
    keepalive = pair(report.BASE, report.GROWING, [run(1000, 20.0, threads=9), run(1020, 21.0, threads=9)],
                     [run(985, 20.5, threads=12), {"error": "wrk did not finish"}], instances=2)
    mixed = pair("granian", report.GROWING, [run(1900, 90.0, fast_mean_ms=0.2, slow_mean_ms=50.5)] * 2,
                 [run(1880, 80.0, fast_mean_ms=0.25, slow_mean_ms=50.75)] * 2, ceiling_req_s=2000.0)
    text = markdown.render(growing(keepalive, mixed), "c.png")
    assert "| sockact | 1,010 | 1000, 1020 | 20.5 µs | 20.0, 21.0 | 9, 9 |" in text
    assert "| sockact (max_threads 16) | 985 | 985, ✗ | 20.5 µs | 20.5, ✗ | 12, ✗ |" in text
    assert "2 rounds of 2 s each, over 2 pairs of instances started in turn. sockact (max_threads 16) / " in text
    assert "round by round, req/s: 0.985, ✗." in text
    assert "| granian | 1,900 | 1900, 1900 | 90.0 µs | 90.0, 90.0 | n/a | 95.0% | 0.20 ms | 50.50 ms |" in text
    assert ("| sockact (max_threads 16) | 1,880 | 1880, 1880 | 80.0 µs | 80.0, 80.0 | n/a | 94.0% | 0.25 ms | "
            "50.75 ms |" in text)
    assert "### Mixed load: granian, and sockact `--max-threads 16`\n\n2 rounds of 2 s each." in text
    assert "with a metrics listener\n\nNot measured in this run." in text  # absent from results()


def cost(worker_cpu_us: float) -> dict:
    return {"requests": 9, "worker_cpu_us": worker_cpu_us, "supervisor_cpu_us": 0.1, "worker_syscalls": 2.0,
            "supervisor_syscalls": 0.0}


def test_a_varying_head_is_reported_beside_each_cost_target_and_not_judged():
    from bench import costs, load

    assert load.VARYING.key in costs.SCENARIOS  # the floor and sockact alike, in the same run
    assert load.VARYING.env == {"BENCH_VARY": "1"}
    res = results()
    res["scenario_titles"].update(keepalive="Keep-alive hello world", keepalive_varying=load.VARYING.title)
    res["costs"] = {
        "floor": {"wsgi": {"keepalive": {"requests": 9, "cpu_us": 10.0},
                           "keepalive_varying": {"requests": 9, "cpu_us": 11.0}}},
        "access log off": {"keepalive": cost(12.0), "keepalive_varying": cost(22.0)},
        "access log on": {"keepalive": cost(14.0), "keepalive_varying": {"error": "no requests"}},
    }
    found = [t for t in report.targets(summary(res)) if t.scenario.startswith("Keep-alive CPU")]
    assert [(t.scenario, t.measured, t.met) for t in found] == [
        ("Keep-alive CPU per request, access log off", "1.20\N{MULTIPLICATION SIGN} the floor", True),
        ("Keep-alive CPU per request, access log off, varying head", "2.00\N{MULTIPLICATION SIGN} the floor", None),
        ("Keep-alive CPU per request, access log on", "1.40\N{MULTIPLICATION SIGN} the floor", True),
        ("Keep-alive CPU per request, access log on, varying head", "n/a the floor", None),
    ]
    assert found[1].goal == "for scale: the target above is judged on a repeated head"
    text = markdown.render(summary(res), "chart.png")
    assert ("| Keep-alive hello world, repeated head | access log off | 12.0 µs | 1.20\N{MULTIPLICATION SIGN} |"
            in text)
    assert ("| Keep-alive hello world, varying head | access log off | 22.0 µs | 2.00\N{MULTIPLICATION SIGN} |"
            in text)
    assert "| Keep-alive hello world, varying head | access log on | ✗ no requests |" in text
    assert "WSGI Keep-alive hello world, varying head: 11.0 µs." in text


def test_the_cold_activation_cpu_is_shown_beside_its_time_and_older_runs_still_render():
    res = results()
    res["cold_cpu"] = {"sockact": [80.0, 90.0, 70.0], "gunicorn": [95.0, 105.0]}
    page = markdown.render(summary(res), "benchmarks.png")
    assert "| Cold activation, sockact: CPU its processes used" in page
    assert "| 80 ms (70, 90 ms) |" in page and "| 100 ms (95, 105 ms) |" in page
    assert "CPU its processes used" not in markdown.render(summary(), "benchmarks.png")  # a run without it


def test_the_judged_costs_are_medians_of_runs_taken_in_turn_and_each_run_is_shown():
    from bench import costs

    assert costs.median([16.0, 14.0, 15.0]) == 15.0
    assert costs.ROUNDS >= 3
    res = results()
    res["costs"] = {
        "floor": {"wsgi": {"keepalive": {"requests": 9, "cpu_us": 10.0, "cpu_rounds_us": [10.0, 9.5, 11.0]}}},
        "access log off": {"keepalive": {"requests": 9, "worker_cpu_us": 12.0, "supervisor_cpu_us": 0.1,
                                         "worker_syscalls": 2.0, "supervisor_syscalls": 0.0,
                                         "cpu_rounds_us": [12.0, 11.5, 13.0]},
                           "close": {"requests": 9, "worker_cpu_us": 50.0, "supervisor_cpu_us": 20.0,
                                     "worker_syscalls": 6.0, "supervisor_syscalls": 2.0}},
    }
    text = markdown.render(summary(res), "chart.png")
    assert "WSGI Keepalive: 10.0 µs (runs: 10.0, 9.5, 11.0 µs)" in text
    assert "| 2.00 | 0.00 | 12.0, 11.5, 13.0 µs |" in text
    assert "| 6.00 | 2.00 |  |" in text  # one run: nothing to show beside it


def test_a_mixed_runs_throughput_is_the_sum_of_its_connections_rates_over_their_spans():
    # wrk's duration runs to its last thread's stop: 4,000 requests in 2.1 s are 1,905 req/s by it, where
    # the connections, each over its own span, served 1,990.
    run = wrk(4000, seconds=2.1, span_req_s=1990.0)
    assert report.throughput(run) == 1990.0
    assert paired.figures(run, 0, 1)["req_s"] == 1990.0
    assert report.throughput(wrk(4000, seconds=2.0)) == 2000.0  # one thread: no spans, wrk's duration
