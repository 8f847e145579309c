"""A worker's own memory (USS) from /proc, and the size setting that bounds it."""

from __future__ import annotations

import mmap
import os

import pytest

from sockact.config import parsers
from sockact.supervisor import memory


def vm_rss(pid: int) -> int:
    """VmRSS from /proc/PID/status, in bytes: the kernel's own figure for what statm's second field counts."""
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


def test_uss_grows_with_what_the_process_writes_and_a_gone_process_has_none():
    before = memory.uss(os.getpid())
    assert before is not None and before > 0
    block = bytearray(64 << 20)  # zero-filled: every page written, so private
    after = memory.uss(os.getpid())
    assert after is not None and after - before >= 60 << 20
    reserved = mmap.mmap(-1, 256 << 20)  # address space never touched: not resident
    rss = memory.rss(os.getpid())
    assert rss is not None and rss >= after  # the cheap bound the supervisor reads first
    assert abs(rss - vm_rss(os.getpid())) < 4 << 20  # resident pages, not the address space's size
    reserved.close()
    del block
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    assert memory.uss(child) is None and memory.rss(child) is None


@pytest.mark.parametrize(("value", "size"), [
    ("512M", 512 << 20), ("2G", 2 << 30), ("64k", 64 << 10), ("1GiB", 1 << 30), ("100MB", 100 << 20),
    ("1048576", 1 << 20), (1 << 20, 1 << 20), ("0", 0), (0, 0),
])
def test_sizes(value, size):
    assert parsers.size_or_off(value) == size


@pytest.mark.parametrize("value", ["512X", "-1", "1.5G", "", "M", True, -5, 1.5])
def test_bad_sizes_are_refused(value):
    with pytest.raises(ValueError, match="expected a size"):
        parsers.size_or_off(value)
