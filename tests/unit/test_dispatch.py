"""The dispatch policy, driven by events with no sockets or processes."""

import pytest

from sockact.dispatch import Dispatcher


def test_connection_goes_to_the_worker_idle_longest():
    d: Dispatcher[str, str] = Dispatcher(queue_size=4)
    for w in ("a", "b", "c"):
        assert d.worker_ready(w) is None
    assert d.offer("c1") == ("a", "c1")
    assert d.offer("c2") == ("b", "c2")
    assert d.worker_ready("a") is None  # a is idle again, behind c
    assert d.offer("c3") == ("c", "c3")
    assert d.offer("c4") == ("a", "c4")


def test_only_idle_workers_get_work_and_the_queue_is_fifo():
    d: Dispatcher[str, str] = Dispatcher(queue_size=2)
    d.worker_ready("a")
    assert d.offer("c1") == ("a", "c1")
    assert d.offer("c2") is None
    assert d.offer("c3") is None
    assert d.queued == 2 and not d.accepting
    assert d.worker_ready("a") == ("a", "c2")
    assert d.accepting
    assert d.worker_ready("a") == ("a", "c3")
    assert d.worker_ready("a") is None
    assert d.idle == 1 and d.busy == 0


def test_an_offer_never_overtakes_the_queue():
    d: Dispatcher[str, str] = Dispatcher(queue_size=8)
    d.offer("early")
    d.worker_ready("a")  # takes "early" at once
    d.worker_ready("b")
    assert d.offer("late") == ("b", "late")


def test_gone_and_retiring_workers_get_nothing():
    d: Dispatcher[str, str] = Dispatcher(queue_size=8)
    d.worker_ready("a")
    d.worker_ready("b")
    d.worker_gone("a")
    assert d.offer("c1") == ("b", "c1")
    d.worker_gone("b")  # died while busy
    assert d.busy == 0
    assert d.offer("c2") is None
    assert d.take_queued() == ["c2"]


def test_worker_ready_twice_is_counted_once():
    d: Dispatcher[str, str] = Dispatcher(queue_size=1)
    d.worker_ready("a")
    d.worker_ready("a")
    assert d.idle == 1


def test_queue_size_must_be_positive():
    with pytest.raises(ValueError):
        Dispatcher(queue_size=0)
