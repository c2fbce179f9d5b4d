"""Uniqueness and representativeness from each image's nearest neighbours.

- uniqueness = 1 - cosine similarity to the single nearest other image: near 0 for
  (near-)duplicates, high for images unlike anything else in the set. The nearest neighbour,
  not the mean, is what makes a copy redundant.
- representativeness = mean cosine similarity to the k nearest neighbours (a local density):
  high in dense regions, i.e. typical images; low for outliers.

Both come from one exact kNN search (faiss IndexFlatIP on L2-normalised vectors).
"""

from __future__ import annotations

import numpy as np

from embedding_assets.common.neighbors import knn


def uniqueness_scores(vectors: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(uniqueness (n,), representativeness (n,)), float32. A lone image (n = 1) gets
    uniqueness 1 and representativeness 0."""
    sims, _ = knn(vectors, None, k)
    n = len(sims)
    if n == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    nearest = np.nan_to_num(sims[:, 0], nan=0.0)
    valid = ~np.isnan(sims)
    density = np.where(valid, sims, 0.0).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
    uniqueness = np.clip(1.0 - nearest, 0.0, 2.0).astype(np.float32)
    return uniqueness, density.astype(np.float32)
