"""PNG of a replay: load, replicas per variant over time (one panel per policy), cumulative cost per policy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sim.replay import Result


def plot_results(results: Sequence[Result], path: str | Path, title: str = "gpumix replay") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(results)
    fig, axes = plt.subplots(n + 2, 1, figsize=(11, 2.2 * (n + 2)), sharex=True)
    load_ax, cost_ax, policy_axes = axes[0], axes[-1], axes[1:-1]
    first = results[0].series
    minutes = [t / 60.0 for t in first.times]
    load_ax.plot(minutes, first.arrivals_rps, color="black", lw=0.8)
    load_ax.set_ylabel("arrivals\nreq/s")
    load_ax.set_title(title)
    for ax, r in zip(policy_axes, results, strict=True):
        mins = [t / 60.0 for t in r.series.times]
        for variant, counts in r.series.replicas.items():
            if any(counts):
                ax.step(mins, counts, where="post", label=variant, lw=1.0)
        ax.set_ylabel("replicas")
        ax.set_title(f"{r.policy}: ${r.cost:.2f}, SLO {100 * r.attainment:.1f} %", fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="upper right")
    for r in results:
        cost_ax.plot([t / 60.0 for t in r.series.times], r.series.cost, label=r.policy, lw=1.0)
    cost_ax.set_ylabel("cumulative $")
    cost_ax.set_xlabel("minutes")
    cost_ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
