"""The worker pool's policy: generations, sizes, reloads, boot deadlines. Pure: no processes, no clock.

The supervisor feeds events (a worker spawned, ready, exited; HUP, TTIN, TTOU, a tick with
the time) and carries out the actions returned: Spawn, Retire, Kill, Halt, and the
notifications Ready, Reloaded and ReloadFailed. Tests drive this object directly.

Rules:
- Each generation has its own settings. A reload starts a generation with the settings
  read anew; until that generation is serving, the old one's settings stay in force, and
  a reload that fails leaves every setting as it was.
- Rolling reload: each new worker that is ready retires one old worker; once the new
  generation is complete, every old worker left retires, whatever the sizes.
- A worker not ready within its generation's ``timeout`` is aborted (SIGABRT, then SIGKILL,
  as below) and counts as a failed boot. Failed boots before the first ready worker halt the
  supervisor when the app cannot load (no respawn loop); during a reload they abandon the
  reload; otherwise they back off.
- A recycle retires a worker and starts its successor: at once for max_requests (the worker
  takes no more work), or successor first for max_worker_memory, one in, one out, as a reload.
- A worker in service that dies unasked is replaced at once, then, while workers keep dying soon after
  their start, after a growing delay (crashes.Crashes, which also says what the log gets).
- An aborted worker (stuck past timeout) never gets work again; it is killed with SIGABRT,
  then SIGKILL after ABORT_GRACE.
- A worker retired while serving (a reload, a recycle) finishes its calls within its own generation's
  ``graceful_timeout`` (the one it was started with, which an ASGI worker plans its own end on:
  worker/deadline.py), counted from the first tick that sees it retiring, or is killed (SIGKILL), as at
  a stop: a WSGI call that never returns would keep the old generation alive for good. A stop has its
  own deadline (supervisor/stopping.py).
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from sockact.errors import APP_LOAD_ERROR, WORKER_BOOT_ERROR
from sockact.ipc.scoreboard import MAX_WORKERS
from sockact.policy.crashes import Crashes
from sockact.policy.states import (
    ENDING,
    IN_SERVICE,
    LIVE,
    PHASE_TRANSITIONS,
    TIMED_OUT,
    WORKER_TRANSITIONS,
    InvalidTransition,
    Phase,
    PhaseEvent,
    WorkerEvent,
    WorkerState,
    advance,
)

log = logging.getLogger("sockact.pool")

ABORT_GRACE = 2.0  # seconds from SIGABRT (which dumps the stack) to SIGKILL
MAX_BACKOFF = 10.0  # seconds between respawns when workers keep dying at start-up


# -- actions
# No generated __repr__ (pytest compares dataclasses field by field anyway): dataclasses compiles
# each generated method at import, on a cold start's way to its first fork.


@dataclass(frozen=True, repr=False)
class Spawn:
    """Start a worker of ``generation`` with ``config``."""

    generation: int
    config: Any


@dataclass(frozen=True, repr=False)
class Retire:
    """Ask worker ``pid`` to finish what it holds and exit."""

    pid: int


@dataclass(frozen=True, repr=False)
class Kill:
    """Send worker ``pid`` the signal ``signum``."""

    pid: int
    signum: int


@dataclass(frozen=True, repr=False)
class Halt:
    """Stop the service: the app cannot serve; exit with ``exit_code``."""

    exit_code: int
    reason: str


@dataclass(frozen=True, repr=False)
class Ready:
    """The first generation serves: READY=1."""


@dataclass(frozen=True, repr=False)
class Reloaded:
    """A reload is done: ``generation`` serves (RELOADING=1 ends well). ``answers``: the requests it answers,
    those of the reloads it replaced included (`sockact reload` processes, by pid)."""

    generation: int
    answers: tuple[int, ...] = ()


KEPT_RUNNING = "the running settings and workers"  # what a reload that starts no generation keeps


@dataclass(frozen=True, repr=False)
class ReloadFailed:
    """A reload failed for ``reason``; the running generation serves on, as ``kept`` says to the operator.
    ``answers``: the requests it answers; ``under_way``: it failed at once while another reload runs on, whose
    own end is still to come."""

    reason: str
    kept: str = KEPT_RUNNING
    answers: tuple[int, ...] = ()
    under_way: bool = False


Action = Spawn | Retire | Kill | Halt | Ready | Reloaded | ReloadFailed


@dataclass(eq=False, repr=False)
class Member:
    """One worker, as the pool knows it."""

    pid: int
    generation: int
    spawned_at: float
    state: WorkerState = WorkerState.BOOTING
    aborted_at: float = 0.0
    killed: bool = False  # SIGKILL sent (whatever the state says why); waiting to be reaped
    replaced: bool = False  # serves on until its successor is ready, then retires (max_worker_memory)
    retiring_since: float = 0.0  # the first tick that saw it retiring: its graceful_timeout counts from there
    grace: float = 0.0  # its generation's graceful_timeout, kept from its start: a reload may change the setting


class PoolSettings(Protocol):
    """What the pool reads of a generation's settings."""

    @property
    def workers(self) -> int: ...

    @property
    def timeout(self) -> float: ...  # 0: no boot deadline

    @property
    def graceful_timeout(self) -> float: ...  # how long a retiring worker may take to finish its calls


