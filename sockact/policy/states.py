"""The state machines of sockact, each with all of its transitions in one table.

Rule of this module: a state changes only through ``advance()``, and only along a row of
its table. An event that the current state does not accept raises InvalidTransition,
which the caller logs; nothing changes state silently.

Worker (one process, seen from the supervisor):

    BOOTING --ready--> READY <--stall/resume--> STALLED
    any live state --retire--> RETIRING      (EOF on its channel: finish, hand back, exit)
    any serving or retiring state --abort--> ABORTED   (stuck or frozen past timeout: SIGABRT, then SIGKILL)
    BOOTING --boot_timeout--> OVERDUE        (not ready within timeout: SIGABRT, then SIGKILL; a failed boot)

STALLED means the worker is moving no more: every app thread has been inside one call for
longer than handback_after. It keeps its connections in flight but gets no new ones.
("busy" is another idea: a thread, or a call, that is inside the app.)

Supervisor phase:

    STARTING --serving--> SERVING --hup--> RELOADING --reloaded/reload_failed--> SERVING
    STARTING/SERVING/RELOADING --announce--> LEAVING --term--> DRAINING
    STARTING/SERVING/RELOADING --term--> DRAINING
    STARTING/LEAVING --halt--> HALTED        (the app cannot load: no respawn loop)
    any but HALTED --quick--> STOPPING

LEAVING is drain_delay: a stop was asked, and until the delay is over the workers serve on
while their health path answers 503, so that load balancers take the host out first. A start
or a reload under way when the stop was announced still completes. DRAINING, STOPPING and
HALTED end the supervisor (ENDING).
"""

from __future__ import annotations

import enum
from typing import TypeVar


class InvalidTransition(Exception):
    """An event arrived that the current state does not accept."""


class WorkerState(enum.Enum):
    BOOTING = "booting"
    READY = "ready"
    STALLED = "stalled"
    RETIRING = "retiring"
    ABORTED = "aborted"
    OVERDUE = "overdue"


class WorkerEvent(enum.Enum):
    READY = "ready"  # its READY message: the app is imported
    STALL = "stall"  # every app thread in one call past handback_after
    RESUME = "resume"  # a thread is free again
    RETIRE = "retire"
    ABORT = "abort"
    BOOT_TIMEOUT = "boot_timeout"


class Phase(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    RELOADING = "reloading"
    LEAVING = "leaving"
    DRAINING = "draining"
    STOPPING = "stopping"
    HALTED = "halted"


class PhaseEvent(enum.Enum):
    SERVING = "serving"  # the first generation is complete
    HUP = "hup"
    RELOADED = "reloaded"
    RELOAD_FAILED = "reload_failed"
    ANNOUNCE = "announce"  # a stop with drain_delay
    TERM = "term"
    QUICK = "quick"
    HALT = "halt"  # workers that cannot start before any served


_W, _WE = WorkerState, WorkerEvent
WORKER_TRANSITIONS: dict[tuple[WorkerState, WorkerEvent], WorkerState] = {
    (_W.BOOTING, _WE.READY): _W.READY,
    (_W.READY, _WE.STALL): _W.STALLED,
    (_W.STALLED, _WE.RESUME): _W.READY,
    (_W.STALLED, _WE.STALL): _W.STALLED,
    (_W.READY, _WE.RESUME): _W.READY,
    **{(state, _WE.RETIRE): _W.RETIRING for state in (_W.BOOTING, _W.READY, _W.STALLED)},
    **{(state, _WE.ABORT): _W.ABORTED for state in (_W.READY, _W.STALLED, _W.RETIRING)},
    (_W.BOOTING, _WE.BOOT_TIMEOUT): _W.OVERDUE,
    # A retiring worker's late READY (it was still booting when retired) changes nothing.
    (_W.RETIRING, _WE.READY): _W.RETIRING,
}

_P, _PE = Phase, PhaseEvent
PHASE_TRANSITIONS: dict[tuple[Phase, PhaseEvent], Phase] = {
    (_P.STARTING, _PE.SERVING): _P.SERVING,
    (_P.SERVING, _PE.HUP): _P.RELOADING,
    (_P.RELOADING, _PE.HUP): _P.RELOADING,
    (_P.RELOADING, _PE.RELOADED): _P.SERVING,
    (_P.RELOADING, _PE.RELOAD_FAILED): _P.SERVING,
    **{(phase, _PE.ANNOUNCE): _P.LEAVING for phase in (_P.STARTING, _P.SERVING, _P.RELOADING)},
    # What was under way when the stop was announced completes; the phase stays.
    **{(_P.LEAVING, event): _P.LEAVING for event in (_PE.SERVING, _PE.RELOADED, _PE.RELOAD_FAILED)},
    **{(phase, _PE.TERM): _P.DRAINING for phase in (_P.STARTING, _P.SERVING, _P.RELOADING, _P.LEAVING)},
    **{(phase, _PE.HALT): _P.HALTED for phase in (_P.STARTING, _P.LEAVING)},
    **{(phase, _PE.QUICK): _P.STOPPING for phase in Phase if phase is not _P.HALTED},
}

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)

LIVE = frozenset({_W.BOOTING, _W.READY, _W.STALLED})  # counted towards the pool's size
TIMED_OUT = frozenset({_W.ABORTED, _W.OVERDUE})  # killed for timeout: never given work again
ENDING = frozenset({_P.DRAINING, _P.STOPPING, _P.HALTED})  # no spawns; the supervisor exits once workers are gone
IN_SERVICE = frozenset({_W.READY, _W.STALLED})  # booted, and neither retiring nor aborted


def advance(table: dict[tuple[S, E], S], state: S, event: E) -> S:
    """The state after ``event``; raises InvalidTransition when ``state`` does not accept it."""
    try:
        return table[state, event]
    except KeyError:
        raise InvalidTransition(f"{event.value!r} in state {state.value}") from None
