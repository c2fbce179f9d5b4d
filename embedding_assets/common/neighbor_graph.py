"""One neighbour graph per embedding set: each image's nearest other images, computed once and
read by every result that needs neighbours (uniqueness, outliers, the map's neighbour lists).

Exact (FAISS `IndexFlatIP`, O(n^2 d)) up to `EXACT_MAX` images, where it takes seconds; above,
3k candidates per image from an inverted-file index (FAISS `IndexIVFFlat`, sqrt(n)-ish lists,
`NPROBE` of them searched per query: O(n^1.5 p)) over the vectors' first p = 256 principal
components, re-ranked by exact cosine on the full vectors (O(n k d)): on 100,000 fine-tuned
1280-d features, 25 s and recall 0.97, against 54 s and 0.994 for the same IVF over the full
vectors and 17 s and 0.74 over 128 components (benchmarks/neighbor_graph.py). Its recall of
the exact 10 nearest is measured on a sample of images against an exact search of that sample
(O(sample x n x d)) and stored with the graph, so the asset's metadata says how approximate it
is. Cosine similarity on L2-normalised vectors.

A set that only gained a few rows grows its graph (`grow_graph`: O(n x new x d)) instead of a
new build, so a run after 1 % new images does not pay for all n again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedding_assets.common.ids import positions
from embedding_assets.common.neighbors import checksums, knn, normalize, search, unchanged

GRAPH_K = 20  # neighbours kept per image; readers take the first k they need
EXACT_MAX = 20_000
NPROBE = 32
LISTS_PER_SQRT = 4  # inverted lists = 4 x sqrt(n)
TRAIN_PER_LIST = 40  # k-means training rows per list (FAISS warns under 39)
KMEANS_ITERATIONS = 10  # of the lists' k-means (FAISS's default 25 costs more than the search)
RECALL_SAMPLE = 1_000
RECALL_K = 10
MAX_GROWTH = 0.10  # a set that grew by more is searched again from scratch
SEARCH_DIMS = 256  # principal components the approximate search runs in
PCA_SAMPLE = 20_000  # rows those components are fitted on
CANDIDATES = 3  # candidates per wanted neighbour, re-ranked by exact cosine


@dataclass(frozen=True)
class NeighborGraph:
    """Rows in the order of `ids`; `neighbors` are row positions (-1 where a row has fewer
    than k), `similarities` cosine, descending (nan where missing)."""

    ids: np.ndarray  # (n,) int64
    neighbors: np.ndarray  # (n, k) int64
    similarities: np.ndarray  # (n, k) float32
    method: str  # "exact" | "ivf"
    recall: float  # share of the exact 10 nearest found, on a sample (1.0 when exact)
    content: str  # the embedding set's content version it was built from
    sums: np.ndarray  # (n,) float64 each row's vector sum: tells a changed vector (grow_graph)

    def first(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, neighbour rows) of the k nearest (k at most the graph's)."""
        if k > self.neighbors.shape[1]:
            raise ValueError(f"k={k} is more than the graph's {self.neighbors.shape[1]} neighbours")
        return self.similarities[:, :k], self.neighbors[:, :k]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            ids=self.ids,
            neighbors=self.neighbors.astype(np.int32),
            similarities=self.similarities,
            sums=self.sums,
            meta=np.array([self.method, repr(self.recall), self.content]),
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, content: str | None) -> NeighborGraph:
        """The graph stored at `path`, which must be the one built from `content` (None: any,
        e.g. the previous set's, to grow)."""
        try:
            with np.load(path, allow_pickle=False) as f:
                method, recall, stored = (str(v) for v in f["meta"])
                graph = cls(
                    f["ids"],
                    f["neighbors"].astype(np.int64),
                    f["similarities"],
                    method,
                    float(recall),
                    stored,
                    f["sums"],
                )
        except (OSError, ValueError, KeyError) as e:
            raise LookupError(
                f"no readable neighbour graph at {path} ({type(e).__name__}): materialize "
                "`neighbor_graph` (emb run does)"
            ) from e
        if content is not None and stored != content:
            raise LookupError(
                f"the neighbour graph at {path} is of other embeddings: materialize "
                "`neighbor_graph` again (emb run does)"
            )
        return graph


def build_graph(
    ids: np.ndarray, vectors: np.ndarray, content: str, exact_max: int = EXACT_MAX
) -> NeighborGraph:
    """Each row's GRAPH_K nearest other rows: exact up to `exact_max` rows, else IVF with its
    recall measured."""
    x = normalize(vectors)
    k = min(GRAPH_K, max(len(x) - 1, 1))
    ids, sums = np.asarray(ids, np.int64), checksums(vectors)
    if len(x) <= exact_max:
        sims, rows = knn(x, None, k, normalized=True)
        return NeighborGraph(ids, rows, sims, "exact", 1.0, content, sums)
    sims, rows = approximate_self_knn(x, k)
    recall = sampled_recall(x, rows, min(RECALL_K, k))
    return NeighborGraph(ids, rows, sims, "ivf", recall, content, sums)


