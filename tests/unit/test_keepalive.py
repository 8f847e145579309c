"""A WebSocket session's pings, with no socket and no clock: when each goes, what answers it, and when the
client is taken for gone."""

from __future__ import annotations

from sockact.asgi.keepalive import GONE, PING, Pinger, Schedule


def test_no_pings_before_the_session_opens_nor_with_an_interval_of_zero():
    assert Pinger(20.0, 20.0).at(1e9) is None  # not started: the app has not accepted
    off = Pinger(0.0, 20.0)
    assert off.start(0.0) == 0.0
    assert off.at(1e9) is None and off.due_at == 0.0


def test_a_ping_every_interval_while_each_is_answered():
    pinger = Pinger(20.0, 10.0)
    assert pinger.start(100.0) == 120.0
    assert pinger.at(119.9) is None
    payloads = []
    now = 120.0
    for _ in range(5):
        assert pinger.at(now) is PING
        assert pinger.due_at == now + 10.0  # its answer's deadline
        payloads.append(pinger.payload)
        assert pinger.pong(pinger.payload)
        assert pinger.due_at == now + 20.0  # the next ping: an interval after this one went
        assert pinger.at(now + 19.9) is None
        now += 20.0
    assert len(set(payloads)) == 5 and all(payloads)


def test_no_answer_within_the_timeout_is_a_client_gone():
    pinger = Pinger(20.0, 10.0)
    pinger.start(0.0)
    assert pinger.at(20.0) is PING
    assert pinger.at(29.9) is None
    assert pinger.at(30.0) is GONE
    assert pinger.due_at == 0.0 and pinger.at(1e9) is None  # once


def test_only_the_pong_to_the_ping_awaited_answers_it():
    pinger = Pinger(20.0, 10.0)
    pinger.start(0.0)
    assert not pinger.pong(b"")  # unsolicited: none awaited
    assert pinger.at(20.0) is PING
    first = pinger.payload
    assert not pinger.pong(b"\0\0\0\0")  # not its payload
    assert pinger.pong(first)
    assert not pinger.pong(first)  # answered already
    assert pinger.at(40.0) is PING
    assert not pinger.pong(first)  # the old ping's pong answers none since
    assert pinger.at(50.0) is GONE


def test_any_byte_from_the_client_since_the_ping_says_it_is_there():
    # Its pong may wait unparsed (the app does not receive): the bytes came all the same.
    pinger = Pinger(20.0, 10.0)
    pinger.start(0.0)
    pinger.heard = True  # before the ping: says nothing of the client since
    assert pinger.at(20.0) is PING
    pinger.heard = True
    assert pinger.at(30.0) is None  # heard: the next ping at 40, an interval after this one
    assert pinger.due_at == 40.0
    assert pinger.at(40.0) is PING
    assert pinger.at(50.0) is GONE  # nothing since that one


def test_an_interval_shorter_than_the_timeout_pings_on_time_once_answered():
    pinger = Pinger(5.0, 20.0)
    pinger.start(0.0)
    assert pinger.at(5.0) is PING
    pinger.heard = True  # its pong came, unparsed
    assert pinger.at(25.0) is PING  # the one due at 10 goes at once
    assert pinger.due_at == 45.0
    assert pinger.pong(pinger.payload) and pinger.due_at == 30.0


def test_a_timeout_of_zero_pings_without_waiting_for_answers():
    pinger = Pinger(20.0, 0.0)
    pinger.start(0.0)
    for now in (20.0, 40.0, 60.0):
        assert pinger.at(now) is PING
        assert pinger.payload == b"" and pinger.due_at == now + 20.0


class Session:
    """What a schedule holds: any object it may refer to weakly."""


def test_the_schedule_gives_each_deadline_that_has_come_once_earliest_first():
    schedule: Schedule[Session] = Schedule()
    a, b, c = Session(), Session(), Session()
    schedule.add(30.0, a)
    schedule.add(10.0, b)
    schedule.add(20.0, c)
    schedule.add(20.0, a)  # a's deadline moved: its old entry comes out at 30 and the caller drops it
    assert list(schedule.due(5.0)) == []
    assert list(schedule.due(20.0)) == [(10.0, b), (20.0, c), (20.0, a)]
    assert list(schedule.due(20.0)) == []  # each once
    assert len(schedule) == 1
    assert list(schedule.due(1e9)) == [(30.0, a)]
    assert not schedule


def test_a_session_that_ended_leaves_the_schedule_with_its_memory():
    schedule: Schedule[Session] = Schedule()
    ended, open_one = Session(), Session()
    schedule.add(10.0, ended)
    schedule.add(10.0, open_one)
    del ended  # nothing but the schedule refers to it: it is not kept for its deadline
    assert list(schedule.due(10.0)) == [(10.0, open_one)]
