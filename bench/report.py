"""From the raw results of one run to the figures of docs/benchmarks.md: medians, ratios, targets.

Pure functions over plain data (the JSON the harness saves); no process, socket or clock here, so the
unit tests feed them made-up results. Ratios are always "server / sockact", from the same run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

BASE = "sockact"
THREADED = "sockact (4 threads)"  # against gunicorn gthread with --threads 4, in the mixed load
GROWING = "sockact (max_threads 16)"  # the setting docs/deploy.md gives Django and Flask users
WITH_METRICS = "sockact (metrics on)"  # what counting for Prometheus costs
ASGI_WSGI = "sockact (WSGI)"  # in the ASGI scenario: sockact's WSGI hello world, in the same rounds
ASGI = "asgi"  # the ASGI scenario's key
# In the ASGI scenario, sockact and uvicorn again with their access logs on (to a file)
ASGI_LOGGED = "sockact (access log on)"
UVICORN_LOGGED = "uvicorn (access log on)"
MB = 1_000_000
TIMES = "\N{MULTIPLICATION SIGN}"
ERROR_KINDS = ("connect", "read", "write", "status", "timeout")
FLOOR = "floor"  # in the costs: the Python floor's figures (bench/floor.py), per interface
# Worker CPU per keep-alive request, at most this many times the floor's: access log off, and on.
FLOOR_LIMITS = (("access log off", 1.3), ("access log on", 1.5))
# In the costs: the keep-alive load with a new query string each request (bench/load.py's VARYING). wrk
# alone repeats one head, whose parse and environ sockact reuses; real clients' heads vary.
VARYING_HEAD = "keepalive_varying"
Round = dict[str, Any]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (0 < q <= 100): a value that was observed."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def throughput(rnd: Round) -> float | None:
    """Requests per second of one wrk run; None when wrk failed or measured no time.

    With several wrk threads (the mixed load's 10), wrk's duration runs until its last thread stops, and
    each thread stops at its own 100 ms timer after the run's end: the others have stopped by then, so
    requests / duration comes out 0-5% low at random in a 2 s run. There the sum of each connection's own
    rate over its span (first request sent to last response, wrk_report.lua) is taken instead."""
    if "error" in rnd or not rnd.get("duration_us"):
        return None
    return rnd.get("span_req_s") or rnd["requests"] / (rnd["duration_us"] / 1e6)


def errors(rnd: Round) -> int:
    return sum(rnd.get(kind, 0) for kind in ERROR_KINDS)


def median_throughput(rounds: Sequence[Round]) -> float | None:
    return median([t for t in map(throughput, rounds) if t is not None])


def fast_latency_ms(rounds: Sequence[Round], q: float) -> float | None:
    """Mixed load: the median over rounds of each round's q-th percentile of the fast requests."""
    per_round = [percentile(r["fast_us"], q) for r in rounds if r.get("fast_us")]
    found = [v / 1000 for v in per_round if v is not None]
    return median(found)


# -- the summary: what docs/benchmarks.md is rendered from, saved beside it as JSON

SCHEMA = 1


def figure(rounds: Sequence[Round]) -> dict[str, Any]:
    """One throughput figure and how it was made: the median of the rounds wrk finished, which
    rounds failed (numbered from 1) and how many errors wrk counted in each round."""
    failed = [n for n, rnd in enumerate(rounds, 1) if throughput(rnd) is None]
    return {"req_s": median_throughput(rounds), "rounds": len(rounds), "used": len(rounds) - len(failed),
            "failed": failed, "errors": [errors(rnd) for rnd in rounds]}


def _idle(rounds: Sequence[Round]) -> dict[str, Any]:
    """What became of the idle clients; ``held`` only if every one was still open after every round."""
    opened = [r["idle"]["opened"] for r in rounds]
    answered = [o.get("answered", 0) for o in opened]
    kept = [a - r["idle"]["released"].get("closed_by_server", 0) for a, r in zip(answered, rounds, strict=True)]
    failed: dict[str, int] = {}
    for o in opened:
        for reason, count in o.get("failed", {}).items():
            failed[reason] = failed.get(reason, 0) + count
    held = bool(rounds) and all(k >= o["requested"] for k, o in zip(kept, opened, strict=True))
    return {"requested": max(o["requested"] for o in opened), "answered": median(answered), "kept": median(kept),
            "failed_to_open": failed, "held": held}


def _echo(rounds: Sequence[Round]) -> dict[str, Any]:
    """WebSocket echo: the median round trips per second of the rounds that finished, which failed
    (an echo has no error counts of wrk's: a failed exchange fails its round)."""
    failed = [n for n, rnd in enumerate(rounds, 1) if "error" in rnd]
    return {"per_s": median([r["per_s"] for r in rounds if "error" not in r]), "rounds": len(rounds),
            "used": len(rounds) - len(failed), "failed": failed, "errors": [0] * len(rounds)}


def _cold(samples: Sequence[float]) -> dict[str, Any]:
    return {"median_ms": median(samples), "min_ms": min(samples), "max_ms": max(samples), "runs": len(samples)}


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The run's raw results reduced to the figures the report shows, with rounds and errors: plain JSON."""
    load = results["load"]
    mixed = load.get("mixed", {})
    return {
        "schema": SCHEMA,
        "meta": results["meta"],
        "scenario_titles": results["scenario_titles"],
        "load": {key: {server: figure(rounds) for server, rounds in per.items()} for key, per in load.items()},
        "idle": {server: _idle(rounds) for server, rounds in load.get("idle", {}).items()},
        "mixed": {server: {"fast_p50_ms": fast_latency_ms(rounds, 50), "fast_p99_ms": fast_latency_ms(rounds, 99)}
                  for server, rounds in mixed.items()},
        "websocket": {server: _echo(rounds) for server, rounds in results.get("websocket", {}).items()},
        "metrics_cost": paired(results.get("metrics_cost")),
        "growing_keepalive": paired(results.get("growing", {}).get("keepalive")),
        "growing_mixed": paired(results.get("growing", {}).get("mixed")),
        "handoff": results.get("handoff", {}),
        "costs": results.get("costs", {}),
        "memory": results.get("memory", {}),
        "cold": {server: _cold(samples) for server, samples in results.get("cold", {}).items() if samples},
        "cold_cpu": {server: _cold(samples) for server, samples in results.get("cold_cpu", {}).items() if samples},
    }


def req_s(summary: dict[str, Any], scenario: str, server: str) -> float | None:
    """A figure's median req/s; None if the server was not run there or every round failed."""
    return summary["load"].get(scenario, {}).get(server, {}).get("req_s")


@dataclass(frozen=True)
class Target:
    scenario: str
    goal: str
    measured: str
    met: bool | None  # None: reported for scale, no target


def fmt_ratio(value: float | None) -> str:
    """2 decimals; 3 below 0.1, so that a small ratio does not read as zero."""
    if value is None:
        return "n/a"
    return f"{value:.3f}{TIMES}" if value < 0.1 else f"{value:.2f}{TIMES}"


def _at_least(scenario: str, peer: str, minimum: float, summary: dict[str, Any], key: str) -> Target:
    """sockact's throughput must be at least ``minimum`` times ``peer``'s."""
    times = ratio(req_s(summary, key, BASE), req_s(summary, key, peer))
    return Target(scenario, f"≥ {minimum:g}{TIMES} {peer}", f"{fmt_ratio(times)} {peer}",
                  None if times is None else times >= minimum)


DID_NOT_HOLD = "did not hold them"


def idle_fraction(summary: dict[str, Any], server: str) -> float | None:
    """Throughput with the idle clients held, as a fraction of the plain keep-alive throughput;
    None if the server did not hold them all (then there is nothing to compare)."""
    if not summary["idle"].get(server, {}).get("held"):
        return None
    return ratio(req_s(summary, "idle", server), req_s(summary, "keepalive", server))


def idle_cell(summary: dict[str, Any], server: str) -> str:
    """The idle throughput as a share of keep-alive, or why there is none."""
    if server not in summary["idle"]:
        return "n/a"
    if not summary["idle"][server]["held"]:
        return DID_NOT_HOLD
    fraction = idle_fraction(summary, server)
    return "n/a" if fraction is None else f"{fraction:.0%}"


def bars(summary: dict[str, Any], server: str, keys: Sequence[str]) -> list[float | str | None]:
    """The server's throughput relative to sockact per scenario; for the idle scenario, DID_NOT_HOLD
    instead of a bar when it did not hold the idle clients (its req/s then measure something else)."""
    out: list[float | str | None] = []
    for key in keys:
        if key == "idle" and not summary["idle"].get(server, {}).get("held"):
            out.append(DID_NOT_HOLD if server in summary["idle"] else None)
        else:
            out.append(ratio(req_s(summary, key, server), req_s(summary, key, BASE)))
    return out


def targets(summary: dict[str, Any]) -> list[Target]:
    """Each target of the worker-loop issue with the measured figure and whether it is met."""
    found = [
        _at_least("Keep-alive hello world", "gunicorn gthread", 3, summary, "keepalive"),
        _at_least("Keep-alive hello world", "granian", 1.0, summary, "keepalive"),
        _stretch(_at_least("Keep-alive hello world", "granian", 1.3, summary, "keepalive")),
        Target("Keep-alive hello world", "how far from nginx",
               f"{fmt_ratio(ratio(req_s(summary, 'keepalive', BASE), req_s(summary, 'keepalive', 'nginx')))} nginx",
               None),
        _metrics_cost(summary),
        _at_least("`Connection: close`", "gunicorn sync", 1.5, summary, "close"),
        _at_least("`Connection: close`", "granian", 1.0, summary, "close"),
    ]
    fraction, held = idle_fraction(summary, BASE), summary["idle"].get(BASE, {}).get("held")
    found.append(Target("10,000 idle keep-alive clients", "throughput ≥ 90% of keep-alive", idle_cell(summary, BASE),
                        False if held is False else None if fraction is None else fraction >= 0.9))
    mixed = summary["mixed"]
    p99 = ratio(mixed.get(THREADED, {}).get("fast_p99_ms"), mixed.get("gunicorn gthread", {}).get("fast_p99_ms"))
    found.append(Target(f"Mixed load, p99 of fast requests, {THREADED}", f"≤ 1.0{TIMES} gunicorn gthread's",
                        f"{fmt_ratio(p99)} gunicorn gthread's", None if p99 is None else p99 <= 1.0))
    found.extend(growing_targets(summary))
    # A request pays the round trip (CONN, then the worker's DONE or PARK), not the streaming rate.
    rate = summary["handoff"].get("round_trip_per_s")
    bare = summary["handoff"].get("bare_round_trip_per_s")
    measured = "n/a" if rate is None else f"{rate:,.0f}/s"
    if rate is not None and bare:
        measured += f" (the machine's bare round trip between two processes: {bare:,.0f}/s)"
    found.append(Target("Hand-offs, round trip", "≥ 50,000/s", measured, None if rate is None else rate >= 50_000))
    found.extend(asgi_targets(summary))
    found.extend(cost_targets(summary))
    found.extend(_memory_targets(summary["memory"]))
    found.append(_cold_target(summary["cold"]))
    return found


def _stretch(target: Target) -> Target:
    """A stretch goal: shown with its figure, neither met nor missed."""
    return Target(target.scenario, f"stretch: {target.goal}", target.measured, None)


def growing_targets(summary: dict[str, Any]) -> list[Target]:
    """App threads that grow (max_threads 16): fast requests beside slow ones, at the one-thread cost. The
    two throughput targets are judged on paired rounds (bench/paired.py), the throughput table's few
    rounds of one instance each being noisier than the question; its figure is given beside."""
    p99 = summary["mixed"].get(GROWING, {}).get("fast_p99_ms")
    kept = ratio(req_s(summary, "keepalive", GROWING), req_s(summary, "keepalive", BASE))
    matrix = "n/a" if kept is None else f"{(1 - kept) * 100:.1f}%"
    measured, lost = _lost(summary.get("growing_keepalive") or {}, matrix)
    return [Target(f"Mixed load, p99 of fast requests, {GROWING}", "≤ 2 ms",
                   "n/a" if p99 is None else f"{p99:.2f} ms", None if p99 is None else p99 <= 2.0),
            _mixed_total(summary),
            Target(f"Keep-alive hello world, {GROWING}", "loses ≤ 3% against sockact", measured,
                   None if lost is None else lost <= 3)]


def ceiling_share(pair: dict[str, Any], side: str) -> float | None:
    """A side's median req/s in paired mixed rounds as a share of the load's ceiling (every request but
    the sleeping ones served in no time)."""
    got = pair.get("sides", {}).get(side, {}).get("median", {}).get("req_s")
    return ratio(got, pair.get("ceiling_req_s"))


def _mixed_total(summary: dict[str, Any]) -> Target:
    """sockact (max_threads 16) against granian in paired mixed rounds, judged on the ratio of the medians
    alone. Both run near the load's ceiling, so the ratio is given with its round-by-round spread and each
    side's distance from the ceiling: a tie within the spread is named, and not counted as met."""
    matrix = fmt_ratio(ratio(req_s(summary, "mixed", GROWING), req_s(summary, "mixed", "granian")))
    scenario, goal = f"Mixed load, all requests, {GROWING}", f"≥ 1.0{TIMES} granian"
    pair = summary.get("growing_mixed") or {}
    times = pair.get("ratio")
    if times is None:
        return Target(scenario, goal, f"n/a (no paired rounds in this run; throughput table: {matrix})", None)
    # Three decimals: a ratio judged against 1.0 must not read as 1.00 when it is 0.996.
    text = f"{times:.3f}{TIMES} granian ({pair['rounds']} paired rounds"
    low_high = spread(pair)
    if low_high is not None:
        text += f", round by round {low_high[0]:.3f} to {low_high[1]:.3f}{TIMES}"
        if low_high[0] <= 1.0 <= low_high[1]:
            text += ": a tie within their spread"
    shares = [(name, ceiling_share(pair, side)) for name, side in (("sockact", pair["other"]),
                                                                   ("granian", pair["base"]))]
    if all(share is not None for _, share in shares):
        text += (f"; of the {pair['ceiling_req_s']:,.0f} req/s ceiling: "
                 + ", ".join(f"{name} {share:.1%}" for name, share in shares))
    return Target(scenario, goal, f"{text}; throughput table: {matrix})", times >= 1.0)


def asgi_targets(summary: dict[str, Any]) -> list[Target]:
    """The ASGI issue's: against uvicorn and granian, and for scale, the WSGI hello world and WebSocket echo."""
    scenario = "ASGI keep-alive hello world"
    wsgi = ratio(req_s(summary, ASGI, BASE), req_s(summary, ASGI, ASGI_WSGI))
    echo = summary.get("websocket", {})
    ours, theirs = (echo.get(name, {}).get("per_s") for name in (BASE, "uvicorn"))
    logged = ratio(req_s(summary, ASGI, ASGI_LOGGED), req_s(summary, ASGI, UVICORN_LOGGED))
    return [
        _at_least(scenario, "uvicorn", 1.2, summary, ASGI),
        Target(f"{scenario}, both access logs on", f"≥ 1.2{TIMES} uvicorn", f"{fmt_ratio(logged)} uvicorn",
               None if logged is None else logged >= 1.2),
        _at_least(scenario, "granian", 0.6, summary, ASGI),
        Target(scenario, "next to sockact's WSGI hello world", f"{fmt_ratio(wsgi)} WSGI", None),
        Target("WebSocket echo, one client", "next to uvicorn's",
               "n/a" if ours is None else f"{ours:,.0f} round trips/s ({fmt_ratio(ratio(ours, theirs))} uvicorn)",
               None),
    ]


def variant_name(interface: str, label: str) -> str:
    """The key of one of sockact's cost variants (bench/costs.py): "access log on", "ASGI, access log on"."""
    return label if interface == "wsgi" else f"ASGI, {label}"


def floor_times(costs: dict[str, Any], variant: str, scenario: str) -> float | None:
    """sockact's worker CPU per request as a multiple of the Python floor's, same interface, same load."""
    interface = "asgi" if variant.startswith("ASGI") else "wsgi"
    ours = costs.get(variant, {}).get(scenario, {}).get("worker_cpu_us")
    floor = costs.get(FLOOR, {}).get(interface, {}).get(scenario, {}).get("cpu_us")
    return ratio(ours, floor)


def cost_targets(summary: dict[str, Any]) -> list[Target]:
    """The cost targets: keep-alive worker CPU per request against the floor of the same interface, judged
    on wrk's repeated head; beside each, for scale, the same with a varying head (not judged)."""
    costs = summary.get("costs", {})
    found = []
    for interface, title in (("wsgi", "Keep-alive"), ("asgi", "ASGI keep-alive")):
        for label, limit in FLOOR_LIMITS:
            variant = variant_name(interface, label)
            times = floor_times(costs, variant, "keepalive")
            found.append(Target(f"{title} CPU per request, {label}", f"≤ {limit:g}{TIMES} the Python floor",
                                f"{fmt_ratio(times)} the floor", None if times is None else times <= limit))
            varying = floor_times(costs, variant, VARYING_HEAD)
            found.append(Target(f"{title} CPU per request, {label}, varying head",
                                "for scale: the target above is judged on a repeated head",
                                f"{fmt_ratio(varying)} the floor", None))
    return found


def paired(measured: dict[str, Any] | None) -> dict[str, Any]:
    """Paired rounds (bench.paired.measure) reduced to what the report shows: per side, the median and
    each run of every figure (None for a failed run); the ratios "other / base" of the medians; and the
    ratio round by round, to show how far the runs spread. {} if the step did not run."""
    if not measured or not measured.get("runs"):
        return {}
    runs: dict[str, list[dict[str, Any]]] = measured["runs"]
    base, other = measured["sides"]
    sides: dict[str, dict[str, Any]] = {}
    for side, done in runs.items():
        keys = sorted({key for run in done for key in run if key != "error"})
        columns = {key: [run.get(key) for run in done] for key in keys}
        sides[side] = {"median": {key: median([v for v in column if v is not None])
                                  for key, column in columns.items()},
                       "runs": columns, "failed": [n for n, run in enumerate(done, 1) if "error" in run]}

    def of(side: str, key: str) -> float | None:
        found: float | None = sides[side]["median"].get(key)
        return found

    by_round = [ratio(o.get("req_s"), b.get("req_s")) for b, o in zip(runs[base], runs[other], strict=True)]
    return {"rounds": measured["rounds"], "seconds": measured["seconds"], "instances": measured.get("instances", 1),
            "base": base, "other": other,
            "sides": sides, "ratio": ratio(of(other, "req_s"), of(base, "req_s")),
            "cpu_ratio": ratio(of(other, "cpu_us"), of(base, "cpu_us")),
            "round_ratios": by_round, **({"ceiling_req_s": measured["ceiling_req_s"]}
                                        if "ceiling_req_s" in measured else {})}


def spread(pair: dict[str, Any]) -> tuple[float, float] | None:
    """The lowest and highest round-by-round ratio of paired rounds; None if no round had both sides."""
    found = [r for r in pair.get("round_ratios", []) if r is not None]
    return (min(found), max(found)) if found else None


def pct(value: float) -> str:
    """A percentage with its sign: CPU added, or saved."""
    return f"{value:+.1f}%"


def _lost(pair: dict[str, Any], matrix: str) -> tuple[str, float | None]:
    """(the measured text, the percent lost) of the "other" side against the "base" side of paired rounds."""
    lost = None if pair.get("ratio") is None else 100 * (1 - pair["ratio"])
    if lost is None:
        return f"n/a (no paired rounds in this run; throughput table: {matrix})", None
    low_high = spread(pair)
    cpu = "n/a" if pair.get("cpu_ratio") is None else pct(100 * (pair["cpu_ratio"] - 1))
    runs = "" if low_high is None else \
        f", round by round {100 * (1 - low_high[1]):.1f} to {100 * (1 - low_high[0]):.1f}%"
    # Two decimals: a loss judged against 3% must not read as 3.0% when it is 3.04%.
    return (f"{lost:.2f}% ({pair['rounds']} paired rounds{runs}; CPU per request {cpu}; "
            f"throughput table: {matrix})", lost)


def _metrics_cost(summary: dict[str, Any]) -> Target:
    """Keep-alive throughput lost to counting for Prometheus (a metrics listener on), in percent: from the
    paired runs, with the matrix's two rows beside it."""
    kept = ratio(req_s(summary, "keepalive", WITH_METRICS), req_s(summary, "keepalive", BASE))
    matrix = "n/a" if kept is None else f"{(1 - kept) * 100:.1f}%"
    pair = summary.get("metrics_cost") or {}
    if not pair:
        return Target("Keep-alive hello world, metrics on", "costs < 5%", f"{matrix} (throughput table)",
                      None if kept is None else kept > 0.95)
    measured, lost = _lost(pair, matrix)
    return Target("Keep-alive hello world, metrics on", "costs < 5%", measured, None if lost is None else lost < 5)


def _memory_targets(memory: dict[str, Any]) -> list[Target]:
    if not memory:
        return []
    sup = memory["no_preload"]["supervisor_rss"]
    extra = memory["preload"]["worker_uss_3"]
    return [Target("Supervisor RSS", "≤ 25 MB", f"{sup / MB:.1f} MB", sup <= 25 * MB),
            Target("Extra worker with `--preload`", "≤ 3 MB USS", f"{extra / MB:.2f} MB", extra <= 3 * MB)]


def _cold_target(cold: dict[str, dict[str, Any]]) -> Target:
    goal = "≤ 150 ms median, below gunicorn's"
    if BASE not in cold or "gunicorn" not in cold:
        return Target("Cold activation latency", goal, "n/a", None)
    ours, theirs = cold[BASE]["median_ms"], cold["gunicorn"]["median_ms"]
    return Target("Cold activation latency", goal, f"{ours:.0f} ms (gunicorn {theirs:.0f} ms)",
                  ours <= 150 and ours < theirs)
