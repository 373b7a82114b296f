"""Figures for notebook 04 and the README (matplotlib).

Every function builds a :class:`matplotlib.figure.Figure` directly (no ``pyplot`` state, no
interactive backend: it works the same in a notebook, a script and a test), returns it, and
saves it when ``path`` is given (``img/<name>.png`` for the README). In a notebook, a returned
figure as the last expression of a cell is shown once.

* :func:`plot_attribute_accuracy`: per-attribute accuracy bars, one colour per model.
* :func:`plot_retrieval_grid`: each query and its top-10, framed green (match) or red.
* :func:`plot_tsne`: t-SNE of embeddings coloured by identity.
* :func:`plot_attribute_boxes`: ALM attribute boxes drawn on images.
* :func:`plot_cmc`: CMC curves.
* :func:`plot_confusion_matrices`: confusion matrices (age, upper and lower colours).
* :func:`plot_images`: a row of images with titles (attribute search results).

Training curves are :func:`reid_utils.visualize.plot_history` (next to the engine that writes them).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from ..models.alm import boxes_to_pixels
from ..schema import BINARY_COLUMNS, GROUP_NAMES, GROUPS

MATCH_COLOUR = "#2ca02c"
MISMATCH_COLOUR = "#d62728"
LEVEL_COLOURS = ("#1f77b4", "#ff7f0e", "#d62728")  # ALM pyramid levels: fine, middle, coarse


def save_figure(fig: Figure, path: str | os.PathLike | None, dpi: int = 110) -> Figure:
    """Save ``fig`` to ``path`` (folders created) when ``path`` is given; return ``fig``."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return fig


def _load_image(image, size: tuple[int, int] | None = None) -> np.ndarray:
    """A path, PIL image or ``(H, W, 3)`` array -> ``(H, W, 3)`` uint8 array, resized to ``size=(W, H)``."""
    if isinstance(image, np.ndarray):
        pil = Image.fromarray(image)
    elif isinstance(image, Image.Image):
        pil = image
    else:
        with Image.open(image) as opened:
            pil = opened.convert("RGB")
    if size is not None and pil.size != size:
        pil = pil.resize(size, Image.BILINEAR)
    return np.asarray(pil.convert("RGB"))


# ---------------------------------------------------------------------------------------------
# Attribute accuracy


