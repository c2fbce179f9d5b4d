"""Which unlabeled images to ask about next: uncertainty of the champion's probabilities, a
diversity guard over clusters, the round's size, and when more labels stop paying off. Plain
NumPy (scikit-learn's k-means imported where used).

`label_queue` uses the margin with the diversity guard (`select_batch`). The alternatives here
(`cluster_margin`, `margin_kmeanspp`, `badge`, `with_random_share`) are compared with it in
`benchmarks.active_learning`; none beat it there (benchmarks/results/active_learning.md)."""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np

UncertaintyMeasure = Literal["least_confident", "margin", "entropy"]
UNCERTAINTY_MEASURES: tuple[str, ...] = get_args(UncertaintyMeasure)
Strategy = Literal["uncertainty", "uniqueness", "random"]
COLD_START = "cold_start"  # the strategy of rounds chosen before any classifier exists
WAITING = "waiting for labels"  # the status of classifier and predictions before then
COLD_START_MIN, COLD_START_MAX = 20, 200  # images in a cold-start round (unless batch_size)


def uncertainty(p: np.ndarray) -> dict[str, np.ndarray]:
    """Least-confident (1 - max p), margin (top-1 minus top-2; small = unsure) and entropy."""
    top = np.sort(p, axis=1)[:, ::-1]
    second = top[:, 1] if p.shape[1] > 1 else np.zeros(len(p))
    safe = np.clip(p, 1e-12, 1.0)
    return {
        "least_confident": 1.0 - top[:, 0],
        "margin": top[:, 0] - second,
        "entropy": -(p * np.log(safe)).sum(axis=1),
    }


def uncertainty_score(p: np.ndarray, measure: str) -> np.ndarray:
    """Higher = more uncertain, whatever the measure."""
    if measure not in UNCERTAINTY_MEASURES:
        raise ValueError(f"uncertainty={measure!r} is not one of {UNCERTAINTY_MEASURES}")
    u = uncertainty(p)[measure]
    return 1.0 - u if measure == "margin" else u


def uncertainty_score_of(pool: dict[str, np.ndarray], measure: str) -> np.ndarray:
    """Higher = more uncertain, from a pool's stored uncertainty columns."""
    if measure not in UNCERTAINTY_MEASURES:
        raise ValueError(f"uncertainty={measure!r} is not one of {UNCERTAINTY_MEASURES}")
    column = pool[measure]
    return 1.0 - column if measure == "margin" else column


def default_batch_size(pool: int, fraction: float = 0.05) -> int:
    return max(1, math.ceil(pool * fraction)) if pool else 0


def cold_start_batch_size(pool: int, fraction: float = 0.05) -> int:
    """A first round big enough to meet two classes with two images each in most data, small
    enough to label in one sitting before a model helps: the usual share, within 20..200."""
    wanted = min(max(default_batch_size(pool, fraction), COLD_START_MIN), COLD_START_MAX)
    return min(pool, wanted)


def representatives(x: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(indexes, cluster ranks) of k items that stand for `x`: the one nearest each k-means
    centre, the biggest cluster's first. A cold start labels these rather than random ones so
    that the first labels cover every mode of the data, rare ones included."""
    from sklearn.cluster import KMeans

    k = max(0, min(k, len(x)))
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    km = KMeans(k, n_init=1, random_state=seed).fit(x)
    sizes = np.bincount(km.labels_, minlength=k)
    order = np.argsort(-sizes, kind="stable")
    picked = []
    for c in order:
        members = np.flatnonzero(km.labels_ == c)
        gaps = ((x[members] - km.cluster_centers_[c]) ** 2).sum(axis=1)
        picked.append(int(members[gaps.argmin()]))
    return np.asarray(picked, dtype=np.int64), np.arange(k, dtype=np.int64)


def kmeans_clusters(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    from sklearn.cluster import KMeans

    k = max(1, min(k, len(x)))
    if k == 1:
        return np.zeros(len(x), dtype=np.int64)
    return KMeans(k, n_init=3, random_state=seed).fit_predict(x).astype(np.int64)


def select_batch(
    scores: np.ndarray, clusters: np.ndarray, batch_size: int, max_cluster_share: float = 0.3
) -> np.ndarray:
    """Indexes of the most uncertain items such that no cluster fills more than
    `max_cluster_share` of the batch; only when the candidates span too few clusters is the
    rest filled by uncertainty alone. Returned in selection order."""
    order = np.argsort(-scores, kind="stable")
    batch_size = min(batch_size, len(scores))
    cap = max(1, math.ceil(batch_size * max_cluster_share))
    taken: list[int] = []
    per_cluster: dict[int, int] = {}
    for i in order:
        if len(taken) == batch_size:
            break
        c = int(clusters[i])
        if per_cluster.get(c, 0) < cap:
            taken.append(int(i))
            per_cluster[c] = per_cluster.get(c, 0) + 1
    if len(taken) < batch_size:
        chosen = set(taken)
        taken += [int(i) for i in order if int(i) not in chosen][: batch_size - len(taken)]
    return np.asarray(taken, dtype=np.int64)


def plateaued(accuracies: list[float], patience: int, min_delta: float) -> bool:
    """True when the last `patience` rounds improved on the best before them by < min_delta."""
    if len(accuracies) <= patience:
        return False
    before = max(accuracies[:-patience])
    return max(accuracies[-patience:]) - before < min_delta
