"""Pictures for the active-learning assets, as PNG bytes that the UI shows inline.

matplotlib is imported on first use: the Dagster definitions import this module.
"""

from __future__ import annotations

import io

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def confusion_png(matrix: np.ndarray, classes: list[str], title: str) -> bytes:
    size = 2.5 + 0.45 * len(classes)
    fig, ax = _pyplot().subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("label")
    ax.set_title(title)
    top = matrix.max() or 1
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    return _png(fig)


def learning_curve_png(n_labels: list[int], accuracy: list[float]) -> bytes:
    fig, ax = _pyplot().subplots(figsize=(5, 3.2))
    ax.plot(n_labels, accuracy, marker="o")
    ax.set_xlabel("labeled images")
    ax.set_ylabel("accuracy (held out / cv)")
    ax.set_title("Learning curve")
    ax.grid(alpha=0.3)
    return _png(fig)
