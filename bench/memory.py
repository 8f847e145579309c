"""Memory: the sockact supervisor's RSS and what one more worker costs, with and without --preload.

For 2 and then 3 workers, with and without --preload, sockact serves bench.apps for a few requests
(so each worker has imported and run the app), and the harness reads /proc:

- the supervisor's RSS (VmRSS);
- each worker's USS, the memory only it holds: Private_Clean + Private_Dirty of smaps_rollup;
- the total PSS of supervisor and workers, whose growth from 2 to 3 workers is what the third costs.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.servers import Fleet, Server, get, sockact_argv

WARM_REQUESTS = 100  # enough that every worker has served (the supervisor picks the longest idle)
KIB = 1024


def smaps_rollup(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/smaps_rollup, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        value = rest.split()
        if len(value) == 2 and value[1] == "kB":
            fields[name] = int(value[0]) * KIB
    return fields


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KIB
    raise LookupError(f"no VmRSS for {pid}")


def uss(pid: int) -> int:
    fields = smaps_rollup(pid)
    return fields["Private_Clean"] + fields["Private_Dirty"]


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def sample(fleet: Fleet, workers: int, preload: bool) -> dict[str, Any]:
    """Start sockact, warm it, and read its memory; stops it again."""
    extra = ("--preload",) if preload else ()
    proc, port = fleet.serve(Server(f"sockact-mem-{workers}{'-preload' if preload else ''}",
                                    sockact_argv(*extra, workers=workers)))
    try:
        for _ in range(WARM_REQUESTS):
            get(port)
        time.sleep(0.2)  # let the last worker report back idle
        pids = children(proc.pid)
        return {"supervisor_rss": rss(proc.pid), "worker_uss": sorted(uss(p) for p in pids),
                "total_pss": sum(smaps_rollup(p)["Pss"] for p in [proc.pid, *pids])}
    finally:
        fleet.stop(proc)


def measure(fleet: Fleet) -> dict[str, Any]:
    """Both settings of --preload, each at 2 and 3 workers."""
    results: dict[str, Any] = {}
    for preload in (False, True):
        two, three = sample(fleet, 2, preload), sample(fleet, 3, preload)
        results["preload" if preload else "no_preload"] = {
            "supervisor_rss": two["supervisor_rss"],
            "worker_uss_2": statistics.median(two["worker_uss"]),
            "worker_uss_3": statistics.median(three["worker_uss"]),
            "extra_worker_pss": three["total_pss"] - two["total_pss"],
        }
    return results
