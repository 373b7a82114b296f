"""Search results as ``results.csv`` and one self-contained ``results.html``.

``results.csv``: one row per hit, columns ``query, rank, path, score, distance, probability,
matches`` and the 12 predicted attribute groups (``age ... downcolour``, class names).
``distance`` is the cosine distance to the query (empty for a search by attributes only),
``probability`` the predicted probability of the description and ``matches`` whether the
predicted attributes match it (both empty for a search by image only); ``score`` is the
distance, or the probability for a search by attributes only (see
:mod:`reid_utils.search.ranking`).

``results.html``: the query (its images and/or the description) and its hits as thumbnails
embedded as base64 JPEG, each with its rank, score and predicted attributes. It needs no other
file, so it opens anywhere (a Colab download, an e-mail attachment), and a notebook shows it
inline with ``IPython.display.HTML``.
"""
from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from PIL import Image

from ..data import read_image
from ..errors import DataError
from ..io import atomic_open
from ..schema import GROUP_NAMES

COLUMNS: tuple[str, ...] = ("query", "rank", "path", "score", "distance", "probability", "matches") + GROUP_NAMES
THUMBNAIL_HEIGHT = 128

_STYLE = """
.reid-search{font-family:system-ui,sans-serif;font-size:13px;color:#222}
.reid-search h2{font-size:15px;margin:14px 0 4px}
.reid-search .row{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}
.reid-search figure{margin:0;width:112px;text-align:center}
.reid-search figure.query img{outline:3px solid #1f77b4}
.reid-search img{height:128px;max-width:112px;object-fit:contain;background:#eee}
.reid-search figcaption{font-size:11px;line-height:1.25;word-break:break-all}
.reid-search .attributes{color:#555;font-size:10px}
"""


def thumbnail_uri(path: str | os.PathLike, height: int = THUMBNAIL_HEIGHT) -> str:
    """``data:image/jpeg;base64,...`` of ``path`` resized to ``height`` pixels (aspect kept)."""
    try:
        image = read_image(path)
    except DataError:
        image = Image.new("RGB", (height // 2, height), "#999999")
    if image.height != height:
        image = image.resize((max(1, round(image.width * height / image.height)), height), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(path: str, caption: str, css_class: str = "") -> str:
    return (f'<figure class="{css_class}"><img src="{thumbnail_uri(path)}" alt="{html.escape(Path(path).name)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _number(value) -> str:
    return "" if value is None or pd.isna(value) else f"{float(value):.3f}"


def results_html(table: pd.DataFrame, queries: Sequence[str], where: str | None, title: str,
                 details: str = "") -> str:
    """The HTML page of one search: ``table`` as :func:`results_table` builds it, the query
    image paths, the description (or None), a title and a line of details."""
    parts = [f'<div class="reid-search"><style>{_STYLE}</style>', f"<h2>{html.escape(title)}</h2>"]
    if details:
        parts.append(f"<p>{html.escape(details)}</p>")
    query_row = [_figure(q, html.escape(Path(q).name), "query") for q in queries]
    if where:
        query_row.append(f"<p><b>description</b><br>{html.escape(where)}</p>")
    parts.append('<div class="row">' + "".join(query_row) + "</div>")
    parts.append("<h2>hits</h2>")
    hits = []
    for row in table.itertuples(index=False):
        row = row._asdict()
        lines = [f"<b>#{row['rank']}</b> {html.escape(Path(row['path']).name)}"]
        if _number(row["distance"]):
            lines.append(f"distance {_number(row['distance'])}")
        if _number(row["probability"]):
            matches = "" if row["matches"] is None else (" &#10003;" if row["matches"] else " &#10007;")
            lines.append(f"probability {_number(row['probability'])}{matches}")
        attributes = ", ".join(f"{g}: {html.escape(str(row[g]))}" for g in GROUP_NAMES if row.get(g))
        if attributes:
            lines.append(f'<span class="attributes">{attributes}</span>')
        hits.append(_figure(row["path"], "<br>".join(lines)))
    parts.append('<div class="row">' + "".join(hits) + "</div></div>")
    return "\n".join(parts)


def write_results(out_dir: str | os.PathLike, table: pd.DataFrame, page: str) -> dict[str, Path]:
    """Write ``out_dir/results.csv`` and ``out_dir/results.html`` (atomically) and return their paths."""
    out_dir = Path(out_dir)
    paths = {"csv": out_dir / "results.csv", "html": out_dir / "results.html"}
    with atomic_open(paths["csv"], "w") as f:
        table.to_csv(f, index=False, lineterminator="\n", float_format="%.6g")
    with atomic_open(paths["html"], "w") as f:
        f.write("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>reid_utils search</title></head>"
                f"<body>\n{page}\n</body></html>\n")
    return paths
