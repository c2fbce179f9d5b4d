"""Finding image ids in an array of ids, vectorized: the lookup every stored set (a search
snapshot, the usable images, the served tags, an index being updated) needs."""

from __future__ import annotations

import numpy as np


def positions(
    sorted_ids: np.ndarray, wanted: np.ndarray, order: np.ndarray | None = None
) -> np.ndarray:
    """Where each of `wanted` is in `sorted_ids` (ascending), -1 for one it lacks; with
    `order` (the argsort that sorted an unsorted array), its row in that unsorted array."""
    wanted = np.asarray(wanted, dtype=np.int64).reshape(-1)
    if len(sorted_ids) == 0:
        return np.full(len(wanted), -1, dtype=np.int64)
    pos = np.clip(np.searchsorted(sorted_ids, wanted), 0, len(sorted_ids) - 1)
    rows = pos if order is None else order[pos]
    return np.where(sorted_ids[pos] == wanted, rows, -1)