def plot_attribute_accuracy(accuracies: Mapping[str, float] | Mapping[str, Mapping[str, float]], path=None,
                            title: str = "Attribute accuracy") -> Figure:
    """Per-attribute accuracy bars.

    ``accuracies``: ``{group: accuracy}`` for one model, or ``{model: {group: accuracy}}`` for
    several (grouped bars). Accuracies in [0, 1]; groups in schema order, then any others
    (e.g. ``"mean"``).
    """
    if accuracies and all(isinstance(v, Mapping) for v in accuracies.values()):
        models = {str(m): dict(v) for m, v in accuracies.items()}
    else:
        models = {"": dict(accuracies)}
    names = [g for g in GROUP_NAMES if any(g in m for m in models.values())]
    names += sorted({k for m in models.values() for k in m} - set(names))
    fig = Figure(figsize=(max(6.0, 0.55 * len(names) * max(1, len(models)) ** 0.5 + 2), 3.6), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(models)
    x = np.arange(len(names))
    for i, (model, acc) in enumerate(models.items()):
        values = [100 * float(acc.get(n, np.nan)) for n in names]
        bars = ax.bar(x + (i - (len(models) - 1) / 2) * width, values, width, label=model or None)
        if len(models) == 1:
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if len(models) > 1:
        ax.legend(fontsize=8, ncols=min(len(models), 4), loc="lower right")
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Retrieval


def plot_retrieval_grid(query_paths: Sequence, gallery_paths: Sequence, ranked: np.ndarray,
                        q_pids: Sequence[int], g_pids: Sequence[int], top_k: int = 10,
                        image_size: tuple[int, int] = (64, 128), path=None) -> Figure:
    """Each query (first column) and its ``top_k`` results, framed green (same identity) or red.

    Args:
        query_paths: ``Q`` image paths; gallery_paths: ``G`` image paths.
        ranked: ``(Q, >= top_k)`` gallery indices, best first (:func:`reid_utils.metrics.retrieval.rank_gallery`).
        q_pids: ``(Q,)``; g_pids: ``(G,)`` person ids (a match is ``g_pid == q_pid``).
        image_size: ``(W, H)`` of the drawn thumbnails.
    """
    ranked = np.asarray(ranked)[:, :top_k]
    num_queries, k = ranked.shape
    fig = Figure(figsize=(0.85 * (k + 1), 1.75 * num_queries), layout="constrained")
    axes = fig.subplots(num_queries, k + 1, squeeze=False)
    for row in range(num_queries):
        _show(axes[row, 0], _load_image(query_paths[row], image_size), "query", "black", 1.0)
        for col in range(k):
            g = int(ranked[row, col])
            colour = MATCH_COLOUR if int(g_pids[g]) == int(q_pids[row]) else MISMATCH_COLOUR
            _show(axes[row, col + 1], _load_image(gallery_paths[g], image_size), str(col + 1), colour, 3.0)
    return save_figure(fig, path)


def _show(ax, image: np.ndarray, title: str, frame: str, linewidth: float) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    for spine in ax.spines.values():
        spine.set_edgecolor(frame)
        spine.set_linewidth(linewidth)


def plot_images(images: Sequence, titles: Sequence[str] | None = None, ncols: int = 10,
                image_size: tuple[int, int] = (64, 128), path=None) -> Figure:
    """A grid of images with optional titles (e.g. attribute-search results)."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, (n + ncols - 1) // ncols)
    fig = Figure(figsize=(0.9 * ncols, 1.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < n:
            _show(ax, _load_image(images[i], image_size), titles[i] if titles else "", "black", 0.5)
        else:
            ax.axis("off")
    return save_figure(fig, path)


def plot_cmc(curves: Mapping[str, Sequence[float]], max_rank: int = 20, path=None,
             title: str = "CMC") -> Figure:
    """CMC curves: ``{label: cmc}`` where ``cmc[k-1]`` is the rank-k rate in [0, 1]."""
    fig = Figure(figsize=(5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for label, cmc in curves.items():
        cmc = np.asarray(cmc, dtype=float)[:max_rank]
        ax.plot(np.arange(1, len(cmc) + 1), 100 * cmc, marker="o", markersize=3, label=f"{label} (R1 {100 * cmc[0]:.1f})")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def plot_tsne(embeddings: np.ndarray, pids: Sequence[int], num_ids: int = 20, seed: int = 0,
              path=None, title: str = "t-SNE of embeddings") -> Figure:
    """t-SNE (scikit-learn) of ``(N, D)`` embeddings, coloured by identity.

    Keeps the ``num_ids`` identities with the most images (ties by pid) so colours stay
    distinguishable; pid -1 / 0 (junk, distractors) are left out.
    """
    from sklearn.manifold import TSNE

    embeddings = np.asarray(embeddings, dtype=np.float32)
    pids = np.asarray(pids)
    ids, counts = np.unique(pids[pids > 0], return_counts=True)
    order = np.lexsort((ids, -counts))
    keep_ids = ids[order[:num_ids]]
    keep = np.isin(pids, keep_ids)
    x, y = embeddings[keep], pids[keep]
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    if len(x) >= 5:
        perplexity = float(min(30.0, (len(x) - 1) / 3))
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
        cmap = _identity_colours(len(keep_ids))
        for i, pid in enumerate(keep_ids):
            sel = y == pid
            ax.scatter(points[sel, 0], points[sel, 1], s=14, color=cmap[i], label=str(pid))
        if len(keep_ids) <= 20:
            ax.legend(fontsize=6, ncols=2, title="pid", title_fontsize=7, loc="best", markerscale=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title} ({len(keep_ids)} identities, {len(x)} images)")
    return save_figure(fig, path)


def _identity_colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n <= 20 else "hsv"]
    return [cmap(i / max(n, 1)) if n > 20 else cmap(i) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Attributes


def attribute_box_labels(num_boxes: int) -> tuple[str, ...]:
    """Names of the ``K`` ALM boxes: the 30 binary columns, or the 41 group classes."""
    if num_boxes == len(BINARY_COLUMNS):
        return BINARY_COLUMNS
    labels = tuple(f"{g.name}={c}" for g in GROUPS for c in g.classes)
    if num_boxes == len(labels):
        return labels
    return tuple(str(k) for k in range(num_boxes))


def plot_attribute_boxes(images: Sequence, boxes, attributes: Sequence[str] = ("hat", "backpack", "upred", "downblue"),
                         image_size: tuple[int, int] = (64, 128), path=None) -> Figure:
    """ALM attribute regions drawn on images (ALM paper, figure 5).

    One row per image, one column per attribute; each panel shows the attribute's box at the
    three pyramid levels (blue fine / orange middle / red coarse).

    Args:
        images: ``B`` image paths (or PIL images / arrays), drawn at ``image_size = (W, H)``.
        boxes: ``(B, 3, K, 4)`` ALM boxes ``(s_x, s_y, t_x, t_y)`` from ``model.eval()(x)["boxes"]``.
        attributes: names among :func:`attribute_box_labels` (``K = 30``: binary columns).
    """
    import torch

    boxes = torch.as_tensor(np.asarray(boxes) if not isinstance(boxes, torch.Tensor) else boxes).float().cpu()
    if boxes.ndim != 4 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (B, 3, K, 4), got {tuple(boxes.shape)}")
    labels = attribute_box_labels(boxes.shape[2])
    unknown = [a for a in attributes if a not in labels]
    if unknown:
        raise KeyError(f"unknown attribute(s) {unknown} for {boxes.shape[2]} boxes; valid: {', '.join(labels)}")
    width, height = image_size
    x0, y0, x1, y1 = (t.numpy() for t in boxes_to_pixels(boxes, height, width))  # each (B, 3, K)
    num_images = min(len(images), boxes.shape[0])
    fig = Figure(figsize=(1.1 * len(attributes) + 0.4, 2.0 * num_images), layout="constrained")
    axes = fig.subplots(num_images, len(attributes), squeeze=False)
    for b in range(num_images):
        image = _load_image(images[b], image_size)
        for j, name in enumerate(attributes):
            k = labels.index(name)
            ax = axes[b, j]
            _show(ax, image, name if b == 0 else "", "black", 0.5)
            for level in range(boxes.shape[1]):
                ax.add_patch(Rectangle((x0[b, level, k], y0[b, level, k]), x1[b, level, k] - x0[b, level, k],
                                       y1[b, level, k] - y0[b, level, k], fill=False,
                                       edgecolor=LEVEL_COLOURS[level % 3], linewidth=1.5))
    return save_figure(fig, path)


def plot_confusion_matrices(confusions: Mapping[str, np.ndarray], path=None, normalize: bool = True) -> Figure:
    """Confusion matrices side by side, ``{group name: (C, C) counts}`` (rows = true class).

    Class names come from the schema when the key is a group name. ``normalize`` shows each
    row as fractions of the true class (counts are written in the cells).
    """
    n = max(len(confusions), 1)
    sizes = [np.asarray(m).shape[0] for m in confusions.values()]
    fig = Figure(figsize=(sum(0.45 * s + 1.6 for s in sizes) or 4, 0.45 * max(sizes, default=4) + 1.6),
                 layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, matrix) in zip(axes, confusions.items()):
        counts = np.asarray(matrix, dtype=float)
        shown = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
        ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
        classes = GROUPS[GROUP_NAMES.index(name)].classes if name in GROUP_NAMES else range(len(counts))
        classes = [str(c)[:5] for c in classes]
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
        for (i, j), v in np.ndenumerate(counts):
            if v:
                ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=6,
                        color="white" if shown[i, j] > 0.5 else "black")
    return save_figure(fig, path)