def reduced(x: np.ndarray, dims: int = SEARCH_DIMS, seed: int = 0) -> np.ndarray:
    """Unit rows of `x` projected on its first `dims` principal components (fitted on a
    sample): where the candidates are searched, `dims`/d of the cost."""
    if x.shape[1] <= dims:
        return x
    rng = np.random.default_rng(seed)
    sample = x[np.sort(rng.choice(len(x), size=min(len(x), PCA_SAMPLE), replace=False))]
    mean = sample.mean(axis=0)
    centred = (sample - mean).astype(np.float64)
    _, vecs = np.linalg.eigh(centred.T @ centred)
    components = np.ascontiguousarray(vecs[:, ::-1][:, :dims], dtype=np.float32)
    out = np.empty((len(x), dims), dtype=np.float32)
    for start in range(0, len(x), 65_536):
        out[start : start + 65_536] = (x[start : start + 65_536] - mean) @ components
    return normalize(out)


def reranked(x: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar of each row's candidate rows (-1: none), by exact cosine on `x`."""
    safe = np.maximum(candidates, 0)
    sims = np.empty(candidates.shape, dtype=np.float32)
    for start in range(0, len(x), 8_192):
        part = slice(start, start + 8_192)
        sims[part] = np.einsum("nd,nkd->nk", x[part], x[safe[part]])
    sims[candidates < 0] = -np.inf
    best = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    top_s = np.take_along_axis(sims, best, axis=1)
    top_i = np.take_along_axis(candidates, best, axis=1)
    return np.where(np.isfinite(top_s), top_s, np.nan).astype(np.float32), top_i


def grow_graph(
    graph: NeighborGraph, ids: np.ndarray, vectors: np.ndarray, content: str
) -> NeighborGraph | None:
    """`graph` grown to a set that only added rows (at most MAX_GROWTH of it): each new row's
    neighbours by an exact search of the whole set, each old row's list merged with its
    nearest new rows (an exact search of the old rows against the new ones): O(n x new x d),
    not a new build. None when it cannot grow: rows were removed or changed, or too many added,
    or the graph holds fewer neighbours than it should."""
    ids = np.asarray(ids, np.int64)
    k = graph.neighbors.shape[1]
    by_id = np.argsort(ids)
    old_at = positions(ids[by_id], graph.ids, by_id)  # each old row's row in the new set
    new = np.setdiff1d(np.arange(len(ids)), old_at[old_at >= 0])
    if (old_at < 0).any() or len(new) > MAX_GROWTH * len(ids) or k != min(GRAPH_K, len(ids) - 1):
        return None
    if not unchanged(graph.sums, vectors[old_at]):
        return None
    x = normalize(vectors)
    rows = np.full((len(ids), k), -1, np.int64)
    sims = np.full((len(ids), k), np.nan, np.float32)
    # the old lists, in the rows of the grown set
    old_rows = np.where(graph.neighbors >= 0, old_at[np.maximum(graph.neighbors, 0)], -1)
    if len(new):
        # old rows: their list and their nearest new rows, best k of both
        near_s, near_i = knn(x[old_at], x[new], min(k, len(new)), normalized=True)
        both_s = np.concatenate([graph.similarities, near_s], axis=1)
        both_i = np.concatenate([old_rows, np.where(near_i >= 0, new[near_i], -1)], axis=1)
        best = np.argsort(-np.nan_to_num(both_s, nan=-np.inf), axis=1, kind="stable")[:, :k]
        sims[old_at] = np.take_along_axis(both_s, best, axis=1)
        rows[old_at] = np.take_along_axis(both_i, best, axis=1)
        sims[new], rows[new] = _search_all(x, new, k)
    else:
        sims[old_at], rows[old_at] = graph.similarities, old_rows
    return NeighborGraph(ids, rows, sims, graph.method, graph.recall, content, checksums(vectors))


def _search_all(x: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest other rows of `x` for the rows `queries`."""
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return search(index, np.ascontiguousarray(x[queries]), k, queries)


def approximate_self_knn(x: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`knn(x, None, k)` for normalised `x`: CANDIDATES x k candidates per row from an IVF
    index over `reduced(x)` (trained on a sample), re-ranked by exact cosine on `x`."""
    _, rows = _ivf_self_knn(reduced(x), min(CANDIDATES * k, len(x) - 1), seed)
    return reranked(x, rows, k)


def _ivf_self_knn(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    n, d = x.shape
    lists = max(1, min(int(LISTS_PER_SQRT * np.sqrt(n)), n // TRAIN_PER_LIST))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, lists, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    train = x[np.sort(rng.choice(n, size=min(n, TRAIN_PER_LIST * lists), replace=False))]
    index.cp.niter = KMEANS_ITERATIONS
    index.train(train)
    index.add(x)
    index.nprobe = min(NPROBE, lists)
    return search(index, x, k, np.arange(n))


def sampled_recall(x: np.ndarray, rows: np.ndarray, k: int, seed: int = 0) -> float:
    """Share of the exact k nearest neighbours that `rows` holds, over a sample of rows."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(x), size=min(RECALL_SAMPLE, len(x)), replace=False))
    _, exact = knn(x[sample], x, k + 1, normalized=True)
    found = 0
    for row, truth in zip(sample, exact, strict=True):
        truth = truth[truth != row][:k]
        found += len(np.intersect1d(truth, rows[row, :k]))
    return found / (len(sample) * k)
