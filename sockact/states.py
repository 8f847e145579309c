"""The state machines of sockact, each with all of its transitions in one table.

Rule of this module: a state changes only through ``advance()``, and only along a row of
its table. An event that the current state does not accept raises InvalidTransition,
which the caller logs; nothing changes state silently.

Worker (one process, seen from the supervisor):

    BOOTING --ready--> READY <--stall/resume--> BUSY
    any live state --retire--> RETIRING      (EOF on its channel: finish, hand back, exit)
    any live state --abort--> ABORTED        (stuck past timeout, or boot overdue: killed)

BUSY means the worker is moving no more: every app thread has been inside one call for
longer than handback_after. It keeps its connections in flight but gets no new ones.

Supervisor phase:

    STARTING --serving--> SERVING --hup--> RELOADING --reloaded/reload_failed--> SERVING
    STARTING/SERVING/RELOADING --term--> DRAINING
    any --quick--> STOPPING
"""

from __future__ import annotations

import enum
from typing import TypeVar


class InvalidTransition(Exception):
    """An event arrived that the current state does not accept."""


class WorkerState(enum.Enum):
    BOOTING = "booting"
    READY = "ready"
    BUSY = "busy"
    RETIRING = "retiring"
    ABORTED = "aborted"


class Phase(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    RELOADING = "reloading"
    DRAINING = "draining"
    STOPPING = "stopping"


_W = WorkerState
WORKER_TRANSITIONS: dict[tuple[WorkerState, str], WorkerState] = {
    (_W.BOOTING, "ready"): _W.READY,
    (_W.READY, "stall"): _W.BUSY,
    (_W.BUSY, "resume"): _W.READY,
    (_W.BUSY, "stall"): _W.BUSY,
    (_W.READY, "resume"): _W.READY,
    **{(state, "retire"): _W.RETIRING for state in (_W.BOOTING, _W.READY, _W.BUSY)},
    **{(state, "abort"): _W.ABORTED for state in (_W.BOOTING, _W.READY, _W.BUSY, _W.RETIRING)},
    # A retiring worker's late READY (it was still booting when retired) changes nothing.
    (_W.RETIRING, "ready"): _W.RETIRING,
}

_P = Phase
PHASE_TRANSITIONS: dict[tuple[Phase, str], Phase] = {
    (_P.STARTING, "serving"): _P.SERVING,
    (_P.SERVING, "hup"): _P.RELOADING,
    (_P.RELOADING, "hup"): _P.RELOADING,
    (_P.RELOADING, "reloaded"): _P.SERVING,
    (_P.RELOADING, "reload_failed"): _P.SERVING,
    **{(phase, "term"): _P.DRAINING for phase in (_P.STARTING, _P.SERVING, _P.RELOADING)},
    **{(phase, "quick"): _P.STOPPING for phase in Phase},
}

S = TypeVar("S", bound=enum.Enum)

LIVE = frozenset({_W.BOOTING, _W.READY, _W.BUSY})  # counted towards the pool's size


def advance(table: dict[tuple[S, str], S], state: S, event: str) -> S:
    """The state after ``event``; raises InvalidTransition when ``state`` does not accept it."""
    try:
        return table[state, event]
    except KeyError:
        raise InvalidTransition(f"{event!r} in state {state.value}") from None
