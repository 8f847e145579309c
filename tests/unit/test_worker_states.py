"""The worker's connection owner with no sockets and no clock: its state table, every transition and a
refused event in every state, and what is due at each deadline."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sockact.ipc import handoff
from sockact.ipc.scoreboard import IDLE_MARKS, Rest, Scoreboard
from sockact.worker.channel import Closed
from sockact.worker.connstates import CONN_TRANSITIONS, ROW_MOVES, ConnState, InvalidTransition
from sockact.worker.owner import Carrier, Due, Owned, Owner, due

C = ConnState
SITE = SimpleNamespace(header_timeout=10.0, io_timeout=30.0, send_timeout=5.0, proxy_protocol="off", listener="http")
PROXY_SITE = SimpleNamespace(header_timeout=10.0, io_timeout=30.0, proxy_protocol="v1")
EVENTS = sorted({event for _, event in CONN_TRANSITIONS})


class Conn(Owned):
    __slots__ = ("data", "out", "spooled")

    def __init__(self, conn_id: int = 1, state: ConnState = C.FRESH, since: float = 0.0, data: bytes = b"",
                 out: bool = False, spooled: bool = False) -> None:
        super().__init__(handoff.Message(handoff.CONN, conn_id=conn_id), SITE, state, since)  # type: ignore[arg-type]
        self.data = data
        self.out = out  # output still going out (the ASGI runner's buffer)
        self.spooled = spooled  # its request body is in a file of the worker's (the WSGI runner's body_spool)

    def unparsed(self) -> bytes:
        return self.data

    @property
    def flushed(self) -> bool:
        return not self.out

    @property
    def movable(self) -> bool:
        return not self.spooled


class NoChannel:
    def fileno(self) -> int:
        raise AssertionError("nothing is sent in these tests")


def owner(park_after: float = 0.1, max_requests: int = 0) -> Owner[Conn]:
    return Owner(Closed(NoChannel()), [park_after], max_requests)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the table


@pytest.mark.parametrize(("state", "event"), sorted(CONN_TRANSITIONS, key=lambda k: (k[0].value, k[1])))
def test_every_transition_in_the_table_is_taken(state, event):
    conn = Conn(state=state)
    assert conn.to(event, now=5.0) is CONN_TRANSITIONS[state, event]


@pytest.mark.parametrize("state", list(ConnState))
def test_each_state_refuses_the_events_it_has_no_row_for(state):
    refused = [event for event in EVENTS if (state, event) not in CONN_TRANSITIONS]
    assert refused, f"{state} accepts every event"
    for event in refused:
        conn = Conn(state=state)
        with pytest.raises(InvalidTransition):
            conn.to(event)
        assert conn.state is state  # nothing changed


@pytest.mark.parametrize("event", ROW_MOVES)
def test_the_moves_a_runner_reads_from_the_row_start_no_clock(event):
    rows = [state for state in ConnState if (state, event) in CONN_TRANSITIONS]
    assert rows
    for state in rows:
        assert state.moves[event] == (CONN_TRANSITIONS[state, event], False)
        conn = Conn(state=state, since=1.0)
        conn.to(event, now=5.0)
        assert conn.since == 1.0


def test_a_row_read_directly_refuses_an_event_the_state_has_no_row_for():
    with pytest.raises(KeyError):
        C.IDLE.moves["call"]


def test_served_brings_a_persisting_call_back_to_idle_with_its_clock_and_counts_it():
    o = owner()
    conn = Conn(state=C.CALL, since=1.0)
    assert not o.served(conn, persists=True)
    assert conn.state is C.IDLE and conn.since > 1.0 and conn.served == 1 and o.requests == 1
    ending = Conn(conn_id=2, state=C.CALL, since=1.0)
    o.served(ending, persists=False)  # its runner closes it
    assert ending.state is C.CALL and ending.since == 1.0 and o.requests == 2
    with pytest.raises(KeyError):
        o.served(Conn(conn_id=3, state=C.QUEUED), persists=True)


def test_handed_and_closed_are_ends():
    for state in (C.HANDED, C.CLOSED):
        assert not [event for (s, event) in CONN_TRANSITIONS if s is state]


def test_a_call_cannot_be_handed_back_or_parked():
    assert (C.CALL, "hand_back") not in CONN_TRANSITIONS
    assert (C.CALL, "park") not in CONN_TRANSITIONS
    assert (C.CLOSING, "hand_back") not in CONN_TRANSITIONS


def test_a_whole_request_goes_round_and_its_clock_restarts_where_it_should():
    conn = Conn(state=C.FRESH, since=0.0)
    conn.to("bytes", now=1.0)
    assert (conn.state, conn.since) == (C.HEAD, 0.0)  # one head, one deadline from the connection's start
    conn.to("bytes", now=2.0)
    assert conn.since == 0.0
    conn.to("buffer", now=3.0)
    assert (conn.state, conn.since) == (C.BODY, 3.0)
    conn.to("body", now=4.0)
    conn.to("call", now=5.0)
    conn.to("served", now=6.0)
    assert (conn.state, conn.since) == (C.IDLE, 6.0)
    conn.to("bytes", now=7.0)
    assert (conn.state, conn.since) == (C.HEAD, 7.0)  # the next head's deadline starts with its first byte


# ---------------------------------------------------------------------- deadlines


def test_a_client_that_sent_nothing_is_dropped_at_header_timeout_not_kept_for_park_after():
    conn = Conn(state=C.FRESH, since=0.0)
    assert due(conn, 9.9, park_after=0.1, stopping=False) is None
    assert due(conn, 10.1, park_after=0.1, stopping=False) is Due.DROP
    assert due(conn, 10.1, park_after=60.0, stopping=False) is Due.DROP


def test_a_keepalive_connection_idle_after_a_request_is_parked_after_park_after():
    conn = Conn(state=C.IDLE, since=0.0)
    assert due(conn, 0.05, park_after=0.1, stopping=False) is None
    assert due(conn, 0.2, park_after=0.1, stopping=False) is Due.PARK
    assert due(conn, 20.0, park_after=30.0, stopping=False) is None  # not header_timeout: it asked nothing


def test_stopping_parks_a_served_idle_connection_at_once():
    conn = Conn(state=C.IDLE, since=0.0)
    assert due(conn, 0.0, park_after=5.0, stopping=True) is None  # nothing served here yet
    conn.served = 1
    assert due(conn, 0.0, park_after=5.0, stopping=True) is Due.PARK


def test_a_partial_head_gets_its_408_at_header_timeout():
    conn = Conn(state=C.HEAD, since=0.0)
    assert due(conn, 9.0, park_after=0.1, stopping=False) is None
    assert due(conn, 10.5, park_after=0.1, stopping=False) is Due.HEAD_TIMEOUT


def test_a_buffered_body_has_a_total_deadline_that_bytes_do_not_move():
    conn = Conn(state=C.HEAD, since=0.0)
    conn.to("buffer", now=1.0)
    for second in range(2, 31, 2):  # a byte every 2 s: no state change, no new clock
        assert due(conn, float(second), park_after=0.1, stopping=False) is None
    assert due(conn, 31.5, park_after=0.1, stopping=False) is Due.BODY_TIMEOUT


def test_a_proxy_header_has_header_timeout():
    conn = Conn(state=C.PREFACE, since=0.0)
    assert due(conn, 10.5, park_after=0.1, stopping=False) is Due.REFUSE_PREFACE


def test_a_request_whose_client_takes_none_of_the_answers_before_it_is_let_go_at_send_timeout():
    conn = Conn(state=C.IDLE, since=0.0)
    conn.to("unread", now=100.0)  # its clock starts when it begins to wait for its client
    assert due(conn, 104.9, park_after=0.1, stopping=True) is None
    assert due(conn, 105.5, park_after=0.1, stopping=False) is Due.SEND_TIMEOUT
    conn.to("taken", now=105.6)
    assert conn.state is C.QUEUED and due(conn, 1e9, park_after=0.1, stopping=False) is None
    o = owner()
    waiting = o.add(Conn(1, C.UNREAD))
    assert list(o.stall_hand_backs()) == []  # it waits for its client, not for a thread: a stall does not move it
    assert o.retire() == [] and waiting.state is C.UNREAD  # it finishes first, as a call does


def test_a_response_tail_in_the_outbox_is_let_go_at_send_timeout_and_never_moves_until_out():
    conn = Conn(state=C.CALL, since=0.0)
    conn.to("sending", now=100.0)  # its call is over: the loop writes its outbox, from now on
    assert due(conn, 104.9, park_after=0.1, stopping=True) is None
    assert due(conn, 105.5, park_after=0.1, stopping=False) is Due.SEND_TIMEOUT
    o = owner()
    sending = o.add(Conn(1, C.SENDING))
    assert list(o.stall_hand_backs()) == []  # a cut response cannot go to another worker
    assert o.retire() == [] and sending.state is C.SENDING  # it finishes first, as a call does
    sending.to("sent", now=106.0)
    assert sending.state is C.IDLE and due(sending, 106.2, park_after=0.1, stopping=False) is Due.PARK


@pytest.mark.parametrize("state", [C.QUEUED, C.CALL, C.HANDED, C.CLOSED])
def test_states_without_a_deadline_here(state):
    assert due(Conn(state=state, since=0.0), 1e9, park_after=0.1, stopping=True) is None


def test_a_closing_connection_is_looked_at_on_every_pass():
    assert due(Conn(state=C.CLOSING, since=0.0), 0.0, park_after=0.1, stopping=False) is Due.CLOSING


def test_expired_lists_each_due_connection_once():
    o = owner(park_after=0.1)
    fresh = o.add(Conn(1, C.FRESH, since=0.0))
    idle = o.add(Conn(2, C.IDLE, since=0.0))
    o.add(Conn(3, C.CALL, since=0.0))
    assert sorted(((c.msg.conn_id, what) for c, what in o.expired(0.5, stopping=False)),
                  key=lambda x: x[0]) == [(2, Due.PARK)]
    assert sorted(((c.msg.conn_id, what) for c, what in o.expired(11.0, stopping=False)),
                  key=lambda x: x[0]) == [(1, Due.DROP), (2, Due.PARK)]
    assert fresh.state is C.FRESH and idle.state is C.IDLE  # deciding changes nothing


# ---------------------------------------------------------------------- arriving and leaving


def test_arrival():
    plain = handoff.Message(handoff.CONN, conn_id=1)
    assert Owner.arrival(plain, SITE, 5.0) == (C.FRESH, 5.0)  # type: ignore[arg-type]
    assert Owner.arrival(handoff.Message(handoff.CONN, conn_id=1, data=b"GE"), SITE, 5.0) == (C.HEAD, 5.0)  # type: ignore[arg-type]
    assert Owner.arrival(plain, PROXY_SITE, 5.0) == (C.PREFACE, 5.0)  # type: ignore[arg-type]
    # Accepted at 2.0, it waited for a worker: nothing sent yet, and its header_timeout runs from its accept.
    accepted = handoff.Message(handoff.CONN, conn_id=1, head_started=2.0)
    assert Owner.arrival(accepted, SITE, 5.0) == (C.FRESH, 2.0)  # type: ignore[arg-type]
    assert Owner.arrival(accepted, PROXY_SITE, 5.0) == (C.PREFACE, 2.0)  # type: ignore[arg-type]


def test_a_head_handed_back_keeps_its_deadline_in_the_next_worker():
    begun = handoff.Message(handoff.CONN, conn_id=1, data=b"GET / HTTP/1.1\r\nHo", head_started=2.0)
    state, since = Owner.arrival(begun, SITE, 9.0)  # type: ignore[arg-type]
    assert (state, since) == (C.HEAD, 2.0)
    assert due(Conn(state=state, since=since), 12.5, park_after=0.1, stopping=False) is Due.HEAD_TIMEOUT


def test_a_stall_hand_back_carries_when_a_head_began_even_after_the_connection_has_left():
    o = owner()
    o.add(Conn(1, C.HEAD, since=3.0, data=b"GET / HTTP/1.1\r\n"))
    o.add(Conn(2, C.QUEUED, since=4.0, data=b"GET / HTTP/1.1\r\n\r\n"))
    sent = []
    for conn, _, head_started in o.stall_hand_backs():
        o.gone(conn, "hand_back")  # as a runner does before it sends
        sent.append((conn.msg.conn_id, head_started))
    assert sorted(sent) == [(1, 3.0), (2, 0.0)]


def test_what_travels_with_a_connection_handed_back_is_the_start_of_a_head_still_coming():
    assert Conn(state=C.HEAD, since=3.0).head_started == 3.0
    assert Conn(state=C.PREFACE, since=3.0).head_started == 3.0
    assert Conn(state=C.FRESH, since=3.0).head_started == 3.0  # nothing sent since its accept: not idle
    for state in (C.IDLE, C.BODY, C.QUEUED):
        assert Conn(state=state, since=3.0).head_started == 0.0


def test_a_stalled_retiring_or_recycling_worker_takes_nothing_new():
    o = owner()
    assert o.takes(stalled=False)
    assert not o.takes(stalled=True)
    o.retiring = True
    assert not o.takes(stalled=False)
    o = owner()
    o.recycling = True
    assert not o.takes(stalled=False)


def test_a_stall_sends_back_all_but_calls_closes_unflushed_and_what_does_not_fit():
    o = owner()
    for conn_id, state in enumerate(ConnState, 1):
        o.add(Conn(conn_id, state, data=b"x"))
    o.add(Conn(50, C.IDLE, out=True))  # its last response is still going out
    o.add(Conn(51, C.BODY, data=b"x" * (handoff.MAX_DATA + 1)))  # more than a message carries
    chosen = {conn.state for conn, _, _ in o.stall_hand_backs()}
    assert chosen == {C.PREFACE, C.FRESH, C.HEAD, C.BODY, C.QUEUED, C.IDLE}
    assert all(data == b"x" for _, data, _ in o.stall_hand_backs())
    assert len(list(o.stall_hand_backs())) == 6


def test_a_stall_keeps_a_connection_whose_body_is_in_a_file():
    # Its unparsed bytes are what follows the body: sent back alone, its request would be lost.
    o = owner()
    o.add(Conn(1, C.BODY, spooled=True))
    o.add(Conn(2, C.QUEUED, spooled=True))
    o.add(Conn(3, C.QUEUED))
    assert [conn.msg.conn_id for conn, _, _ in o.stall_hand_backs()] == [3]


def test_retiring_parks_the_idle_and_fresh_and_lets_the_rest_finish():
    o = owner()
    for conn_id, state in enumerate((C.FRESH, C.IDLE, C.HEAD, C.BODY, C.QUEUED, C.CALL, C.CLOSING), 1):
        o.add(Conn(conn_id, state))
    parked = o.retire()
    assert o.retiring
    assert sorted(c.state.value for c in parked) == ["fresh", "idle"]
    for conn in parked:
        o.gone(conn, "park")
    assert not o.done
    assert all(c.state is C.HANDED for c in parked)


def test_closed_connections_are_batched_for_one_done_and_handed_ones_are_not():
    o = owner()
    a, b, c, d = (o.add(Conn(i, C.IDLE)) for i in (1, 2, 3, 4))
    o.gone(a, "close")
    o.gone(b, "park")
    o.gone(c, "close")
    o.gone(d, "hand_back")  # a stall's: the supervisor holds it again, it is not done
    assert o.closed.ids == [1, 3]
    assert not o.held
    o.retiring = True
    assert o.done


def test_max_requests_says_recycle_once():
    o = owner(max_requests=2)
    conn = o.add(Conn(1, C.CALL))
    assert not o.served(conn, False)
    assert o.served(conn, False)
    assert o.recycling
    assert not o.served(conn, False)
    assert conn.served == 3


def test_max_requests_zero_never_recycles():
    o = owner(max_requests=0)
    conn = o.add(Conn(1, C.CALL))
    assert not any(o.served(conn, False) for _ in range(1000))



def test_the_states_the_loop_reads_for_a_request():
    assert {state for state in ConnState if state.reading} == {C.PREFACE, C.FRESH, C.HEAD, C.BODY, C.IDLE}


class Recorder(Carrier[Conn]):
    """A runner that only notes what the owner's decisions made it do."""

    def __init__(self, o: Owner[Conn], stopping: bool = False) -> None:
        self.owner, self.stopping, self.did = o, stopping, []

    def _release(self, conn: Conn) -> None:
        self.did.append(("release", conn.msg.conn_id))

    def _close(self, conn: Conn) -> None:
        self.did.append(("close", conn.msg.conn_id))

    def _time_out(self, conn: Conn, what: Due) -> None:
        self.did.append((what.value, conn.msg.conn_id))

    def _closing(self, conn: Conn, now: float) -> None:
        self.did.append(("closing", conn.msg.conn_id))


