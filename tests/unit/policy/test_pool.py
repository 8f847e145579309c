"""The worker pool's policy, driven by events with no processes and no clock."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from itertools import count

from sockact.errors import APP_LOAD_ERROR
from sockact.ipc.scoreboard import MAX_WORKERS
from sockact.policy.crashes import QUICK
from sockact.policy.pool import MAX_BACKOFF, Halt, Kill, Ready, Reloaded, ReloadFailed, Retire, Spawn, WorkerPool
from sockact.policy.states import Phase, WorkerState


@dataclass(frozen=True)
class Cfg:
    workers: int = 2
    timeout: float = 30.0
    name: str = "old"
    graceful_timeout: float = 30.0


class Harness:
    """Carries out Spawn actions with made-up pids, as the supervisor would with fork()."""

    def __init__(self, cfg: Cfg) -> None:
        self.pool = WorkerPool(cfg)
        self.pids = count(100)
        self.now = 0.0
        self.gen: dict[int, int] = {}

    def run(self, actions: list) -> list:
        out = []
        for a in actions:
            if isinstance(a, Spawn):
                pid = next(self.pids)
                self.gen[pid] = a.generation
                self.pool.spawned(pid, a.generation, self.now)
            out.append(a)
        return out

    def start_all(self) -> list[int]:
        self.run(self.pool.start(self.now))
        pids = list(self.pool.members)
        for pid in pids:
            self.run(self.pool.ready(pid, self.now))
        return pids

    def booting(self) -> list[int]:
        return [p for p, m in self.pool.members.items() if m.state is WorkerState.BOOTING]


def test_start_spawns_the_target_and_says_ready_once_all_are_ready():
    h = Harness(Cfg(workers=2))
    spawns = h.run(h.pool.start(0.0))
    assert [type(a) for a in spawns] == [Spawn, Spawn]
    a, b = h.booting()
    assert h.pool.ready(a, 0.0) == []
    assert h.pool.ready(b, 0.0) == [Ready()]
    assert h.pool.phase is Phase.SERVING and h.pool.assignable(a)


def test_reload_to_fewer_workers_retires_every_old_one():  # bug 1
    h = Harness(Cfg(workers=3))
    old = h.start_all()
    h.run(h.pool.hup(Cfg(workers=1, name="new"), None, 1.0))
    (new,) = h.booting()
    actions = h.pool.ready(new, 1.1)
    retired = {a.pid for a in actions if isinstance(a, Retire)}
    assert retired == set(old)
    assert Reloaded(1) in actions and h.pool.phase is Phase.SERVING


def test_a_worker_retired_by_a_reload_is_killed_past_graceful_timeout_as_at_a_stop():
    # Its calls may take graceful_timeout, its own generation's (an ASGI worker plans its end on the one it runs
    # with, not the reload's 30 s), counted from the first tick that sees it retiring; a WSGI call that never
    # returns would hold it for good.
    h = Harness(Cfg(workers=1, graceful_timeout=5.0))
    (old,) = h.start_all()
    h.run(h.pool.hup(Cfg(workers=1, name="new", graceful_timeout=30.0), None, 1.0))
    (new,) = h.booting()
    assert Retire(old) in h.pool.ready(new, 1.1)
    assert h.pool.tick(1.5) == []  # seen retiring: its 5 s begin
    assert h.pool.tick(6.5) == []
    assert h.pool.tick(6.6) == [Kill(old, signal.SIGKILL)]
    assert h.pool.tick(7.0) == [] and h.pool.members[new].state is WorkerState.READY  # killed once; the new serves
    assert h.pool.exited(old, None, 7.1) == []
    # At a stop, the stop's own deadline kills (supervisor/stopping.py): the ticks kill no retiring worker.
    h.pool.term()
    h.run(h.pool.retire(new))
    assert h.pool.tick(8.0) == [] and h.pool.tick(100.0) == []


def test_a_failed_reload_keeps_every_old_setting():  # bug 2
    h = Harness(Cfg(workers=2, name="old"))
    h.start_all()
    h.run(h.pool.hup(Cfg(workers=4, name="new"), None, 1.0))
    assert h.pool.serving_config.name == "old"  # not in force before the new generation serves
    first = h.booting()[0]
    actions = h.run(h.pool.exited(first, APP_LOAD_ERROR, 1.2))
    (failed,) = [a for a in actions if isinstance(a, ReloadFailed)]
    # what it keeps is data, for the log, STATUS= and `sockact reload` to say, not a part of the reason
    assert failed.kept == "generation 0" and "keeping" not in failed.reason, failed.reason
    assert h.pool.serving_config.name == "old" and h.pool.current.target == 2
    # The old generation goes on; killing one of its workers starts a like one, with no backoff loop.
    old = next(p for p, m in h.pool.members.items() if m.state is WorkerState.READY)
    respawn = h.run(h.pool.exited(old, None, 2.0))
    assert [a.generation for a in respawn if isinstance(a, Spawn)] == [0]


def test_a_reload_during_a_reload_that_fails_goes_back_to_the_generation_that_served():
    # The half-started generation is dropped for the newer one; the one that serves stays the fallback.
    h = Harness(Cfg(workers=1, name="g0"))
    h.start_all()
    h.run(h.pool.hup(Cfg(workers=1, name="g1"), None, 1.0))
    h.run(h.pool.hup(Cfg(workers=1, name="g2"), None, 1.1))
    assert h.pool.serving_config.name == "g0"
    g2 = next(p for p, gen in h.gen.items() if gen == 2)
    actions = h.run(h.pool.exited(g2, APP_LOAD_ERROR, 1.2))
    assert any(isinstance(a, ReloadFailed) for a in actions)
    assert h.pool.serving_config.name == "g0" and h.pool.current.number == 0
    assert not [a for a in actions if isinstance(a, Spawn)]  # g0's worker serves on: nothing to start


def test_each_reload_answers_its_own_requests_and_a_file_that_fails_at_once_is_no_answer_to_the_one_under_way():
    h = Harness(Cfg(workers=1, name="g0"))
    h.start_all()
    h.run(h.pool.hup(Cfg(workers=1, name="g1"), None, 1.0, requests=(501,)))
    # A second HUP whose file does not read fails at once: its own requester hears it, 501 waits on.
    (failed,) = h.pool.hup(None, "key 'workers': expected an integer", 1.1, requests=(502,))
    assert isinstance(failed, ReloadFailed) and failed.answers == (502,) and failed.under_way
    # A third replaces the first's generation: it answers both.
    h.run(h.pool.hup(Cfg(workers=1, name="g3"), None, 1.2, requests=(503,)))
    (g3,) = [p for p, gen in h.gen.items() if gen == 2]  # the file that failed started no generation
    actions = h.run(h.pool.ready(g3, 1.3))
    assert Reloaded(2, (501, 503)) in actions
    (failed,) = h.pool.hup(None, "empty", 2.0, requests=(504,))  # with no reload under way: its end is the service's
    assert isinstance(failed, ReloadFailed) and failed.answers == (504,) and not failed.under_way
    h.run(h.pool.hup(Cfg(workers=1, name="g4"), None, 2.1, requests=(505,)))
    (g4,) = [p for p, gen in h.gen.items() if gen == 3]
    actions = h.run(h.pool.exited(g4, APP_LOAD_ERROR, 2.2))
    assert [(a.answers, a.under_way) for a in actions if isinstance(a, ReloadFailed)] == [((505,), False)]


def test_a_reload_asked_for_during_the_start_is_answered_when_its_generation_serves_first():
    # It was not: the first READY came alone, and `sockact reload` waited out its whole bound.
    h = Harness(Cfg(workers=1, name="g0"))
    h.run(h.pool.start(0.0))
    assert h.run(h.pool.hup(Cfg(workers=1, name="g1"), None, 0.5, requests=(501,)))
    (g1,) = [p for p, gen in h.gen.items() if gen == 1]
    actions = h.pool.ready(g1, 1.0)
    assert [a for a in actions if not isinstance(a, Retire)] == [Ready(), Reloaded(1, (501,))]
    assert [a.pid for a in actions if isinstance(a, Retire)] == [g1 - 1]  # the first generation's worker
    assert h.pool.phase is Phase.SERVING and h.pool.serving_config.name == "g1"
    h.run(h.pool.hup(Cfg(workers=1, name="g2"), None, 2.0, requests=(502,)))  # the next reload answers its own alone
    (g2,) = [p for p, gen in h.gen.items() if gen == 2]
    assert Reloaded(2, (502,)) in h.pool.ready(g2, 2.1)


def test_a_bad_settings_file_fails_the_reload_at_once():
    h = Harness(Cfg())
    h.start_all()
    assert h.pool.hup(None, "bad key 'x'", 1.0) == [ReloadFailed("bad key 'x'", "the running settings and workers")]
    assert h.pool.phase is Phase.SERVING and h.pool.current.number == 0


def test_a_boot_past_timeout_is_killed_and_the_reload_abandoned():  # bug 3
    h = Harness(Cfg(workers=1, timeout=30.0))  # the new generation's own timeout is the one that counts
    h.start_all()
    h.now = 10.0
    h.run(h.pool.hup(Cfg(workers=1, timeout=2.0, name="new"), None, 10.0))
    (new,) = h.booting()
    assert not h.pool.boot_overdue(11.0)
    assert h.pool.boot_overdue(12.5)  # the watchdog withholds its pings meanwhile
    assert h.pool.tick(12.5) == [Kill(new, signal.SIGABRT)]  # its stack shows where the import hangs
    assert h.pool.state(new) is WorkerState.OVERDUE and h.pool.tick(12.6) == []  # aborted once
    assert h.pool.tick(14.5) == [Kill(new, signal.SIGKILL)] and h.pool.tick(14.6) == []  # then killed, once
    actions = h.run(h.pool.exited(new, None, 12.6))
    # Said once: not "the new workers did not start in time (worker did not start in time)".
    assert [a for a in actions if isinstance(a, ReloadFailed)] == [
        ReloadFailed("the new workers did not start in time", "generation 0")]
    assert h.pool.serving_config.name == "old"


def test_an_aborted_worker_never_gets_work_again():  # bug 4
    h = Harness(Cfg(workers=2))
    a, _ = h.start_all()
    actions = h.pool.timed_out(a, 5.0)
    assert actions[0] == Kill(a, signal.SIGABRT) and not h.pool.assignable(a)
    h.pool.ready(a, 5.1)  # a late message changes nothing
    h.pool.stalled(a, False)
    assert h.pool.state(a) is WorkerState.ABORTED and not h.pool.assignable(a)
    assert Kill(a, signal.SIGKILL) in h.pool.tick(7.5)  # SIGKILL after the grace
    assert any(isinstance(x, Spawn) for x in actions)  # its successor starts at once


def test_an_app_that_cannot_load_at_first_start_halts():
    h = Harness(Cfg(workers=2))
    h.run(h.pool.start(0.0))
    first = h.booting()[0]
    actions = h.pool.exited(first, APP_LOAD_ERROR, 0.5)
    assert actions == [Halt(APP_LOAD_ERROR, actions[0].reason)]
    assert h.pool.phase is Phase.HALTED


def test_workers_dying_at_boot_later_back_off():
    h = Harness(Cfg(workers=1))
    (a,) = h.start_all()
    h.run(h.pool.exited(a, None, 1.0))  # a crash after serving: replaced at once
    (b,) = h.booting()
    assert h.pool.exited(b, 1, 1.1) == []  # died while booting: back off
    assert h.pool.tick(1.15) == []
    assert any(isinstance(x, Spawn) for x in h.pool.tick(1.6))


def test_ttin_ttou_and_recycle():
    h = Harness(Cfg(workers=1))
    (a,) = h.start_all()
    assert [type(x) for x in h.pool.resize(+1, 1.0)] == [Spawn]
    h.run([Spawn(0, None)])
    assert [type(x) for x in h.pool.resize(-1, 1.0)] == [Retire]  # the booting one goes first
    actions = h.pool.recycle(a, 2.0)
    assert actions[0] == Retire(a) and isinstance(actions[1], Spawn)


def test_ttin_at_the_most_workers_changes_nothing():
    h = Harness(Cfg(workers=MAX_WORKERS))
    h.start_all()
    assert h.pool.resize(+1, 1.0) == [] and h.pool.current.target == MAX_WORKERS


def test_term_stops_spawning():
    h = Harness(Cfg(workers=1))
    (a,) = h.start_all()
    h.pool.term()
    assert h.pool.phase is Phase.DRAINING
    assert h.pool.exited(a, 0, 1.0) == [] and h.pool.tick(2.0) == []


def test_a_new_generation_boots_within_its_own_timeout():
    # Two timeouts, so that a deadline taken from the wrong generation shows.
    h = Harness(Cfg(workers=1, timeout=2.0))
    h.start_all()
    h.now = 10.0
    h.run(h.pool.hup(Cfg(workers=1, timeout=20.0, name="new"), None, 10.0))
    (new,) = h.booting()
    assert not h.pool.boot_overdue(15.0) and h.pool.tick(15.0) == []  # past the old 2 s, within its 20 s
    assert h.pool.state(new) is WorkerState.BOOTING
    assert h.pool.boot_overdue(30.5)
    assert h.pool.tick(30.5) == [Kill(new, signal.SIGABRT)]


def test_a_shorter_new_timeout_is_the_new_generations_deadline():
    h = Harness(Cfg(workers=1, timeout=20.0))
    h.start_all()
    h.now = 10.0
    h.run(h.pool.hup(Cfg(workers=1, timeout=2.0, name="new"), None, 10.0))
    (new,) = h.booting()
    assert h.pool.tick(11.0) == []
    assert h.pool.tick(12.5) == [Kill(new, signal.SIGABRT)]


def test_the_respawn_backoff_doubles_up_to_its_cap():
    h = Harness(Cfg(workers=1))
    (a,) = h.start_all()
    h.run(h.pool.exited(a, None, 0.0))  # a crash after serving: replaced at once, no backoff
    delays = []
    for _ in range(10):
        (b,) = h.booting()
        assert h.pool.exited(b, 1, h.now) == []  # died while booting: no respawn yet
        delays.append(round(h.pool.spawn_after - h.now, 3))
        assert h.pool.tick(h.pool.spawn_after - 0.01) == []
        h.now = h.pool.spawn_after
        assert [type(x) for x in h.run(h.pool.tick(h.now))] == [Spawn]
    assert delays[:6] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4]
    assert delays[6:] == [MAX_BACKOFF] * 4
    (c,) = h.booting()
    h.run(h.pool.ready(c, h.now))  # a worker that starts resets the count
    h.now += QUICK  # and lives long enough for its crash to be replaced at once (test_crashes.py)
    h.run(h.pool.exited(c, None, h.now))
    (d,) = h.booting()
    h.pool.exited(d, 1, h.now)
    assert round(h.pool.spawn_after - h.now, 3) == 0.2


def test_a_stalled_worker_that_moves_again_gets_work_again():
    h = Harness(Cfg(workers=2))
    a, b = h.start_all()
    h.pool.stalled(a, True)
    assert h.pool.state(a) is WorkerState.STALLED and not h.pool.assignable(a) and h.pool.assignable(b)
    h.pool.stalled(a, True)  # still stalled at the next look
    assert h.pool.state(a) is WorkerState.STALLED
    h.pool.stalled(a, False)
    assert h.pool.state(a) is WorkerState.READY and h.pool.assignable(a)


def test_a_memory_recycle_starts_the_successor_first_then_retires_the_old_one():
    h = Harness(Cfg(workers=2))
    a, b = h.start_all()
    actions = h.run(h.pool.recycle(a, 1.0, successor_first=True))
    assert [type(x) for x in actions] == [Spawn]  # no Retire yet: a serves on meanwhile
    assert h.pool.assignable(a)
    assert h.pool.recycle(a, 1.1, successor_first=True) == []  # asked again at the next look: nothing more
    (successor,) = h.booting()
    assert h.pool.ready(successor, 1.5) == [Retire(a)]  # one in, one out
    assert h.pool.state(a) is WorkerState.RETIRING and h.pool.assignable(b)
    assert h.pool.exited(a, 0, 2.0) == []  # its successor already serves: nothing to start


def test_a_memory_recycle_whose_successor_cannot_start_keeps_the_old_worker_serving():
    h = Harness(Cfg(workers=1))
    (a,) = h.start_all()
    h.run(h.pool.recycle(a, 1.0, successor_first=True))
    (successor,) = h.booting()
    assert h.pool.exited(successor, 1, 1.2) == []  # died while booting: back off, a still serves
    assert h.pool.assignable(a)
    (again,) = [x for x in h.run(h.pool.tick(5.0)) if isinstance(x, Spawn)]
    assert again.generation == 0


def test_a_stop_announced_while_starting_still_says_ready_then_drains():
    h = Harness(Cfg(workers=1))
    h.run(h.pool.start(0.0))
    assert h.pool.announce() == [] and h.pool.phase is Phase.LEAVING
    (a,) = h.booting()
    assert h.pool.ready(a, 0.1) == [Ready()]
    assert h.pool.phase is Phase.LEAVING and h.pool.assignable(a)  # it serves on during drain_delay
    assert h.pool.hup(Cfg(name="new"), None, 0.2) == [] and h.pool.current.number == 0
    respawn = h.run(h.pool.exited(a, None, 0.3))  # a worker that dies meanwhile is replaced
    assert [type(x) for x in respawn] == [Spawn]
    h.pool.term()
    assert h.pool.phase is Phase.DRAINING


def test_a_reload_under_way_when_a_stop_is_announced_completes():
    h = Harness(Cfg(workers=1))
    (old,) = h.start_all()
    h.run(h.pool.hup(Cfg(workers=1, name="new"), None, 1.0))
    h.pool.announce()
    (new,) = h.booting()
    actions = h.pool.ready(new, 1.1)
    assert actions == [Retire(old), Reloaded(1)]
    assert h.pool.phase is Phase.LEAVING and h.pool.serving_config.name == "new"


def test_every_retirement_goes_through_the_pool_and_only_once():
    h = Harness(Cfg(workers=2))
    a, b = h.start_all()
    h.pool.term()
    assert h.pool.retire(a) == [Retire(a)] and h.pool.state(a) is WorkerState.RETIRING
    assert h.pool.retire(a) == []  # retired already
    h.pool.timed_out(b, 1.0)
    assert h.pool.retire(b) == []  # aborted: it is killed, not retired
    assert h.pool.kill_all() == [Kill(a, signal.SIGKILL), Kill(b, signal.SIGKILL)]
    assert h.pool.kill_all() == []  # once each
