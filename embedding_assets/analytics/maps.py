"""Maps of the embedding space for people: 2-D scatter pictures (coloured by label, cluster and
anomaly flag) and a self-contained interactive HTML map (no JavaScript library, works offline).

Uses matplotlib's object API (`Figure`, not pyplot), so it is safe in worker threads and never
needs a display.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedding_assets.common import markdown

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FLAG_COLOUR = "#d62728"
PLAIN_COLOUR = "#d9d9d9"  # unlabeled / normal points: lighter than any palette colour
MISSING = "unlabeled"
MAP_TEMPLATE = Path(__file__).with_name("map_template.html")


def plot_sample(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Row indexes to draw: all rows, or a random `max_points` of them (sorted)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def map_figure(
    coords: np.ndarray,
    labels: Sequence[object],
    clusters: np.ndarray | None,
    flagged: np.ndarray | None,
    title: str,
) -> Figure:
    """One row of panels over the same 2-D coordinates: coloured by label, by cluster, and
    with anomalies in red (a panel is left out when its column is None)."""
    from matplotlib.figure import Figure

    panels: list[tuple[str, object]] = [("label", labels)]
    if clusters is not None:
        panels.append(("cluster", clusters))
    if flagged is not None:
        panels.append(("anomaly flag", flagged))
    fig = Figure(figsize=(5 * len(panels), 4.8))
    size = float(np.clip(8000 / max(len(coords), 1), 0.5, 20))
    for i, (name, values) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        if name == "anomaly flag":
            _draw_flags(ax, coords, np.asarray(values, dtype=bool), size)
        else:
            _draw_categories(ax, coords, values, size)
        ax.set_title(f"{title} — {name}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def _draw_categories(ax, coords: np.ndarray, values: Sequence[object], size: float) -> None:
    names = np.array([MISSING if _missing(v) else str(v) for v in values], dtype=object)
    cats = sorted(set(names) - {MISSING}, key=_natural)
    palette = _palette(len(cats))
    if (names == MISSING).any():
        m = names == MISSING
        ax.scatter(*coords[m].T, s=size, c=PLAIN_COLOUR, linewidths=0, label=MISSING)
    for cat, colour in zip(cats, palette, strict=True):
        m = names == cat
        ax.scatter(*coords[m].T, s=size, color=colour, linewidths=0, label=cat)
    if 0 < len(cats) <= 20:
        ax.legend(fontsize=7, markerscale=max(1.0, 12 / size), loc="best", frameon=False, ncol=2)


def _draw_flags(ax, coords: np.ndarray, flagged: np.ndarray, size: float) -> None:
    ax.scatter(*coords[~flagged].T, s=size, c=PLAIN_COLOUR, linewidths=0, label="normal")
    ax.scatter(
        *coords[flagged].T,
        s=size * 2,
        c=FLAG_COLOUR,
        linewidths=0,
        label=f"flagged ({flagged.sum()})",
    )
    ax.legend(fontsize=7, loc="best", frameon=False)


def _palette(n: int) -> list:
    """tab10 (black for its grey) up to 10 categories, else tab20 without its greys: grey
    means "no category" here."""
    from matplotlib import colormaps

    if n <= 10:
        colours = [colormaps["tab10"](i) if i != 7 else (0, 0, 0, 1) for i in range(10)]
    else:
        colours = [colormaps["tab20"](i) for i in range(20) if i not in (14, 15)]
    return [colours[i % len(colours)] for i in range(n)]


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _natural(name: str) -> tuple:
    return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name)


def thumbnail_uris(paths: Sequence[str], size: int = 48) -> list[str | None]:
    """Small inline PNG thumbnails (None where a file cannot be read)."""
    from embedding_assets.catalog.images import open_image

    out: list[str | None] = []
    for path in paths:
        try:
            with open_image(path) as img:
                img.thumbnail((size, size))
                buf = io.BytesIO()
                img.convert("RGB").save(buf, format="PNG", optimize=True)
            out.append(markdown.data_uri(buf.getvalue()))
        except (OSError, ValueError):
            out.append(None)
    return out


def write_html_map(
    path: Path,
    maps: Mapping[str, np.ndarray],
    points: Mapping[str, Sequence[object]],
    title: str,
    thumbnails: Sequence[str | None] | None = None,
) -> Path:
    """An interactive scatter map as one HTML file: a selector per map (e.g. pca/umap/tsne)
    and per colour column, and a tooltip with every column of `points` (plus a thumbnail) on
    hover. `maps` values are (n, 2) arrays over the same n rows as each `points` column."""
    data = {
        "title": title,
        "maps": {k: np.round(np.asarray(v, dtype=np.float64), 4).tolist() for k, v in maps.items()},
        "columns": {k: [_jsonable(v) for v in vals] for k, vals in points.items()},
        "thumbs": list(thumbnails) if thumbnails is not None else None,
    }
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(
        MAP_TEMPLATE.read_text().replace("__TITLE__", _escape(title)).replace("__DATA__", payload)
    )
    tmp.replace(path)
    return path


def _jsonable(value: object) -> object:
    if _missing(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    return round(value, 4) if isinstance(value, float) else value


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
