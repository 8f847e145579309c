"""docs/benchmarks.png: throughput of each server relative to sockact, one group of bars per scenario."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on a server; must come before pyplot is imported
import matplotlib.pyplot as plt

from bench.markdown import THROUGHPUT_SCENARIOS
from bench.report import DID_NOT_HOLD, bars


def draw(summary: dict[str, Any], path: Path) -> None:
    titles = summary["scenario_titles"]
    keys = [*THROUGHPUT_SCENARIOS, "idle"]
    servers = list(summary["load"]["keepalive"])
    width = 0.8 / len(servers)
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for i, server in enumerate(servers):
        heights = bars(summary, server, keys)
        xs = [j + (i - (len(servers) - 1) / 2) * width for j in range(len(keys))]
        drawn = ax.bar(xs, [h if isinstance(h, float) else 0 for h in heights], width, label=server)
        for x, h, bar in zip(xs, heights, drawn, strict=True):
            if h == DID_NOT_HOLD:
                ax.text(x, 0.02, DID_NOT_HOLD, rotation=90, ha="center", va="bottom", fontsize=6,
                        color=bar.get_facecolor())
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(keys)), [textwrap.fill(titles[k].replace("`", ""), 22) for k in keys], fontsize=8)
    ax.set_ylabel("requests/s relative to sockact (same run)")
    ax.set_title(f"Throughput relative to sockact, medians of one interleaved run ({summary['meta']['date']})")
    ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
