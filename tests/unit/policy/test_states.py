"""The supervisor's transition tables (states.py), driven with no pool and no process: every row is
taken, and every state refuses the events it has no row for."""

from __future__ import annotations

import enum

import pytest

from sockact.policy.states import (
    ENDING,
    LIVE,
    PHASE_TRANSITIONS,
    WORKER_TRANSITIONS,
    InvalidTransition,
    Phase,
    PhaseEvent,
    WorkerEvent,
    WorkerState,
    advance,
)

TABLES = [(WORKER_TRANSITIONS, WorkerState, WorkerEvent), (PHASE_TRANSITIONS, Phase, PhaseEvent)]


def rows(table: dict) -> list:
    return sorted(table, key=lambda k: (k[0].value, k[1].value))


@pytest.mark.parametrize(("table", "state", "event"),
                         [(table, *row) for table, _, _ in TABLES for row in rows(table)],
                         ids=lambda x: x.value if isinstance(x, enum.Enum) else "")
def test_every_transition_in_the_table_is_taken(table, state, event):
    assert advance(table, state, event) is table[state, event]


@pytest.mark.parametrize(("table", "state", "events"),
                         [(table, state, events) for table, states, events in TABLES for state in states],
                         ids=lambda x: x.value if isinstance(x, enum.Enum) else "")
def test_each_state_refuses_the_events_it_has_no_row_for(table, state, events):
    refused = [event for event in events if (state, event) not in table]
    assert refused, f"{state} accepts every event"
    for event in refused:
        with pytest.raises(InvalidTransition, match=f"'{event.value}' in state {state.value}"):
            advance(table, state, event)


def test_every_event_of_an_enum_appears_in_its_table():
    for table, _, events in TABLES:
        assert {event for _, event in table} == set(events)


def test_the_ends_accept_nothing_but_an_abort_or_a_quick_stop():
    assert [e for (s, e) in WORKER_TRANSITIONS if s is WorkerState.ABORTED] == []
    assert [e for (s, e) in WORKER_TRANSITIONS if s is WorkerState.OVERDUE] == []
    assert [e for (s, e) in PHASE_TRANSITIONS if s is Phase.STOPPING] == [PhaseEvent.QUICK]
    assert [e for (s, e) in PHASE_TRANSITIONS if s is Phase.HALTED] == []
    assert {e for (s, e) in WORKER_TRANSITIONS if s is WorkerState.RETIRING} == {WorkerEvent.ABORT,
                                                                                  WorkerEvent.READY}


def test_a_worker_stalls_and_moves_again_without_leaving_service():
    state = advance(WORKER_TRANSITIONS, WorkerState.BOOTING, WorkerEvent.READY)
    for event, expected in ((WorkerEvent.STALL, WorkerState.STALLED), (WorkerEvent.STALL, WorkerState.STALLED),
                            (WorkerEvent.RESUME, WorkerState.READY), (WorkerEvent.RESUME, WorkerState.READY)):
        state = advance(WORKER_TRANSITIONS, state, event)
        assert state is expected and state in LIVE


def test_a_reload_goes_round_to_serving_either_way():
    for end in (PhaseEvent.RELOADED, PhaseEvent.RELOAD_FAILED):
        phase = Phase.STARTING
        for event in (PhaseEvent.SERVING, PhaseEvent.HUP, PhaseEvent.HUP, end):
            phase = advance(PHASE_TRANSITIONS, phase, event)
        assert phase is Phase.SERVING


def test_a_stop_announced_with_drain_delay_lets_a_start_or_a_reload_complete_then_drains():
    for events in ((PhaseEvent.ANNOUNCE, PhaseEvent.SERVING),
                   (PhaseEvent.SERVING, PhaseEvent.HUP, PhaseEvent.ANNOUNCE, PhaseEvent.RELOADED),
                   (PhaseEvent.SERVING, PhaseEvent.HUP, PhaseEvent.ANNOUNCE, PhaseEvent.RELOAD_FAILED)):
        phase = Phase.STARTING
        for event in events:
            phase = advance(PHASE_TRANSITIONS, phase, event)
        assert phase is Phase.LEAVING
        for refused in (PhaseEvent.HUP, PhaseEvent.ANNOUNCE):
            with pytest.raises(InvalidTransition):
                advance(PHASE_TRANSITIONS, phase, refused)
        assert advance(PHASE_TRANSITIONS, phase, PhaseEvent.TERM) is Phase.DRAINING


def test_only_an_app_that_never_served_halts():
    halting = {s for (s, e) in PHASE_TRANSITIONS if e is PhaseEvent.HALT}
    assert halting == {Phase.STARTING, Phase.LEAVING}


def test_ending_phases_are_those_a_stop_leads_to():
    stops = {PHASE_TRANSITIONS[s, e] for (s, e) in PHASE_TRANSITIONS
             if e in (PhaseEvent.TERM, PhaseEvent.QUICK, PhaseEvent.HALT)}
    assert stops == ENDING


def test_live_states_are_those_that_retire():
    assert {s for (s, e) in WORKER_TRANSITIONS if e is WorkerEvent.RETIRE} == LIVE
