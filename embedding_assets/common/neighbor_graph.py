"""One neighbour graph per embedding set: each image's nearest other images, computed once and
read by every result that needs neighbours (uniqueness, outliers, the map's neighbour lists).

Exact (FAISS `IndexFlatIP`, O(n^2 d)) up to `EXACT_MAX` images, where it takes seconds; above,
an inverted-file index (FAISS `IndexIVFFlat`, sqrt(n)-ish lists, `NPROBE` of them searched per
query: O(n^1.5 d)), whose recall of the exact 10 nearest is measured on a sample of images
against an exact search of that sample (O(sample x n x d)) and stored with the graph, so the
asset's metadata says how approximate it is. Cosine similarity on L2-normalised vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedding_assets.common.neighbors import knn, normalize, search

GRAPH_K = 20  # neighbours kept per image; readers take the first k they need
EXACT_MAX = 20_000
NPROBE = 32
LISTS_PER_SQRT = 4  # inverted lists = 4 x sqrt(n)
TRAIN_PER_LIST = 40  # k-means training rows per list (FAISS warns under 39)
KMEANS_ITERATIONS = 10  # of the lists' k-means (FAISS's default 25 costs more than the search)
RECALL_SAMPLE = 1_000
RECALL_K = 10


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
            meta=np.array([self.method, repr(self.recall), self.content]),
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, content: str) -> NeighborGraph:
        """The graph stored at `path`, which must be the one built from `content`."""
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
                )
        except (OSError, ValueError, KeyError) as e:
            raise LookupError(
                f"no readable neighbour graph at {path} ({type(e).__name__}): materialize "
                "`neighbor_graph` (emb run does)"
            ) from e
        if stored != content:
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
    if len(x) <= exact_max:
        sims, rows = knn(x, None, k, normalized=True)
        return NeighborGraph(np.asarray(ids, np.int64), rows, sims, "exact", 1.0, content)
    sims, rows = approximate_self_knn(x, k)
    recall = sampled_recall(x, rows, min(RECALL_K, k))
    return NeighborGraph(np.asarray(ids, np.int64), rows, sims, "ivf", recall, content)


def approximate_self_knn(x: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`knn(x, None, k)` through an IVF index over normalised `x` (trained on a sample)."""
    import faiss

    n, d = x.shape
    lists = max(1, int(LISTS_PER_SQRT * np.sqrt(n)))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, lists, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    train = x[np.sort(rng.choice(n, size=min(n, TRAIN_PER_LIST * lists), replace=False))]
    index.cp.niter = KMEANS_ITERATIONS
    index.train(train)
    index.add(x)
    index.nprobe = min(NPROBE, lists)
    return search(index, x, k, self_search=True)


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
