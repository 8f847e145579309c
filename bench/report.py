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
MB = 1_000_000
TIMES = "\N{MULTIPLICATION SIGN}"
ERROR_KINDS = ("connect", "read", "write", "status", "timeout")
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
    """Requests per second of one wrk run; None when wrk failed or measured no time."""
    if "error" in rnd or not rnd.get("duration_us"):
        return None
    return rnd["requests"] / (rnd["duration_us"] / 1e6)


def errors(rnd: Round) -> int:
    return sum(rnd.get(kind, 0) for kind in ERROR_KINDS)


def median_throughput(rounds: Sequence[Round]) -> float | None:
    return median([t for t in map(throughput, rounds) if t is not None])


def fast_latency_ms(rounds: Sequence[Round], q: float) -> float | None:
    """Mixed load: the median over rounds of each round's q-th percentile of the fast requests."""
    per_round = [percentile(r["fast_us"], q) for r in rounds if r.get("fast_us")]
    found = [v / 1000 for v in per_round if v is not None]
    return median(found)


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


def _at_least(scenario: str, peer: str, minimum: float, figures: dict[str, float | None]) -> Target:
    """sockact's throughput must be at least ``minimum`` times ``peer``'s."""
    times = ratio(figures.get(BASE), figures.get(peer))
    return Target(scenario, f"≥ {minimum:g}{TIMES} {peer}", f"{fmt_ratio(times)} {peer}",
                  None if times is None else times >= minimum)


def idle_fraction(load: dict[str, dict[str, list[Round]]], server: str) -> float | None:
    """Throughput with the idle clients held, as a fraction of the plain keep-alive throughput."""
    return ratio(median_throughput(load.get("idle", {}).get(server, [])),
                 median_throughput(load.get("keepalive", {}).get(server, [])))


def targets(results: dict[str, Any]) -> list[Target]:
    """Each target of issue 5 with the measured figure and whether it is met."""
    load = results["load"]
    keepalive = {s: median_throughput(r) for s, r in load.get("keepalive", {}).items()}
    close = {s: median_throughput(r) for s, r in load.get("close", {}).items()}
    found = [
        _at_least("Keep-alive hello world", "gunicorn gthread", 6, keepalive),
        _at_least("Keep-alive hello world", "granian", 0.7, keepalive),
        Target("Keep-alive hello world", "how far from nginx",
               f"{fmt_ratio(ratio(keepalive.get(BASE), keepalive.get('nginx')))} nginx", None),
        _at_least("`Connection: close`", "gunicorn sync", 2.5, close),
        _at_least("`Connection: close`", "granian", 0.9, close),
    ]
    fraction = idle_fraction(load, BASE)
    found.append(Target("10,000 idle keep-alive clients", "throughput ≥ 90% of keep-alive",
                        "n/a" if fraction is None else f"{fraction:.0%}",
                        None if fraction is None else fraction >= 0.9))
    mixed = load.get("mixed", {})
    p99 = ratio(fast_latency_ms(mixed.get(BASE, []), 99), fast_latency_ms(mixed.get("gunicorn gthread", []), 99))
    found.append(Target("Mixed load, p99 of fast requests", f"≤ 0.5{TIMES} gunicorn gthread's",
                        f"{fmt_ratio(p99)} gunicorn gthread's", None if p99 is None else p99 <= 0.5))
    rate = results.get("handoff", {}).get("streaming_per_s")
    found.append(Target("Handoffs", "≥ 50,000/s", "n/a" if rate is None else f"{rate:,.0f}/s",
                        None if rate is None else rate >= 50_000))
    found.extend(_memory_targets(results.get("memory", {})))
    found.append(_cold_target(results.get("cold", {})))
    return found


def _memory_targets(memory: dict[str, Any]) -> list[Target]:
    if not memory:
        return []
    sup = memory["no_preload"]["supervisor_rss"]
    extra = memory["preload"]["worker_uss_3"]
    return [Target("Supervisor RSS", "≤ 25 MB", f"{sup / MB:.1f} MB", sup <= 25 * MB),
            Target("Extra worker with `--preload`", "≤ 3 MB USS", f"{extra / MB:.2f} MB", extra <= 3 * MB)]


def _cold_target(cold: dict[str, list[float]]) -> Target:
    ours, theirs = median(cold.get(BASE, [])), median(cold.get("gunicorn", []))
    if ours is None or theirs is None:
        return Target("Cold activation latency", "≤ 150 ms median, below gunicorn's", "n/a", None)
    return Target("Cold activation latency", "≤ 150 ms median, below gunicorn's",
                  f"{ours:.0f} ms (gunicorn {theirs:.0f} ms)", ours <= 150 and ours < theirs)
