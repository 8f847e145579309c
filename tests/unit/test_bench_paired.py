"""bench/paired.py's schedule and figures, and bench/growing.py's ceiling: no server, no wrk."""

import pytest

from bench import growing, load, paired


def test_paired_rounds_alternate_and_flip_the_order_each_round():
    done: list[str] = []
    quiet: list[int] = []

    def run(side: str) -> dict:
        done.append(side)
        return {"req_s": float(len(done))}

    runs = paired.alternate(["a", "b"], range(4), run, lambda: quiet.append(len(done)))
    assert done == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert quiet == list(range(8))  # before every run
    assert runs == {"a": [{"req_s": 1.0}, {"req_s": 4.0}, {"req_s": 5.0}, {"req_s": 8.0}],
                    "b": [{"req_s": 2.0}, {"req_s": 3.0}, {"req_s": 6.0}, {"req_s": 7.0}]}


def test_rounds_are_shared_among_instance_pairs_and_keep_flipping_across_them():
    assert paired.blocks(12, 3) == [range(0, 4), range(4, 8), range(8, 12)]
    assert paired.blocks(10, 3) == [range(0, 3), range(3, 6), range(6, 10)]
    assert paired.blocks(2, 3) == [range(0, 1), range(1, 2)]  # no pair started for no round
    done: list[str] = []
    for block in paired.blocks(6, 2):  # 3 rounds each: the second pair starts with b, round 3 being odd
        paired.alternate(["a", "b"], block, lambda side: done.append(side) or {}, lambda: None)
    assert done == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b", "b", "a"]


def test_a_run_gives_req_s_cpu_per_request_and_the_mixed_means():
    clock = paired.CLOCK_TICKS
    found = paired.figures({"requests": 2000, "duration_us": 2_000_000}, clock // 10, 7)  # 0.1 s of CPU
    assert found == {"req_s": 1000.0, "cpu_us": pytest.approx(50.0), "threads": 7}
    mixed = paired.figures({"requests": 10, "duration_us": 1_000_000, "fast_us": [100, 300], "slow_us": [50_000]},
                           0, 7)
    assert (mixed["fast_mean_ms"], mixed["slow_mean_ms"]) == (0.2, 50.0)
    assert paired.figures({"error": "wrk exited 1"}, 5, 7) == {"error": "wrk exited 1"}
    assert paired.figures({"requests": 0, "duration_us": 1_000_000}, 5, 7) == {"error": "no requests"}


def test_the_mixed_loads_ceiling_is_one_sleep_per_ten_requests_on_each_connection():
    mixed = next(s for s in load.scenarios() if s.key == "mixed")
    assert growing.ceiling(mixed) == 2000.0  # 10 connections x 10 requests per 50 ms


def test_the_paired_sides_are_the_lineups_servers():
    servers = growing.servers()
    assert servers["granian"].argv(8000)[1:3] == ["--interface", "wsgi"]
    assert servers["sockact (max_threads 16)"].argv(8000)[-2:] == ["--max-threads", "16"]
