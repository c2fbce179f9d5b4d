"""Embedding quality as the reference papers measure it, on one labeled set of vectors.

Every image of the set is a query against all the others (leave-one-out), so no image is ever
its own neighbour: kNN top-1 accuracy, mean Precision@5 in the GUIE variant (a query with only
R < 5 relevant items is scored over its top R results, so it is not penalized for them),
macro-F1 of a k-nearest-neighbour vote and the cosine silhouette of the labels.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, silhouette_score

from embedding_assets.common.neighbors import knn


def neighbours(X: np.ndarray, k: int) -> np.ndarray:
    """(n, k) positions of each row's k most cosine-similar other rows, nearest first."""
    n = len(X)
    if n < 2:
        raise ValueError(f"need at least 2 vectors to find neighbours, got {n}")
    return knn(X, k=min(k, n - 1))[1]


def knn_hits(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per image: does its nearest other image have the same label? (bool, for paired tests)"""
    y = np.asarray(y)
    return y[neighbours(X, 1)[:, 0]] == y


def knn_top1(X: np.ndarray, y: np.ndarray) -> float:
    """Share of images whose nearest other image has the same label."""
    return float(np.mean(knn_hits(X, y)))


def precision_at_k(X: np.ndarray, y: np.ndarray, k: int = 5) -> float:
    """Mean Precision@k, GUIE variant: each query's precision is taken over its top
    min(k, R) results, R = other images with its label; queries with R = 0 are skipped."""
    y = np.asarray(y)
    nn = neighbours(X, k)
    labels, counts = np.unique(y, return_counts=True)
    relevant = dict(zip(labels.tolist(), (counts - 1).tolist(), strict=True))
    scores = []
    for i in range(len(y)):
        r = min(nn.shape[1], relevant[y[i].item()])
        if r > 0:
            scores.append(np.mean(y[nn[i, :r]] == y[i]))
    return float(np.mean(scores)) if scores else 0.0


def knn_predict(X: np.ndarray, y: np.ndarray, k: int = 5) -> np.ndarray:
    """Leave-one-out majority vote of the k nearest images; a tie goes to the nearer label."""
    y = np.asarray(y)
    nn = neighbours(X, k)
    pred = np.empty(len(y), dtype=y.dtype)
    for i, row in enumerate(y[nn]):
        labels, first, counts = np.unique(row, return_index=True, return_counts=True)
        best = counts == counts.max()
        pred[i] = labels[best][np.argmin(first[best])]
    return pred


def knn_macro_f1(X: np.ndarray, y: np.ndarray, k: int = 5) -> float:
    return float(f1_score(y, knn_predict(X, y, k), average="macro"))


def silhouette(X: np.ndarray, y: np.ndarray, max_samples: int = 5000, seed: int = 0) -> float:
    """Cosine silhouette of the labels (NaN with fewer than 2 labels or no spare samples)."""
    n_labels = len(np.unique(y))
    if n_labels < 2 or n_labels >= len(y):
        return float("nan")
    size = min(max_samples, len(y))
    return float(silhouette_score(X, y, metric="cosine", sample_size=size, random_state=seed))


def evaluate(X: np.ndarray, y: np.ndarray, k: int = 5) -> dict[str, float]:
    """All four numbers for one labeled set of vectors."""
    y = np.asarray(y)
    return {
        "knn_top1": knn_top1(X, y),
        f"precision_at_{k}": precision_at_k(X, y, k),
        "knn_macro_f1": knn_macro_f1(X, y, k),
        "silhouette": silhouette(X, y),
        "n_eval": len(y),
    }
