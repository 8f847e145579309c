"""A cgroup per worker (worker_memory_limit), against a fake cgroup tree in a tmp dir.

The files of a fake tree are plain files: a write replaces what the kernel would act on, so these
tests check what sockact writes where, and how it reads what the kernel writes. The real thing,
under systemd with Delegate=yes, is tests/system/test_memory_limit.py.
"""

from __future__ import annotations

import os

import pytest

from sockact.config import Config, build
from sockact.systemd import cgroups


def fake_service(tmp_path, controllers="cpuset cpu io memory pids", procs="100\n4242\n"):
    """A delegated service cgroup, and a /proc/self/cgroup that names it."""
    service = tmp_path / "fs" / "system.slice" / "sockact.service"
    service.mkdir(parents=True)
    (tmp_path / "fs" / "cgroup.controllers").write_text(controllers + "\n")
    (service / "cgroup.controllers").write_text(controllers + "\n")
    (service / "cgroup.procs").write_text(procs)
    (service / "cgroup.subtree_control").write_text("")
    proc = tmp_path / "cgroup"
    proc.write_text("0::/system.slice/sockact.service\n")
    return service, proc


def test_own_cgroup_reads_the_unified_line():
    assert cgroups.own_cgroup("0::/system.slice/sockact.service\n") == "/system.slice/sockact.service"
    # a hybrid system lists the v1 hierarchies first
    assert cgroups.own_cgroup("12:memory:/x\n1:name=systemd:/x\n0::/x.service\n") == "/x.service"
    with pytest.raises(cgroups.CgroupError, match=r"^worker_memory_limit: no unified cgroup hierarchy"):
        cgroups.own_cgroup("12:memory:/x\n1:name=systemd:/x\n")


def test_delegate_moves_the_service_s_processes_out_and_enables_memory_and_cpu(tmp_path):
    service, proc = fake_service(tmp_path)
    groups = cgroups.WorkerGroups.delegate(str(tmp_path / "fs"), str(proc))
    assert groups.service == service
    # each pid written on its own (a fake file keeps the last one; the kernel moves each)
    assert (service / "supervisor" / "cgroup.procs").read_text() == "4242"
    assert (service / "cgroup.subtree_control").read_text() == "+memory +cpu"


def test_delegate_moves_every_process_of_the_service_s_group(tmp_path):
    # A FIFO for the supervisor group's cgroup.procs keeps every write, in order (a plain file keeps the last).
    service, proc = fake_service(tmp_path)
    (service / "supervisor").mkdir()
    os.mkfifo(service / "supervisor" / "cgroup.procs")
    written = os.open(service / "supervisor" / "cgroup.procs", os.O_RDONLY | os.O_NONBLOCK)
    try:
        cgroups.WorkerGroups.delegate(str(tmp_path / "fs"), str(proc))
        assert os.read(written, 4096) == b"1004242"  # 100, then 4242: none is left behind
    finally:
        os.close(written)


def test_delegate_without_cpu_enables_memory_alone(tmp_path):
    service, proc = fake_service(tmp_path, controllers="memory pids")
    cgroups.WorkerGroups.delegate(str(tmp_path / "fs"), str(proc))
    assert (service / "cgroup.subtree_control").read_text() == "+memory"


def test_a_service_already_in_its_supervisor_group_is_found_again(tmp_path):
    service, proc = fake_service(tmp_path)
    (service / "supervisor").mkdir()
    proc.write_text("0::/system.slice/sockact.service/supervisor\n")
    assert cgroups.WorkerGroups.delegate(str(tmp_path / "fs"), str(proc)).service == service


@pytest.mark.parametrize(("controllers", "why"), [
    ("cpu pids", "the memory controller is not delegated to /system.slice/sockact.service"),
])
def test_no_memory_controller_is_refused_with_the_reason(tmp_path, controllers, why):
    _, proc = fake_service(tmp_path, controllers=controllers)
    with pytest.raises(cgroups.CgroupError) as exc:
        cgroups.WorkerGroups.delegate(str(tmp_path / "fs"), str(proc))
    assert str(exc.value).startswith(f"worker_memory_limit: {why}; run it under systemd with Delegate=yes")
    assert "\n" not in str(exc.value)
    assert exc.value.exit_code == 2


def test_a_hybrid_hierarchy_is_refused(tmp_path):
    """Debian 12 and 13 boot unified; a host booted hybrid keeps the memory controller on cgroup v1."""
    _, proc = fake_service(tmp_path)
    (tmp_path / "fs" / "cgroup.controllers").unlink()
    with pytest.raises(cgroups.CgroupError, match=r"^worker_memory_limit: \S+ is not a cgroup v2 \(unified\) "
                                                  r"hierarchy.*systemd.unified_cgroup_hierarchy=1$"):
        cgroups.WorkerGroups.delegate(str(tmp_path / "fs"), str(proc))


