"""docs/benchmarks.png: throughput of each server relative to sockact, one group of bars per scenario."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on a server; must come before pyplot is imported
import matplotlib.pyplot as plt

from bench.markdown import THROUGHPUT_SCENARIOS
from bench.report import BASE, median_throughput, ratio


def draw(results: dict[str, Any], path: Path) -> None:
    load, titles = results["load"], results["scenario_titles"]
    keys = [*THROUGHPUT_SCENARIOS, "idle"]
    servers = list(load["keepalive"])
    width = 0.8 / len(servers)
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for i, server in enumerate(servers):
        heights = [ratio(median_throughput(load[k].get(server, [])), median_throughput(load[k].get(BASE, [])))
                   for k in keys]
        xs = [j + (i - (len(servers) - 1) / 2) * width for j in range(len(keys))]
        ax.bar(xs, [h or 0 for h in heights], width, label=server)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(keys)), [textwrap.fill(titles[k].replace("`", ""), 22) for k in keys], fontsize=8)
    ax.set_ylabel("requests/s relative to sockact (same run)")
    ax.set_title(f"Throughput relative to sockact, medians of one interleaved run ({results['meta']['date']})")
    ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
