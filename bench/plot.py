"""Latency distributions as a PNG: one empirical CDF per series, log time axis (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")  # files only, no display

import matplotlib.pyplot as plt


def plot_latencies(path: Path, series: dict[str, list[float]]) -> Path:
    """Write ``path``: for each series (ms samples) the share of samples at or below a time."""
    groups = {"P2 alarm latency": "P2", "P3 notification latency": "P3"}
    fig, axes = plt.subplots(1, len(groups), figsize=(12, 4.5), squeeze=False)
    for ax, (title, prefix) in zip(axes[0], groups.items(), strict=True):
        for name, samples in series.items():
            if not name.startswith(prefix) or not samples:
                continue
            ordered = sorted(samples)
            share = [(i + 1) / len(ordered) for i in range(len(ordered))]
            ax.step(ordered, share, where="post", label=f"{name[3:]} (n={len(ordered)})")
        ax.set_xscale("log")
        ax.set_xlabel("ms (log)")
        ax.set_ylabel("share of samples at or below")
        ax.set_title(title)
        ax.axhline(0.99, color="grey", linewidth=0.5, linestyle=":")
        ax.grid(True, which="both", linewidth=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