C = TypeVar("C", bound=PoolSettings)


@dataclass(eq=False, repr=False)
class Generation(Generic[C]):
    """A generation of workers: its settings, and how many workers it should have."""

    number: int
    config: C
    target: int


@dataclass(eq=False, repr=False)
class WorkerPool(Generic[C]):
    """See the module docstring; ``config`` is the first generation's settings."""

    config: C
    phase: Phase = Phase.STARTING
    members: dict[int, Member] = field(default_factory=dict)
    boot_failures: int = 0
    spawn_after: float = 0.0
    ever_ready: bool = False

    def __post_init__(self) -> None:
        self.current = Generation(0, self.config, self.config.workers)
        self.previous: Generation[C] | None = None  # the serving generation while a reload runs
        self.crashes = Crashes()
        self.requests: tuple[int, ...] = ()  # who waits for the reload under way (`sockact reload` pids)

    # -- what the supervisor asks

    @property
    def serving_config(self) -> C:
        """The settings in force: the old generation's until a reload has completed."""
        return (self.previous or self.current).config

    def assignable(self, pid: int) -> bool:
        """Whether a worker may be given new connections."""
        m = self.members.get(pid)
        return m is not None and m.state is WorkerState.READY

    def state(self, pid: int) -> WorkerState | None:
        m = self.members.get(pid)
        return m.state if m else None

    def count(self, *states: WorkerState) -> int:
        return sum(1 for m in self.members.values() if m.state in states)

    def crash_quiet(self, pid: int, now: float) -> bool:
        """Whether worker ``pid``, dead at ``now``, is one more crash of workers that keep crashing: its
        lines go to DEBUG, the log says it in one line now and then (crashes.py)."""
        m = self.members.get(pid)
        return m is not None and self.phase not in ENDING and _crashed(m) and self.crashes.quiet(now - m.spawned_at)

    def crash_looping(self) -> bool:
        """Workers keep crashing and none is in service: the watchdog withholds its pings meanwhile."""
        return self.crashes.looping and not self.count(*IN_SERVICE)

    def boot_overdue(self, now: float) -> bool:
        """A worker is past its boot deadline (the watchdog withholds pings meanwhile)."""
        return any(m.state is WorkerState.BOOTING and self._boot_deadline(m) <= now for m in self.members.values())

    # -- events

    def start(self, now: float) -> list[Action]:
        return self._maintain(now)

    def spawned(self, pid: int, generation: int, now: float) -> None:
        m = self.members[pid] = Member(pid, generation, now)
        m.grace = self._generation_config(m).graceful_timeout  # the generation's, known now, gone after a reload

    def ready(self, pid: int, now: float) -> list[Action]:
        m = self.members.get(pid)
        if m is None or not self._move(m, WorkerEvent.READY):
            return []
        if m.state is not WorkerState.READY:
            return []
        self.boot_failures = 0
        if m.generation != self.current.number:
            return [self._retire(m)]  # an old worker finished booting after a reload began
        actions: list[Action] = []
        old = [x for x in self.members.values() if x.replaced and x.state in LIVE] or self._old_members()
        if old:
            actions.append(self._retire(old[0]))  # rolling: one in, one out
        return actions + self._check_complete()

    def stalled(self, pid: int, stalled: bool) -> None:
        m = self.members.get(pid)
        if m is not None and m.state in IN_SERVICE:
            self._move(m, WorkerEvent.STALL if stalled else WorkerEvent.RESUME)

    def exited(self, pid: int, code: int | None, now: float, failure: str = "", how: str = "") -> list[Action]:
        """Worker ``pid`` exited with ``code`` (None: killed by a signal); ``failure`` is why it could not
        start, as it said before it went; ``how`` says how it ended, for the log of workers that keep crashing."""
        m = self.members.pop(pid, None)
        if m is None or self.phase in ENDING:
            return []
        if _crashed(m):
            crash = self.crashes.crashed(now - m.spawned_at, now, how or f"worker {pid} exited")
            if crash.say:
                log.error("%s", crash.say)
            self.spawn_after = max(self.spawn_after, now + crash.delay)
        if m.state in (WorkerState.BOOTING, WorkerState.OVERDUE):  # it never was ready
            actions = self._boot_failed(m, code, now, failure)
            if any(isinstance(a, Halt) for a in actions):
                return actions
            return actions + self._maintain(now)
        return self._maintain(now)

    def timed_out(self, pid: int, now: float) -> list[Action]:
        """A worker is stuck in a call, or frozen, past timeout: abort it (SIGABRT dumps its stack)."""
        m = self.members.get(pid)
        if m is None or m.state in TIMED_OUT or not self._move(m, WorkerEvent.ABORT):
            return []
        m.aborted_at = now
        return [Kill(pid, signal.SIGABRT), *self._maintain(now)]

    def recycle(self, pid: int, now: float, successor_first: bool = False) -> list[Action]:
        """Retire a worker and start its successor: at once (it served its max_requests, and takes no
        more work), or, ``successor_first``, once the successor is ready, as a reload does, so the
        pool never serves with one worker fewer (max_worker_memory)."""
        m = self.members.get(pid)
        if m is None or m.state not in IN_SERVICE or m.replaced:
            return []
        if successor_first:
            m.replaced = True  # no longer counted: _maintain starts its successor
            return self._maintain(now)
        return [self._retire(m), *self._maintain(now)]

    def retire(self, pid: int) -> list[Action]:
        """Retire a live worker now: at a stop, one that holds nothing more, or every worker when
        their connections go to systemd's fd store."""
        m = self.members.get(pid)
        if m is None or m.state not in LIVE:
            return []
        return [self._retire(m)]

    def kill_all(self) -> list[Action]:
        """The stop's deadline has passed: SIGKILL for every worker not killed yet."""
        actions: list[Action] = []
        for m in self.members.values():
            if not m.killed:
                log.warning("worker %d did not finish in time; killing it", m.pid)
                m.killed = True
                actions.append(Kill(m.pid, signal.SIGKILL))
        return actions

    def hup(self, config: C | None, error: str | None, now: float, requests: tuple[int, ...] = ()) -> list[Action]:
        """Reload with ``config`` (read anew), or fail at once with ``error`` (it could not be read). ``requests``:
        who asked for this reload; its outcome answers them, and a reload under way goes on with its own."""
        if self.phase not in (Phase.SERVING, Phase.RELOADING, Phase.STARTING):
            return []
        if error is not None or config is None:
            return [ReloadFailed(error or "no settings to reload with", answers=requests,
                                 under_way=self.phase is Phase.RELOADING)]
        self.requests += requests  # a reload this one replaces ends with it
        actions: list[Action] = []
        if self.phase is Phase.RELOADING:
            # A reload during a reload: the half-started generation is dropped for the newer one, and
            # the generation that serves stays the one to go back to.
            actions += self._drop_new_generation(now)
        elif self.phase is Phase.SERVING:
            self.phase = advance(PHASE_TRANSITIONS, self.phase, PhaseEvent.HUP)
            self.previous = self.current
        self.current = Generation(self.current.number + 1, config, config.workers)
        self.boot_failures = 0
        self.spawn_after = 0.0
        self.crashes.clear()  # new code may not crash
        return actions + self._maintain(now)

    def resize(self, delta: int, now: float) -> list[Action]:
        """TTIN (+1) / TTOU (-1), within 1 and MAX_WORKERS (the bound of the workers setting)."""
        self.current.target = min(MAX_WORKERS, max(1, self.current.target + delta))
        return self._maintain(now)

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for m in list(self.members.values()):
            if m.state is WorkerState.BOOTING and self._boot_deadline(m) <= now:
                # SIGABRT first, as for a stuck call: the stack it dumps names the line of the import that
                # hangs (a database that does not answer), which a SIGKILL alone would leave unknown.
                log.error("worker %d did not start within %.0fs; aborting it (its stack follows)", m.pid,
                          self._generation_config(m).timeout)
                self._move(m, WorkerEvent.BOOT_TIMEOUT)
                m.aborted_at = now
                actions.append(Kill(m.pid, signal.SIGABRT))
            elif m.state in TIMED_OUT and not m.killed and now - m.aborted_at >= ABORT_GRACE:
                m.killed = True
                actions.append(Kill(m.pid, signal.SIGKILL))
            elif m.state is WorkerState.RETIRING and not m.killed and self.phase not in ENDING:
                grace = m.grace
                if not m.retiring_since:
                    m.retiring_since = now
                elif now - m.retiring_since > grace:
                    log.warning("worker %d did not finish its calls within graceful_timeout (%gs) of its retirement; "
                                "killing it", m.pid, grace)
                    m.killed = True
                    actions.append(Kill(m.pid, signal.SIGKILL))
        if self.phase not in ENDING:
            if self.crashes.run:
                self._crashes_ended(now)
            actions += self._maintain(now)
        return actions

    def term(self) -> list[Action]:
        """Graceful stop: no more spawns; every worker drains and exits."""
        if self.phase in ENDING:
            return []
        self.phase = advance(PHASE_TRANSITIONS, self.phase, PhaseEvent.TERM)
        self._settle_reload()
        return []

    def announce(self) -> list[Action]:
        """A stop with drain_delay: the workers serve on until term(); nothing is reloaded meanwhile."""
        if self.phase in (Phase.STARTING, Phase.SERVING, Phase.RELOADING):
            self.phase = advance(PHASE_TRANSITIONS, self.phase, PhaseEvent.ANNOUNCE)
        return []

    def quick(self) -> list[Action]:
        if self.phase in (Phase.STOPPING, Phase.HALTED):
            return []
        self.phase = advance(PHASE_TRANSITIONS, self.phase, PhaseEvent.QUICK)
        self._settle_reload()
        return []

    # -- internals

    def _move(self, m: Member, event: WorkerEvent) -> bool:
        try:
            m.state = advance(WORKER_TRANSITIONS, m.state, event)
        except InvalidTransition as exc:
            log.warning("worker %d: ignored %s", m.pid, exc)
            return False
        return True

    def _crashes_ended(self, now: float) -> None:
        for m in self.members.values():
            if m.state in IN_SERVICE and (say := self.crashes.ended(m.spawned_at, now)):
                log.info("%s", say)
                return

    def _retire(self, m: Member) -> Retire:
        self._move(m, WorkerEvent.RETIRE)
        return Retire(m.pid)

    def _old_members(self) -> list[Member]:
        return [m for m in self.members.values() if m.generation != self.current.number and m.state in LIVE]

    def _current_live(self) -> list[Member]:
        # A worker killed for an overdue boot still counts until reaped: its exit decides what follows.
        return [m for m in self.members.values() if m.generation == self.current.number and not m.replaced
                and (m.state in LIVE or m.state is WorkerState.OVERDUE)]

    def _generation_config(self, m: Member) -> C:
        if m.generation == self.current.number:
            return self.current.config
        return (self.previous or self.current).config

    def _boot_deadline(self, m: Member) -> float:
        timeout = self._generation_config(m).timeout
        return m.spawned_at + timeout if timeout else float("inf")

    def _check_complete(self) -> list[Action]:
        ready = sum(1 for m in self._current_live() if m.state in IN_SERVICE)
        if ready < self.current.target:
            return []
        if self.phase in ENDING:
            return []
        if not self.ever_ready:
            self.phase = advance(PHASE_TRANSITIONS, self.phase, PhaseEvent.SERVING)
            self.ever_ready = True
            if not self.current.number:
                return [Ready()]
            # A reload asked for during the start (a generation past the first): it ends as the start does.
            answers, self.requests = self.requests, ()
            return [Ready(), Reloaded(self.current.number, answers)]
        if self.previous is not None:  # a reload runs
            self.phase = advance(PHASE_TRANSITIONS, self.phase, PhaseEvent.RELOADED)
            self.previous = None
            retired: list[Action] = [self._retire(m) for m in self._old_members()]
            answers, self.requests = self.requests, ()
            return [*retired, Reloaded(self.current.number, answers)]
        return []

    def _maintain(self, now: float) -> list[Action]:
        """Spawn or retire workers of the current generation to reach its target."""
        if self.phase in ENDING:
            return []
        live = self._current_live()
        missing = self.current.target - len(live)
        if missing > 0 and now >= self.spawn_after:
            return [Spawn(self.current.number, self.current.config) for _ in range(missing)]
        if missing < 0:
            # The least useful first: booting, then the newest.
            live = [m for m in live if m.state in LIVE]
            live.sort(key=lambda m: (m.state is not WorkerState.BOOTING, -m.spawned_at))
            return [self._retire(m) for m in live[:-missing]]
        return self._check_complete()

    def _boot_failed(self, m: Member, code: int | None, now: float, failure: str) -> list[Action]:
        overdue = m.state is WorkerState.OVERDUE
        app_broken = code in (APP_LOAD_ERROR, WORKER_BOOT_ERROR) or overdue
        reason = (f"worker exit code {code}" if code is not None else "worker did not start in time"
                  if overdue else "worker killed while starting")
        if failure:
            reason = f"{reason}: {failure}"
        if app_broken and not self.ever_ready:
            self.phase = advance(PHASE_TRANSITIONS, self.phase, PhaseEvent.HALT)
            what = "the workers cannot start" if code == WORKER_BOOT_ERROR else "the app failed to load"
            return [Halt(code if code in (APP_LOAD_ERROR, WORKER_BOOT_ERROR) else APP_LOAD_ERROR,
                         f"{what} ({reason}); stopping")]
        if app_broken and self.previous is not None and m.generation == self.current.number:
            what, detail = "the new code does not load", reason
            if overdue:  # its reason would say "did not start in time" again: only an exit code or its words add to it
                what, detail = "the new workers did not start in time", reason if code is not None else failure
            return self._abort_reload(f"{what} ({detail})" if detail else what, f"generation {self.previous.number}",
                                      now)
        self.boot_failures += 1
        delay = min(MAX_BACKOFF, 0.1 * 2 ** self.boot_failures)
        self.spawn_after = now + delay
        log.warning("worker %d died while starting (%s; %d in a row); next start in %.1fs",
                    m.pid, reason, self.boot_failures, delay)
        return []

    def _drop_new_generation(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for m in list(self.members.values()):
            if m.generation == self.current.number and m.state in LIVE:
                booting = m.state is WorkerState.BOOTING
                actions.append(self._retire(m))
                if booting:
                    m.killed = True
                    actions.append(Kill(m.pid, signal.SIGKILL))
        return actions

    def _abort_reload(self, reason: str, kept: str, now: float) -> list[Action]:
        """The new generation cannot serve: the old one goes on, with all of its settings."""
        actions = self._drop_new_generation(now)
        assert self.previous is not None
        self.current, self.previous = self.previous, None
        self.phase = advance(PHASE_TRANSITIONS, self.phase, PhaseEvent.RELOAD_FAILED)
        self.boot_failures = 0
        self.spawn_after = 0.0
        answers, self.requests = self.requests, ()
        return [*actions, ReloadFailed(reason, kept, answers), *self._maintain(now)]

    def _settle_reload(self) -> None:
        if self.previous is not None:
            self.current, self.previous = self.previous, None


def _crashed(m: Member) -> bool:
    """Whether ``m``, now dead, crashed: it was in service and nobody asked it to go."""
    return m.state in IN_SERVICE and not m.killed
