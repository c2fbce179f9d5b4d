"""Exact cosine k-nearest neighbours shared by the curation functions and the map export.

Cosine similarity is the inner product of L2-normalised vectors, so an exact faiss
`IndexFlatIP` gives it directly; exact search is fast enough at curation sizes (10k x 10k in a
couple of seconds) and avoids approximate-index recall questions in the scores. FAISS loads
inside `knn`, so importing this module stays light.
"""

from __future__ import annotations

import numpy as np


def normalize(vectors: np.ndarray) -> np.ndarray:
    """float32, C-contiguous, unit-length rows (zero rows stay zero)."""
    x = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def checksums(vectors: np.ndarray) -> np.ndarray:
    """Each row's sum (float64, (n,)): what a stored result keeps of the vectors it was computed
    from, to tell an unchanged vector from a changed one (`unchanged`)."""
    return np.asarray(vectors).sum(axis=1, dtype=np.float64)  # no float64 copy of the matrix


def unchanged(sums: np.ndarray, vectors: np.ndarray) -> bool:
    """Whether `vectors` are those whose `checksums` were `sums` (row for row)."""
    return bool(np.allclose(sums, checksums(vectors), rtol=1e-5, atol=1e-3))


def knn(
    queries: np.ndarray,
    reference: np.ndarray | None = None,
    k: int = 10,
    normalized: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(similarities (n, k) descending, indices (n, k) into `reference`).

    With `reference=None` the queries are searched against themselves and each row's own match
    is dropped, so neighbours are always other images. Rows with fewer than k available
    neighbours are padded with similarity nan and index -1.
    """
    import faiss

    q = queries if normalized else normalize(queries)
    self_search = reference is None
    r = q if self_search else (reference if normalized else normalize(reference))
    q = np.ascontiguousarray(q, dtype=np.float32)
    r = np.ascontiguousarray(r, dtype=np.float32)
    if k < 1:
        raise ValueError(f"k={k} must be at least 1")
    index = faiss.IndexFlatIP(r.shape[1])
    index.add(r)
    return search(index, q, k, np.arange(len(q)) if self_search else None)


def search(
    index, queries: np.ndarray, k: int, own: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """`knn`'s answer from a built FAISS `index` (exact or approximate). `own`: each query's
    own row in the index (the queries are indexed rows), whose match is dropped; None: the
    queries are not in the index."""
    self_search = own is not None
    want = min(k + 1 if self_search else k, index.ntotal)
    sims = np.full((len(queries), k), np.nan, dtype=np.float32)
    idx = np.full((len(queries), k), -1, dtype=np.int64)
    if want == 0 or len(queries) == 0:
        return sims, idx
    d, i = index.search(queries, want)
    if self_search:
        # Drop each row's own entry (usually first, but exact duplicates may tie with it).
        own = i == np.asarray(own)[:, None]
        missing = ~own.any(axis=1)
        own[missing, -1] = True  # self not returned: drop the last (furthest) instead
        keep = ~own
        d = d[keep].reshape(len(queries), want - 1)
        i = i[keep].reshape(len(queries), want - 1)
    m = min(k, d.shape[1])
    sims[:, :m] = d[:, :m]
    idx[:, :m] = i[:, :m]
    return sims, idx
