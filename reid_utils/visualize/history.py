"""Training curves: :func:`plot_history` draws what :func:`~reid_utils.engine.fit` returns.

Four panels: the loss and its components (training, and the validation attribute loss),
attribute accuracy (mean and per group), re-ID mAP and rank-1 (Market and course protocols),
and the learning rate. Built on a plain ``matplotlib.figure.Figure`` (no pyplot state), so it
works headless during training and displays inline in notebooks.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io import atomic_open
from ..losses import LOSS_PARTS
from ..schema import GROUP_NAMES


def plot_history(history: dict, path: str | os.PathLike | None = None, title: str | None = None):
    """Draw the curves of ``history`` (a dict of per-epoch lists, see :mod:`reid_utils.engine`).

    Args:
        history: at least ``"epoch"``; any of the known keys present are drawn.
        path: also save the figure there (PNG, written atomically).
        title: figure title.

    Returns:
        The matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure

    epochs = np.asarray(history.get("epoch", []), dtype=float)
    fig = Figure(figsize=(13, 3.4), layout="constrained")
    axes = fig.subplots(1, 4)

    def curve(ax, key: str, label: str, scale: float = 1.0, **style) -> bool:
        values = history.get(key)
        if not values or len(values) != len(epochs):
            return False
        values = np.asarray(values, dtype=float)
        known = ~np.isnan(values)  # validated every N epochs: join the validated ones
        if not known.any():
            return False
        ax.plot(epochs[known], values[known] * scale, marker="o" if known.sum() < 20 else None,
                markersize=3, label=label, **style)
        return True

    ax = axes[0]
    curve(ax, "train_loss", "train total", lw=2)
    for part in LOSS_PARTS:
        values = history.get(f"train_{part}_loss")
        if values and np.nanmax(np.abs(np.asarray(values, dtype=float))) > 0:
            curve(ax, f"train_{part}_loss", f"train {part}")
    curve(ax, "val_loss", "val attribute", ls="--")
    ax.set_title("loss")

    ax = axes[1]
    curve(ax, "attribute_accuracy", "mean", scale=100, lw=2, color="black")
    for name in GROUP_NAMES:
        curve(ax, f"attribute_accuracy_{name}", name, scale=100, lw=0.8, alpha=0.6)
    curve(ax, "mA", "mA (30 binary)", scale=100, ls="--", color="gray")
    ax.set_title("attribute accuracy (%)")

    ax = axes[2]
    curve(ax, "mAP", "mAP (market)", scale=100, lw=2)
    curve(ax, "rank1", "rank-1 (market)", scale=100, lw=2)
    curve(ax, "course_mAP", "mAP (course)", scale=100, ls="--")
    curve(ax, "course_rank1", "rank-1 (course)", scale=100, ls="--")
    ax.set_title("re-ID (%)")

    ax = axes[3]
    curve(ax, "lr", "lr")
    ax.set_title("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0] and ax is not axes[3]:
            ax.legend(fontsize=6 if ax is axes[1] else 7, ncol=2 if ax is axes[1] else 1)
    if title:
        fig.suptitle(title)
    if path is not None:
        path = Path(path)
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format=path.suffix.lstrip(".") or "png", dpi=100)
    return fig
