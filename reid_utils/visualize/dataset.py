"""Figures about a dataset (notebook 01): sizes, cameras, attribute rates, example images."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..data import read_image
from ..data.parsing import is_labelled
from ..schema import BINARY_COLUMNS, GROUPS, groups_to_binary, labelled_rows
from .figures import save_figure


def plot_dataset_overview(index, path=None):
    """Three panels about the training images of a :class:`~reid_utils.data.DatasetIndex`:
    images per identity (histogram), images per camera, and the positive rate of each of the
    30 binary attribute columns over the identities."""
    labelled = [r for r in index.train if is_labelled(r.pid)]
    _, per_identity = np.unique([r.pid for r in labelled], return_counts=True)
    cams, per_camera = np.unique([r.camid for r in index.train if r.camid >= 0], return_counts=True)
    attributes = {r.pid: r.attributes for r in labelled}  # labels are per identity
    rates = groups_to_binary(np.stack(list(attributes.values()))).mean(axis=0)  # (30,)

    fig = Figure(figsize=(14, 3.4), layout="constrained")
    ax_id, ax_cam, ax_attr = fig.subplots(1, 3, width_ratios=[1, 1, 2.6])
    low, high = int(per_identity.min()), int(per_identity.max())
    ax_id.hist(per_identity, bins=np.arange(low, high + 2) - 0.5 if high - low < 60 else 30, color="#1f77b4")
    ax_id.set(title=f"images per identity ({len(per_identity)} ids)", xlabel="images", ylabel="identities",
              xlim=(low - 2.5, high + 2.5) if high - low < 5 else None)
    ax_id.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_cam.bar([f"c{c + 1}" for c in cams], per_camera, color="#ff7f0e")
    ax_cam.set(title="training images per camera", ylabel="images")
    ax_attr.bar(range(len(BINARY_COLUMNS)), 100 * rates, color="#2ca02c")
    ax_attr.set_xticks(range(len(BINARY_COLUMNS)), BINARY_COLUMNS, rotation=90, fontsize=7)
    ax_attr.set(title="attribute positive rate over identities", ylabel="%", ylim=(0, 100))
    for ax in (ax_id, ax_cam, ax_attr):
        ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_attribute_examples(records: Sequence, seed: int = 0, image_size: tuple[int, int] = (64, 128),
                            per_row: int = 11, path=None):
    """An example training image of every class of the 12 attribute groups (randomly chosen,
    seeded), titled ``group / class``; groups are packed left to right, ``per_row`` panels per
    row. A class no image has gets an empty panel marked "(none)"."""
    rng = np.random.default_rng(seed)
    labelled = [r for r in records if bool(labelled_rows(np.asarray(r.attributes)[None])[0])]
    groups = np.stack([r.attributes for r in labelled])  # (N, 12)
    rows: list[list[tuple[int, int]]] = [[]]  # (group, class) per panel
    for g, group in enumerate(GROUPS):
        if rows[-1] and len(rows[-1]) + group.num_classes > per_row:
            rows.append([])
        rows[-1].extend((g, c) for c in range(group.num_classes))
    num_cols = max(per_row, max(len(row) for row in rows))
    fig = Figure(figsize=(0.66 * num_cols, 1.5 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), num_cols, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(num_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row):
                ax.axis("off")
                continue
            g, c = row[j]
            candidates = np.flatnonzero(groups[:, g] == c)
            if len(candidates):
                record = labelled[int(rng.choice(candidates))]
                ax.imshow(np.asarray(read_image(record.path).resize(image_size)))
            label = GROUPS[g].classes[c] + ("" if len(candidates) else "\n(none)")
            first = c == 0  # the group's name above its first class
            ax.set_title(f"{GROUPS[g].name}\n{label}" if first else f"\n{label}", fontsize=7,
                         loc="left" if first else "center")
    return save_figure(fig, path)
