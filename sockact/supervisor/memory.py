"""How much memory a worker holds of its own: its USS, read from /proc/PID/smaps_rollup.

USS (unique set size) is the memory a process alone maps: its private pages, clean and dirty,
plus those of them swapped out. It is what a recycle gives back, and what a leak grows. RSS
counts every page shared with the supervisor and the other workers after the fork (the
preloaded app, the interpreter) once per worker, so it would blame each worker for the whole
pool's shared pages. PSS divides those pages among the processes that share them, so a worker's
PSS rises when a sibling exits and falls when one is born: with a limit close to it, recycling
one worker could push the others over. USS moves only with what the worker itself does.
(A shared page a worker writes to becomes private, copy-on-write, and counts from then on.)

smaps_rollup (Linux 4.14) sums every mapping in the kernel, one read per worker, but that read
walks the worker's pages: about 50 us per resident MiB, 10 ms for a 200 MiB worker, on the
supervisor's one thread. So the supervisor first reads RSS from /proc/PID/statm, a constant-time
counter: USS is never more than RSS, so a worker whose RSS is within the limit needs no closer look.
"""

from __future__ import annotations

import os

_USS_FIELDS = (b"Private_Clean:", b"Private_Dirty:", b"SwapPss:")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss(pid: int) -> int | None:
    """Bytes of ``pid`` resident in memory, shared pages included (an upper bound of its USS, but for
    swapped-out pages); None when it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def uss(pid: int) -> int | None:
    """Bytes ``pid`` holds of its own; None when it is gone (or /proc says nothing)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            text = f.read()
    except OSError:
        return None
    total, found = 0, False
    for line in text.splitlines():
        if line.startswith(_USS_FIELDS):
            total += int(line.split()[1]) * 1024  # kB
            found = True
    return total if found else None


def megabytes(nbytes: int) -> str:
    """'512.0M' (MiB, as the setting's units), for a log line."""
    return f"{nbytes / (1 << 20):.1f}M"