def test_a_missing_cgroup_is_refused(tmp_path):
    fake_service(tmp_path)
    proc = tmp_path / "cgroup"
    proc.write_text("0::/nowhere.service\n")
    with pytest.raises(cgroups.CgroupError, match=r"^worker_memory_limit: cannot set up worker cgroups in "
                                                  r"/nowhere.service .*Delegate=yes"):
        cgroups.WorkerGroups.delegate(str(tmp_path / "fs"), str(proc))


def test_the_root_cgroup_is_not_taken(tmp_path):
    """Outside systemd (a root shell, a container) the whole tree is no service's to split."""
    fake_service(tmp_path)
    proc = tmp_path / "cgroup"
    proc.write_text("0::/\n")
    with pytest.raises(cgroups.CgroupError, match=r"^worker_memory_limit: sockact runs in the root cgroup"):
        cgroups.WorkerGroups.delegate(str(tmp_path / "fs"), str(proc))


def test_prepare_sets_the_limit_and_the_oom_group_and_a_worker_enters(tmp_path):
    service, proc = fake_service(tmp_path)
    groups = cgroups.WorkerGroups.delegate(str(tmp_path / "fs"), str(proc))
    group = groups.prepare(3, 256 << 20)
    assert group == service / "worker-3"
    assert (group / "memory.max").read_text() == str(256 << 20)
    assert (group / "memory.oom.group").read_text() == "1"
    cgroups.enter(group)
    assert (group / "cgroup.procs").read_text() == str(os.getpid())
    # limit 0 (a reload turned it off): the group stays, for the metrics, with no limit
    assert (groups.prepare(4, 0) / "memory.max").read_text() == "max"


def test_an_oom_kill_counts_from_when_the_slot_s_group_was_prepared(tmp_path):
    _, proc = fake_service(tmp_path)
    groups = cgroups.WorkerGroups.delegate(str(tmp_path / "fs"), str(proc))
    group = groups.prepare(0, 1 << 30)
    assert not groups.oom_killed(0)  # no memory.events yet
    (group / "memory.events").write_text("low 0\nhigh 0\nmax 17\noom 1\noom_kill 1\noom_group_kill 1\n")
    assert groups.oom_killed(0)
    # a group left behind (a child of the dead worker lives on) is reused: its old kills do not count
    groups.remove(0)
    groups.prepare(0, 1 << 30)
    assert not groups.oom_killed(0)
    (group / "memory.events").write_text("oom 2\noom_kill 2\n")
    assert groups.oom_killed(0)


def test_usage_reads_memory_current_and_cpu_stat_and_a_removed_group_has_none(tmp_path):
    _, proc = fake_service(tmp_path)
    groups = cgroups.WorkerGroups.delegate(str(tmp_path / "fs"), str(proc))
    group = groups.prepare(1, 0)
    assert groups.usage(1) is None  # the kernel writes memory.current; not yet here
    (group / "memory.current").write_text("52428800\n")
    (group / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    used = groups.usage(1)
    assert used == cgroups.Usage(52428800, 1.5)
    for name in ("memory.current", "cpu.stat", "memory.max", "memory.oom.group", "cgroup.procs"):
        (group / name).unlink(missing_ok=True)  # a real group's files go with it
    groups.remove(1)
    assert not group.exists()
    assert groups.usage(1) is None


def test_the_setting_is_a_size_and_off_by_default():
    assert Config().worker_memory_limit == 0
    assert build({}, {"SOCKACT_WORKER_MEMORY_LIMIT": "1G"}, None).worker_memory_limit == 1 << 30


def test_the_supervisor_says_a_worker_was_killed_for_its_limit_and_counts_it(tmp_path, caplog):
    import logging
    import socket

    from sockact.supervisor import Supervisor
    from sockact.supervisor.metrics import restart_reason
    from sockact.supervisor.workers import WorkerProcess
    from sockact.systemd.notify import Notifier

    _, proc = fake_service(tmp_path)
    sup = Supervisor(Config(), [], Notifier({}, os.getpid()))
    sup.cgroups = cgroups.WorkerGroups.delegate(str(tmp_path / "fs"), str(proc))
    ours, theirs = socket.socketpair()
    killed, lived = (WorkerProcess(pid, ours, slot, 0, 1) for pid, slot in ((4243, 2), (4244, 3)))
    for w in (killed, lived):
        sup.cgroups.prepare(w.slot, 64 << 20)
    (sup.cgroups.group(2) / "memory.events").write_text("oom 1\noom_kill 1\n")
    with caplog.at_level(logging.ERROR):
        assert sup.exits.killed_for_memory(lived) is None
        assert sup.exits.killed_for_memory(killed) == ("killed by the kernel for worker_memory_limit "
                                                  "(out of memory in its cgroup)")
    assert caplog.messages == ["worker 4243 killed by the kernel for worker_memory_limit (out of memory in its "
                               "cgroup): its clients in a call get a 502; a new worker takes its place"]
    assert restart_reason(None, killed.recycled, False, False) == "memory-limit" and lived.recycled is None
    ours.close()
    theirs.close()
