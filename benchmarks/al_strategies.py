"""Batch selection strategies the active-learning benchmark compares with the product's own
(`embedding_assets.learning.selection`: margin uncertainty with the k-means diversity guard,
which the benchmark found best; benchmarks/results/active_learning.md). They live here, not in
the product, because no asset uses them."""

from __future__ import annotations

import numpy as np


def cluster_margin(
    scores: np.ndarray, clusters: np.ndarray, batch_size: int, candidate_factor: int = 10
) -> np.ndarray:
    """Cluster-margin (Citovsky et al. 2021): of the `batch_size` x `candidate_factor` most
    uncertain items, one per cluster in turn, the smallest clusters first and the most
    uncertain item of each cluster first. `clusters`: of the whole pool, computed once (not
    per round). Indexes into `scores`, in selection order. O(m log m) for m candidates: no
    distances, so it scales with the pool like a sort."""
    batch_size = min(batch_size, len(scores))
    if batch_size <= 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argsort(-scores, kind="stable")[: batch_size * max(1, candidate_factor)]
    c = np.asarray(clusters)[top]
    ids, inverse, sizes = np.unique(c, return_inverse=True, return_counts=True)
    # visiting order of the clusters: smallest first, ties by cluster id
    visit = np.empty(len(ids), dtype=np.int64)
    visit[np.lexsort((ids, sizes))] = np.arange(len(ids))
    # rank of each candidate within its cluster (0 = most uncertain): top is already sorted
    by_cluster = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(len(top), dtype=np.int64)
    rank[by_cluster] = np.arange(len(top)) - starts[inverse[by_cluster]]
    order = np.lexsort((visit[inverse], rank))  # round by round, clusters in visiting order
    return top[order[:batch_size]].astype(np.int64)


def _kmeanspp(
    sq_norms: np.ndarray, inner, batch_size: int, first: int, rng: np.random.Generator
) -> np.ndarray:
    """k-means++ seeding (D^2 sampling) over points known by their squared norms and
    `inner(j)`, the inner products of every point with point j; starts at `first`.
    O(n * batch_size) calls' worth of inner products, no n x n matrix."""
    n = len(sq_norms)
    batch_size = min(batch_size, n)
    chosen = [int(first)]
    d2 = np.maximum(sq_norms + sq_norms[first] - 2 * inner(first), 0.0)
    d2[first] = 0.0
    while len(chosen) < batch_size:
        total = d2.sum()
        if total <= 0:  # every remaining point duplicates a chosen one: take the rest in order
            rest = np.setdiff1d(np.arange(n), chosen)
            chosen += rest[: batch_size - len(chosen)].tolist()
            break
        j = int(rng.choice(n, p=d2 / total))
        chosen.append(j)
        d2 = np.minimum(d2, np.maximum(sq_norms + sq_norms[j] - 2 * inner(j), 0.0))
        d2[j] = 0.0
    return np.asarray(chosen, dtype=np.int64)


def margin_kmeanspp(
    scores: np.ndarray,
    x: np.ndarray,
    batch_size: int,
    candidate_factor: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """Of the `batch_size` x `candidate_factor` most uncertain items, a diverse batch by
    k-means++ seeding on their features `x`, starting from the most uncertain. Indexes into
    `scores`, in selection order. O(m * batch_size * d) for m candidates."""
    batch_size = min(batch_size, len(scores))
    if batch_size <= 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argsort(-scores, kind="stable")[: batch_size * max(1, candidate_factor)]
    xc = np.asarray(x, dtype=np.float32)[top]
    picked = _kmeanspp(
        (xc.astype(np.float64) ** 2).sum(axis=1),
        lambda j: xc @ xc[j],
        batch_size,
        0,
        np.random.default_rng(seed),
    )
    return top[picked]


def badge(
    p: np.ndarray,
    x: np.ndarray,
    batch_size: int,
    seed: int = 0,
    candidates: int | None = None,
) -> np.ndarray:
    """BADGE (Ash et al. 2020) for a linear softmax model: the gradient embedding of each item,
    (p - onehot(predicted class)) outer x, and k-means++ seeding over them, started at the
    largest gradient. Never materialized: <g_i, g_j> = <r_i, r_j> <x_i, x_j> with r = p -
    onehot. `candidates`: only the items with the largest gradient norms take part (None = all).
    Indexes into `p`, in selection order. O(n * batch_size * (d + classes))."""
    batch_size = min(batch_size, len(p))
    if batch_size <= 0:
        return np.zeros(0, dtype=np.int64)
    r = np.asarray(p, dtype=np.float64).copy()
    r[np.arange(len(r)), r.argmax(axis=1)] -= 1.0
    xf = np.asarray(x, dtype=np.float32)
    sq = (r**2).sum(axis=1) * (xf.astype(np.float64) ** 2).sum(axis=1)
    pool = np.argsort(-sq, kind="stable")
    if candidates is not None:
        pool = pool[: max(batch_size, candidates)]
    rp, xp, sp = r[pool], xf[pool], sq[pool]
    picked = _kmeanspp(
        sp, lambda j: (rp @ rp[j]) * (xp @ xp[j]), batch_size, 0, np.random.default_rng(seed)
    )
    return pool[picked]


def with_random_share(
    ranked: np.ndarray, n_pool: int, batch_size: int, share: float, seed: int = 0
) -> np.ndarray:
    """The first (1 - share) of a ranked selection (indexes into a pool of n_pool items), the
    rest drawn at random from the pool items not taken: a share of every batch that no model
    bias can steer."""
    batch_size = min(batch_size, n_pool)
    n_random = int(round(batch_size * share))
    head = np.asarray(ranked, dtype=np.int64)[: batch_size - n_random]
    rest = np.setdiff1d(np.arange(n_pool), head)
    tail = np.random.default_rng(seed).choice(rest, batch_size - len(head), replace=False)
    return np.concatenate([head, tail]).astype(np.int64)
