"""The memory pressure watch systemd asks for (MemoryPressureWatch=), with no supervisor.

A FIFO stands in for the PSI file where an event must be caused (a byte written is an event, as
sd-event takes it); the kernel's own PSI file, /proc/pressure/memory, checks that the trigger
systemd passes is one the kernel takes. The supervisor's side (every worker collects, the largest
is recycled) is tests/integration/test_memory_recycle.py.
"""

from __future__ import annotations

import base64
import os
import select

import pytest

from sockact.systemd.pressure import PressureWatch, describe

# What systemd passes by default (200 ms stalled per 2 s), its C string's NUL included: the kernel
# reads the write as a C string, and would cut the window's last digit without it.
TRIGGER = "c29tZSAyMDAwMDAgMjAwMDAwMAA="


@pytest.mark.parametrize("environ", [{}, {"MEMORY_PRESSURE_WATCH": "/dev/null", "MEMORY_PRESSURE_WRITE": TRIGGER}])
def test_nothing_to_watch_on_systemd_252_or_when_off(environ):
    assert PressureWatch.from_environ(environ) is None


def test_a_byte_in_a_fifo_is_one_event_and_is_taken_in(tmp_path):
    fifo = tmp_path / "memory.pressure"
    os.mkfifo(fifo)
    watch = PressureWatch.from_environ({"MEMORY_PRESSURE_WATCH": str(fifo), "MEMORY_PRESSURE_WRITE": TRIGGER})
    assert watch is not None
    try:
        outer = select.epoll()  # as the supervisor's selector waits on it: for reading
        outer.register(watch.fileno(), select.EPOLLIN)
        assert outer.poll(0) == [] and not watch.fired()
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.write(writer, b"!!")
        os.close(writer)  # the last writer gone: no hang-up for ever after (the watch holds it read-write)
        assert outer.poll(1.0) == [(watch.fileno(), select.EPOLLIN)]
        assert watch.fired()
        assert not watch.fired() and outer.poll(0) == []  # taken in: it fires once
        outer.close()
    finally:
        watch.close()


@pytest.mark.skipif(not os.path.exists("/proc/pressure/memory"), reason="a kernel without PSI")
def test_the_kernel_takes_systemd_s_trigger():
    if not os.access("/proc/pressure/memory", os.W_OK):
        pytest.skip("the system-wide PSI file is not writable here")
    watch = PressureWatch.from_environ({"MEMORY_PRESSURE_WATCH": "/proc/pressure/memory",
                                        "MEMORY_PRESSURE_WRITE": TRIGGER})
    assert watch is not None
    watch.close()
    assert base64.b64decode(TRIGGER) == b"some 200000 2000000\0"
    bad = base64.b64encode(b"some 2000000000 1000\0").decode()  # a threshold past its window
    with pytest.raises(OSError):
        PressureWatch.from_environ({"MEMORY_PRESSURE_WATCH": "/proc/pressure/memory", "MEMORY_PRESSURE_WRITE": bad})


@pytest.mark.parametrize(("environ", "error"), [
    ({"MEMORY_PRESSURE_WATCH": "/proc/self/status", "MEMORY_PRESSURE_WRITE": "not base64!"}, ValueError),
    ({"MEMORY_PRESSURE_WATCH": "/nonexistent/memory.pressure", "MEMORY_PRESSURE_WRITE": TRIGGER}, OSError),
    ({"MEMORY_PRESSURE_WATCH": "/dev/zero", "MEMORY_PRESSURE_WRITE": TRIGGER}, ValueError),
])
def test_what_cannot_be_watched_raises(environ, error):
    with pytest.raises(error):
        PressureWatch.from_environ(environ)


def test_the_log_line_names_the_file_and_the_trigger():
    assert describe({"MEMORY_PRESSURE_WATCH": "/sys/fs/cgroup/x/memory.pressure", "MEMORY_PRESSURE_WRITE": TRIGGER}) \
        == "/sys/fs/cgroup/x/memory.pressure (some 200000 2000000)"


def test_a_watched_file_that_hangs_up_is_dropped_rather_than_waking_the_loop_for_ever():
    read_end, write_end = os.pipe()
    watch = PressureWatch(read_end, select.EPOLLIN)
    outer = select.epoll()
    outer.register(watch.fileno(), select.EPOLLIN)
    os.close(write_end)  # a pipe whose writer is gone: hung up, for good
    assert outer.poll(1.0)
    assert not watch.fired()
    assert outer.poll(0) == []  # nothing wakes the loop any more
    outer.close()
    watch.close()
