"""Training curves of one run: train loss, val loss, val accuracy, val perplexity against step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from reasonlab.io import atomic_write


def save_figure(fig: Figure, path: str | Path, tight: bool = True) -> None:
    """Lay out and write as PNG atomically, so a reader never sees half a plot. A figure that every
    run or comparison writes sets fixed margins instead (`tight=False`): tight_layout doubled its cost."""
    if tight:
        fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def plot_run_curves(events: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    train = [e for e in events if e.get("kind") == "train"]
    val = [e for e in events if e.get("kind") == "eval"]
    fig = Figure(figsize=(11, 7))
    axes = fig.subplots(2, 2)
    panels = [
        (axes[0, 0], train, "loss", "train loss"),
        (axes[0, 1], val, "loss", "val loss"),
        (axes[1, 0], val, "accuracy", "val next-token accuracy"),
        (axes[1, 1], val, "perplexity", "val perplexity"),
    ]
    for ax, series, key, label in panels:
        ax.plot([e["step"] for e in series], [e[key] for e in series], marker="o" if series is val else None, ms=3)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[1, 1].set_yscale("log")
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.92, wspace=0.18, hspace=0.32)
    save_figure(fig, path, tight=False)
