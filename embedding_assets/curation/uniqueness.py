"""Uniqueness and representativeness from each image's nearest neighbours.

- uniqueness = 1 - cosine similarity to the single nearest other image: near 0 for
  (near-)duplicates, high for images unlike anything else in the set. The nearest neighbour,
  not the mean, is what makes a copy redundant.
- representativeness = mean cosine similarity to the k nearest neighbours (a local density):
  high in dense regions, i.e. typical images; low for outliers.

Both come from the embedding set's neighbour graph (common/neighbor_graph.py).
"""

from __future__ import annotations

import numpy as np


def uniqueness_scores(sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uniqueness (n,), representativeness (n,)), float32, from each image's similarities to
    its k nearest others ((n, k), descending, nan where missing: `neighbor_graph`). A lone
    image (n = 1) gets uniqueness 1 and representativeness 0."""
    n = len(sims)
    if n == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    nearest = np.nan_to_num(sims[:, 0], nan=0.0)
    valid = ~np.isnan(sims)
    density = np.where(valid, sims, 0.0).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
    uniqueness = np.clip(1.0 - nearest, 0.0, 2.0).astype(np.float32)
    return uniqueness, density.astype(np.float32)
