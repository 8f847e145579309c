"""The life of a connection in a worker, with all of its transitions in one table.

Rule of this module, as of sockact/policy/states.py: a connection's state changes only along a row
of CONN_TRANSITIONS, read from the state's ``moves``. ``Owned.to()`` (owner.py) is the way, and an
event that the current state does not accept raises InvalidTransition there (a KeyError where a row
is read directly: a plain dict, the cheapest lookup); a keep-alive request's moves,
three a request, read the row without its call, the same way in both runners: the events of
ROW_MOVES, which start no clock from any state, as ``conn.state = conn.state.moves[event][0]``, and
CALL --served--> IDLE, whose clock starts, in ``Owner.served``.

    PREFACE --preface--> FRESH                  (a PROXY header first, then HTTP)
    FRESH/IDLE --bytes--> HEAD                  (part of a request head has come)
    FRESH/HEAD/IDLE --head--> QUEUED --call--> CALL --served--> IDLE
    CALL --sending--> SENDING --sent--> IDLE    (its response's tail in the outbox, the loop writes it: WSGI)
    FRESH/HEAD/IDLE --buffer--> BODY --body--> QUEUED    (the loop reads the body: body_buffer, body_spool)
    FRESH/HEAD/IDLE --answer--> IDLE            (answered on the loop: the health path)
    HEAD/IDLE/BODY --unread--> UNREAD --taken--> QUEUED, or --serve--> CALL
                                                (its client took none of the last answers: WSGI)
    any open state --closing--> CLOSING --close--> CLOSED    (an answer going out, then lingering)
    any state but CALL, UNREAD, SENDING and CLOSING --hand_back--> HANDED     (a stall: back to the supervisor)
    FRESH/IDLE --park--> HANDED                 (idle at a request boundary: parked)
    any live state --close--> CLOSED

Which thread may touch the fd in each state is written in docs/architecture.md.
"""

from __future__ import annotations

import enum

from sockact.policy.states import InvalidTransition

__all__ = ["BODY", "CALL", "CLOSED", "CLOSING", "CONN_TRANSITIONS", "FRESH", "HANDED", "HEAD", "IDLE", "PREFACE",
           "QUEUED", "ROW_MOVES", "SENDING", "UNREAD", "ConnState", "InvalidTransition"]


class ConnState(enum.Enum):
    PREFACE = "preface"  # reading its PROXY header, within header_timeout
    FRESH = "fresh"  # adopted, no byte of a request yet: header_timeout
    HEAD = "head"  # part of a head is buffered: header_timeout for the whole head
    # Its head is parsed; the loop reads its body, into memory (body_buffer) or a file (body_spool), within
    # io_timeout of the head plus a second per KiB received.
    BODY = "body"
    QUEUED = "queued"  # its request is parsed and waits for an app call to begin
    # Its request is parsed, and its client has left the answers before it in the kernel's buffer (WSGI): the call
    # waits, in the loop, until the client takes some (its socket writable again), within send_timeout. An app
    # thread's write would otherwise wait for it, holding the thread.
    UNREAD = "unread"
    CALL = "call"  # an app call (a thread, or an asyncio task) owns it
    # Its call is over, and the tail of its response waits in its outbox, which the loop writes as the client takes
    # it (WSGI): send_timeout from its start, moved on a second per BODY_MIN_RATE bytes taken. No app thread waits.
    SENDING = "sending"
    IDLE = "idle"  # at a request boundary after a response: parked after park_after
    CLOSING = "closing"  # its last answer goes out, then what the client still sends is dropped
    HANDED = "handed"  # back with the supervisor (parked or handed back): no longer this worker's
    CLOSED = "closed"  # closed by this worker, reported in a DONE

    # Its row of the table as the owner walks it: event -> (next state, whether that state's clock
    # starts). On the member itself: an Enum hashes in Python, too slow for a lookup per request.
    moves: dict[str, tuple[ConnState, bool]]
    reading: bool  # the loop reads it for a request: no call owns it, it is not closing, it is still ours
    between: bool  # reading, between two requests or in a head (not a PROXY header, not a body)


# The members as plain module names, for the per-request path: on Python 3.11 ``ConnState.CALL`` costs
# 0.3 µs (the Enum class's attribute machinery), a module name a twentieth of that.
PREFACE, FRESH, HEAD, BODY, QUEUED, UNREAD, CALL, SENDING, IDLE, CLOSING, HANDED, CLOSED = ConnState

_C = ConnState
_OPEN = (_C.PREFACE, _C.FRESH, _C.HEAD, _C.BODY, _C.QUEUED, _C.UNREAD, _C.CALL, _C.SENDING, _C.IDLE)
_WAITING = (_C.FRESH, _C.HEAD, _C.IDLE)  # reading, between calls: where a request can begin

CONN_TRANSITIONS: dict[tuple[ConnState, str], ConnState] = {
    (_C.PREFACE, "preface"): _C.FRESH,
    (_C.FRESH, "bytes"): _C.HEAD,
    (_C.IDLE, "bytes"): _C.HEAD,
    (_C.HEAD, "bytes"): _C.HEAD,
    (_C.HEAD, "idle"): _C.IDLE,  # what came was only the empty lines allowed between requests
    **{(state, "head"): _C.QUEUED for state in _WAITING},
    **{(state, "buffer"): _C.BODY for state in _WAITING},
    **{(state, "answer"): _C.IDLE for state in _WAITING},
    (_C.BODY, "body"): _C.QUEUED,
    (_C.QUEUED, "call"): _C.CALL,
    **{(state, "unread"): _C.UNREAD for state in (_C.HEAD, _C.IDLE, _C.BODY)},
    (_C.UNREAD, "taken"): _C.QUEUED,
    (_C.UNREAD, "serve"): _C.CALL,
    # A request the free loop thread calls the moment it is read (or its body is) never waits (WSGI).
    **{(state, "serve"): _C.CALL for state in (*_WAITING, _C.BODY)},
    (_C.CALL, "served"): _C.IDLE,
    (_C.CALL, "sending"): _C.SENDING,
    (_C.SENDING, "sent"): _C.IDLE,
    **{(state, "closing"): _C.CLOSING for state in _OPEN},
    **{(state, "close"): _C.CLOSED for state in (*_OPEN, _C.CLOSING)},
    **{(state, "hand_back"): _C.HANDED for state in (_C.PREFACE, *_WAITING, _C.BODY, _C.QUEUED)},
    (_C.FRESH, "park"): _C.HANDED,
    (_C.IDLE, "park"): _C.HANDED,
}

# The events a runner moves a connection by with its row read directly (its next head parsed, its call
# begun): into QUEUED or CALL, whose clock none of them starts (test_worker_states checks it), so the
# next state is all the move is.
ROW_MOVES = ("head", "call", "serve")

# The states whose deadline (owner.due) runs from the moment they are entered, except along KEEP_CLOCK:
# one head's deadline counts from its connection's first moment, and a head that grows is the same head.
CLOCKED = frozenset({_C.PREFACE, _C.FRESH, _C.HEAD, _C.BODY, _C.UNREAD, _C.SENDING, _C.IDLE, _C.CLOSING})
KEEP_CLOCK = frozenset({(_C.FRESH, _C.HEAD), (_C.HEAD, _C.HEAD)})

for _state in ConnState:
    _state.reading = _state in (_C.PREFACE, _C.FRESH, _C.HEAD, _C.BODY, _C.IDLE)
    _state.between = _state in _WAITING
    _state.moves = {event: (after, after in CLOCKED and (_state, after) not in KEEP_CLOCK)
                    for (before, event), after in CONN_TRANSITIONS.items() if before is _state}