def test_a_runner_carries_out_what_is_due_and_nothing_else():
    o = owner(park_after=0.1)
    for conn_id, state in enumerate((C.PREFACE, C.FRESH, C.HEAD, C.BODY, C.QUEUED, C.CALL, C.IDLE, C.CLOSING), 1):
        o.add(Conn(conn_id, state, since=0.0))
    runner = Recorder(o)
    runner._carry_out_deadlines(5.0)  # past park_after only
    assert sorted(runner.did) == [("closing", 8), ("release", 7)]
    runner.did.clear()
    runner._carry_out_deadlines(40.0)  # past header_timeout and io_timeout too
    assert sorted(runner.did) == sorted([("close", 1), ("drop", 2), ("head_timeout", 3), ("body_timeout", 4),
                                         ("release", 7), ("closing", 8)])  # a refused PROXY header: closed


def test_retiring_releases_only_what_the_owner_chose():
    o = owner()
    for conn_id, state in enumerate((C.FRESH, C.IDLE, C.HEAD, C.CALL), 1):
        o.add(Conn(conn_id, state))
    runner = Recorder(o)
    runner._park_on_retire()
    assert sorted(runner.did) == [("release", 1), ("release", 2)]
    assert o.retiring


def test_a_connection_marks_itself_where_the_scoreboard_reads_its_rest() -> None:
    # The runners' connections write their idle marks themselves (Owned.rest), where the supervisor reads
    # them (Scoreboard.resting).
    board = Scoreboard(1)
    slot = board.allocate()
    writer = board.writer(slot, 0)
    earlier = Conn(7, C.IDLE)
    earlier.marked(writer.mark_of(7))
    earlier.rest(99)  # an earlier stay's mark
    assert board.resting(slot) == {7: Rest(99, False)}
    conn = Conn(7, C.IDLE)
    conn.marked(writer.mark_of(7))
    assert board.resting(slot) == {}  # wiped at adoption
    conn.rest(120)
    assert board.resting(slot) == {7: Rest(120, False)}
    conn.rest(300, in_head=True)
    assert board.resting(slot) == {7: Rest(300, True)}
    conn.rest(310, read=True)  # a head read whole behind a whole response (an ASGI call's read_behind)
    assert board.resting(slot) == {7: Rest(310, False, True)}
    other = Conn(7 + IDLE_MARKS, C.IDLE)
    other.marked(writer.mark_of(7 + IDLE_MARKS))
    other.rest(5)  # another connection takes its place
    assert board.resting(slot) == {7 + IDLE_MARKS: Rest(5, False)}
    board.close()
