"""Near-duplicate images: pairs of images whose features are nearly the same, grouped into
connected components. Judged on mean-centred features, through a FAISS index of them."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from embedding_assets.embedding.features import content_vectors
from embedding_assets.search.faiss_index import build_index, choose_factory, search
from resources.paths import DataPaths


def centred(vectors: np.ndarray) -> np.ndarray:
    """Mean removed, then L2-normalized. Backbone features share a large common component
    (random-init ReLU features of any two images sit near cosine 0.99), so a raw cosine
    threshold calls everything a duplicate; after centring only near-copies stay close."""
    X = np.asarray(vectors, dtype=np.float32)
    X = X - X.mean(axis=0, keepdims=True)
    return np.ascontiguousarray(X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12))


def near_duplicate_pairs(
    index: faiss.Index,
    vectors: np.ndarray,
    ids: np.ndarray,
    threshold: float,
    params: dict[str, int] | None = None,
    *,
    k: int = 10,
    batch: int = 8192,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(id_a, id_b, similarity) with id_a < id_b for neighbours at cosine >= threshold.

    Each image's k nearest neighbours come from the index, so a group larger than k is still
    connected through its members' overlapping neighbour lists.
    """
    a_parts, b_parts, s_parts = [], [], []
    ids = np.asarray(ids, dtype=np.int64)
    for start in range(0, len(vectors), batch):
        sims, found = search(index, vectors[start : start + batch], k + 1, params)
        own = ids[start : start + batch, None]
        keep = (found >= 0) & (found != own) & (sims >= threshold)
        src = np.broadcast_to(own, found.shape)[keep]
        dst = found[keep]
        a_parts.append(np.minimum(src, dst))
        b_parts.append(np.maximum(src, dst))
        s_parts.append(sims[keep])
    if not a_parts:
        return (np.empty(0, np.int64),) * 2 + (np.empty(0, np.float32),)
    a, b, s = np.concatenate(a_parts), np.concatenate(b_parts), np.concatenate(s_parts)
    _, first = np.unique(np.stack([a, b], axis=1), axis=0, return_index=True)
    return a[first], b[first], s[first].astype(np.float32)


def group_pairs(a: np.ndarray, b: np.ndarray) -> dict[int, int]:
    """Connected components of the duplicate graph: image id -> group id (its smallest id)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    return {x: find(x) for x in parent}


@dataclass(frozen=True)
class NearDuplicates:
    """Pairs (a < b) at cosine >= the threshold, the group of each pair (the smallest image id
    of its connected component), and what they were judged on."""

    a: np.ndarray
    b: np.ndarray
    similarity: np.ndarray
    group: np.ndarray
    judged_on: str


def find_near_duplicates(
    paths: DataPaths,
    model_key: str,
    ids: np.ndarray,
    vectors: np.ndarray,
    *,
    threshold: float,
    k: int,
    memory_budget_gb: float,
) -> NearDuplicates:
    """Near-duplicates of an embedding set, judged on its mean-centred vectors, or on those of
    the plain backbone when the set was made with a trained head (a metric-learning head pulls a
    whole class together, which says nothing about duplicated content)."""
    content = content_vectors(paths, model_key, ids)
    dup_ids, dup_vectors = content if content is not None else (ids, vectors)
    judged_on = "plain backbone features" if content is not None else "the embeddings"
    dup_vectors = centred(dup_vectors)
    factory = choose_factory(len(dup_ids), dup_vectors.shape[1], int(memory_budget_gb * 2**30))
    built = build_index(dup_vectors, dup_ids, factory)
    a, b, s = near_duplicate_pairs(
        built.index, dup_vectors, dup_ids, threshold, built.search_params, k=k
    )
    groups = group_pairs(a, b)
    group = np.array([groups[int(x)] for x in a], dtype=np.int64)
    return NearDuplicates(a, b, s, group, f"{judged_on}, mean-centred ({factory})")
