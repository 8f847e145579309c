"""The dispatch policy, driven by events with no sockets or processes."""

from __future__ import annotations

from sockact.policy.dispatch import Dispatcher


def test_connections_go_to_the_least_loaded_worker_then_round_robin():
    d: Dispatcher[str, str] = Dispatcher(queue_size=4, capacity=10)
    d.add("a")
    d.add("b")
    got = [d.offer(f"c{i}") for i in range(4)]
    assert [w for w, _ in got] == ["a", "b", "a", "b"]
    assert d.load("a") == d.load("b") == 2 and d.held == 4
    d.returned("b")
    d.returned("b")
    assert d.offer("c4") == ("b", "c4")  # b holds fewest


def test_a_busy_worker_still_gets_work_up_to_its_capacity():
    d: Dispatcher[str, str] = Dispatcher(queue_size=2, capacity=2)
    d.add("a")
    assert d.offer("c1") == ("a", "c1")
    assert d.offer("c2") == ("a", "c2")
    assert d.offer("c3") is None and d.queued == 1  # full: queued
    assert d.accepting
    assert d.offer("c4") is None and not d.accepting  # the queue is full: stop accepting
    assert d.returned("a") == [("a", "c3")]  # room again: the oldest queued goes first


def test_several_returned_at_once_make_room_for_as_many_queued_and_never_below_none_held():
    d: Dispatcher[str, str] = Dispatcher(queue_size=4, capacity=3)
    d.add("a")
    for i in range(3):
        d.offer(f"c{i}")
    assert d.offer("q1") is None and d.offer("q2") is None
    assert d.returned("a", 2) == [("a", "q1"), ("a", "q2")]  # a DONE that reports two closed
    assert d.load("a") == 3 and d.held == 3
    assert d.returned("a", 5) == [] and d.load("a") == 0 and d.held == 0  # more than it held: none left


def test_a_paused_worker_gets_nothing_until_it_resumes():
    d: Dispatcher[str, str] = Dispatcher(queue_size=8, capacity=10)
    d.add("a")
    d.add("b")
    d.pause("a")
    assert [d.offer(c)[0] for c in ("c1", "c2")] == ["b", "b"]  # type: ignore[index]
    d.pause("b")
    assert d.offer("c3") is None  # nobody is moving: queued
    assert d.resume("a") == [("a", "c3")]
    assert d.is_available("a") and not d.is_available("b")


def test_an_offer_never_overtakes_the_queue():
    d: Dispatcher[str, str] = Dispatcher(queue_size=8, capacity=1)
    d.add("a")
    d.offer("c1")
    d.offer("c2")  # queued
    d.add("b")  # b takes the queued c2 first
    assert d.queued == 0 and d.load("b") == 1
    assert d.offer("c3") is None


def test_removed_and_forgotten_workers():
    d: Dispatcher[str, str] = Dispatcher(queue_size=8, capacity=10)
    d.add("a")
    d.add("b")
    d.offer("c1")
    d.remove("a")  # retiring: keeps its load until it reports back, gets nothing new
    assert d.offer("c2")[0] == "b"  # type: ignore[index]
    assert d.forget("a") == 1  # it exited holding one connection
    assert d.held == 1
    assert d.returned("a") == []  # a late message from a forgotten worker changes nothing
    assert d.take_queued() == []


def test_bad_sizes_are_refused():
    import pytest

    with pytest.raises(ValueError):
        Dispatcher(queue_size=0, capacity=1)


def test_a_connection_handed_back_keeps_its_place_in_line():
    # Overload: every worker is full, and connections queue. One is handed back with its request
    # read: its age (when its request first needed a worker), not its return, orders it.
    d: Dispatcher[str, str] = Dispatcher(queue_size=8, capacity=1)
    d.add("a")
    assert d.offer("old", 1.0) == ("a", "old")
    for age, conn in ((2.0, "c2"), (3.0, "c3"), (4.0, "c4")):
        assert d.offer(conn, age) is None
    assert d.returned("a") == [("a", "c2")]  # a hands "old" back unserved...
    assert d.offer("old", 1.0) is None  # ...and it queues ahead of the younger ones
    assert d.returned("a") == [("a", "old")]
    assert d.offer("newcomer") is None  # no age: behind everything queued
    assert d.take_queued() == ["c3", "c4", "newcomer"]


def test_equal_ages_are_served_in_order_of_arrival():
    d: Dispatcher[str, str] = Dispatcher(queue_size=8, capacity=1)
    for conn in ("c1", "c2", "c3"):
        assert d.offer(conn, 5.0) is None
    assert d.add("a") == [("a", "c1")]
    assert d.returned("a") == [("a", "c2")]
    assert d.take_queued() == ["c3"]


def test_queued_connections_withdrawn_leave_the_line_and_the_rest_keep_their_order():
    d: Dispatcher[str, str] = Dispatcher(queue_size=8, capacity=1)
    for age, conn in enumerate(["c1", "c2", "c3", "c4"]):
        d.offer(conn, float(age))
    assert sorted(d.waiting()) == ["c1", "c2", "c3", "c4"]
    d.withdraw(["c1", "c3"])  # their head deadline passed
    assert d.queued == 2 and sorted(d.waiting()) == ["c2", "c4"]
    d.add("a")
    assert d.returned("a") == [("a", "c4")]  # c2 went first, then c4 when a had room again


def test_held_is_always_the_sum_of_what_each_worker_holds():
    d: Dispatcher[str, str] = Dispatcher(queue_size=8, capacity=2)
    workers = ("a", "b", "c")

    def check() -> None:
        assert d.held == sum(d.load(w) for w in workers)

    for w in workers[:2]:
        d.add(w)
    for i in range(6):  # four assigned, two queued
        d.offer(f"c{i}")
        check()
    d.returned("a")  # a queued one takes its place
    check()
    d.add("c")  # the last queued one goes to the newcomer
    check()
    d.returned("x")  # unknown: nothing changes
    d.returned("c")
    d.returned("c")  # more than it held: nothing below zero
    check()
    assert d.forget("b") == 2
    check()
    d.add("b")  # back with nothing held
    d.pause("a")
    d.resume("a")
    check()
