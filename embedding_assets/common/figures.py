"""PNG pictures for Dagster metadata: bytes and markdown images (Dagster renders
`![alt](data:image/png;base64,...)` inline), and the score histogram every per-image asset
shows. matplotlib's object API (`Figure`, not pyplot), imported on first use: safe in worker
threads, no display needed, and the definitions stay light."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np

from embedding_assets.common import markdown

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def png_markdown(png: bytes | Figure, alt: str = "plot", dpi: int = 100) -> str:
    """A markdown image with the PNG inline as a data URI; pass it to `MetadataValue.md`."""
    return markdown.image(png if isinstance(png, bytes) else png_bytes(png, dpi=dpi), alt)


def histogram_markdown(
    values: np.ndarray, title: str, threshold: float | None = None, xlabel: str = ""
) -> str:
    """A histogram of the finite `values` with the flag threshold (when finite) drawn in, as
    a markdown image."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 2.8))
    ax = fig.add_subplot()
    values = np.asarray(values, dtype=np.float64)
    ax.hist(values[np.isfinite(values)], bins=40, color="#4c72b0")
    if threshold is not None and math.isfinite(threshold):
        ax.axvline(threshold, color="#d62728", linestyle="--", label=f"threshold {threshold:.3g}")
        ax.legend(fontsize=8, frameon=False)
    ax.set_title(title, fontsize=9)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    fig.tight_layout()
    return png_markdown(fig, title)
