"""k-means clusters of an embedding matrix, with k chosen by a silhouette sweep when asked.

Mini-batch k-means (k-means++ init, `n_init` restarts) from scikit-learn for ordinary inputs;
FAISS k-means (which trains on at most 256 points per centroid, then assigns every row with one
exact search) above `faiss_threshold` rows, on the GPU when the device choice gives one.
The silhouette is O(n^2), so it is always computed on a sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

SWEEP_DIMS = 50


@dataclass(frozen=True)
class ClusterParams:
    k: str = "auto"  # a positive integer, or "auto"
    k_min: int = 2
    k_max: int = 20
    label_classes: int = 0  # classes the labels name: `auto` tries no k below this
    n_init: int = 3
    sweep_samples: int = 10_000
    silhouette_samples: int = 5_000
    faiss_threshold: int = 200_000
    seed: int = 0


@dataclass(frozen=True)
class Centres:
    """Fitted k-means centres: a new row joins the nearest, as k-means assigns its own rows
    (analytics/placing.py places new images with it)."""

    centres: np.ndarray  # (k, d) float32

    def place(self, x: np.ndarray) -> np.ndarray:
        import faiss

        index = faiss.IndexFlatL2(self.centres.shape[1])
        index.add(np.ascontiguousarray(self.centres, dtype=np.float32))
        return (
            index.search(np.ascontiguousarray(x, dtype=np.float32), 1)[1].ravel().astype(np.int32)
        )


@dataclass
class Clustering:
    labels: np.ndarray  # int32 (n,)
    k: int
    backend: str  # "scikit-learn minibatch" | "faiss" | "faiss-gpu"
    silhouette: float | None
    seconds: float
    sweep: dict[int, float] = field(default_factory=dict)  # k -> silhouette (auto only)
    centres: Centres | None = None

    @property
    def sizes(self) -> dict[int, int]:
        ids, counts = np.unique(self.labels, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts, strict=True)}


def parse_k(k: str | int) -> int | None:
    """None for `auto`, else the integer k; a clear error for anything else."""
    text = str(k).strip().lower()
    if text == "auto":
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise ValueError(f"k={k!r} is neither `auto` nor a positive integer (e.g. k: 10 or k: auto)")


def cluster(
    vectors: np.ndarray, params: ClusterParams, faiss_gpu_id: int | None = None
) -> Clustering:
    """Cluster `vectors` (n, d); k is clamped to n, and `auto` sweeps k_min..k_max."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    if n < 2:
        raise ValueError(f"Need at least 2 embedded images to cluster, got {n}.")
    start = time.perf_counter()
    k = parse_k(params.k)
    sweep: dict[int, float] = {}
    if k is None:
        k, sweep = choose_k(x, params)
    k = min(k, n)
    if n >= params.faiss_threshold:
        labels, centres = faiss_kmeans(x, k, params, faiss_gpu_id)
        backend = "faiss" if faiss_gpu_id is None else "faiss-gpu"
    else:
        labels, centres = minibatch_kmeans(x, k, params)
        backend = "scikit-learn minibatch"
    sil = sampled_silhouette(x, labels, params.silhouette_samples, params.seed)
    seconds = time.perf_counter() - start
    return Clustering(labels, k, backend, sil, seconds, sweep, Centres(centres))


def minibatch_kmeans(x: np.ndarray, k: int, params: ClusterParams) -> tuple[np.ndarray, np.ndarray]:
    """(labels, centres)."""
    from sklearn.cluster import MiniBatchKMeans

    model = MiniBatchKMeans(
        n_clusters=k,
        init="k-means++",
        n_init=params.n_init,
        batch_size=4096,
        random_state=params.seed,
    )
    labels = model.fit_predict(x).astype(np.int32)
    return labels, model.cluster_centers_.astype(np.float32)


def faiss_kmeans(
    x: np.ndarray, k: int, params: ClusterParams, gpu_id: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, centres)."""
    import faiss

    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=25,
        nredo=params.n_init,
        seed=params.seed,
        gpu=gpu_id is not None,
        verbose=False,
    )
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign.ravel().astype(np.int32), np.asarray(km.centroids, dtype=np.float32)


def faiss_gpu_id(device_gpu_id: int | None) -> int | None:
    """The GPU for FAISS k-means: the device choice's, when this FAISS build has GPU support."""
    if device_gpu_id is None:
        return None
    import faiss

    return (
        device_gpu_id if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() else None
    )


def purity(clusters: np.ndarray, labels: np.ndarray) -> float | None:
    """Share of the labeled images (label not None) whose cluster's most common label is
    theirs; None without labels."""
    known = np.array([lab is not None for lab in labels], dtype=bool)
    if not known.any():
        return None
    c, y = np.asarray(clusters)[known], np.asarray(labels, dtype=object)[known].astype(str)
    hits = sum(np.unique(y[c == k], return_counts=True)[1].max() for k in np.unique(c))
    return float(hits / len(y))


def sampled_silhouette(x: np.ndarray, labels: np.ndarray, samples: int, seed: int) -> float | None:
    """Silhouette on at most `samples` rows; None when it is undefined (one cluster, or n = k)."""
    from sklearn.metrics import silhouette_score

    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(x):
        return None
    size = min(samples, len(x))
    return float(silhouette_score(x, labels, sample_size=size, random_state=seed))


def choose_k(x: np.ndarray, params: ClusterParams) -> tuple[int, dict[int, float]]:
    """The k in [k_min, k_max] with the best silhouette of k-means (k-means++, n_init restarts)
    on a sample of the rows reduced to SWEEP_DIMS by PCA; the final clustering then uses every
    row and dimension. When labels name `label_classes` classes, no k below that is tried:
    the silhouette favours coarse splits (on 10 classes of photos it chose 2, vehicles against
    animals), and clusters coarser than the classes people already told apart say little."""
    if params.k_min < 2 or params.k_max < params.k_min:
        raise ValueError(
            f"k_min={params.k_min}, k_max={params.k_max}: need 2 <= k_min <= k_max for k: auto"
        )
    lo = max(params.k_min, params.label_classes)
    params = replace(params, k_min=lo, k_max=max(params.k_max, lo))
    rng = np.random.default_rng(params.seed)
    sample = x
    if len(x) > params.sweep_samples:
        sample = x[rng.choice(len(x), size=params.sweep_samples, replace=False)]
    if sample.shape[1] > SWEEP_DIMS and len(sample) > SWEEP_DIMS:
        from sklearn.decomposition import PCA  # only to rank k: 10x less work per distance

        sample = PCA(SWEEP_DIMS, random_state=params.seed).fit_transform(sample)
    sweep: dict[int, float] = {}
    from sklearn.cluster import KMeans  # full-batch on a <= sweep_samples sample: faster there

    for k in range(params.k_min, min(params.k_max, len(sample) - 1) + 1):
        labels = KMeans(k, n_init=params.n_init, random_state=params.seed).fit_predict(sample)
        score = sampled_silhouette(sample, labels, params.silhouette_samples, params.seed)
        if score is not None:
            sweep[k] = round(score, 4)
    if not sweep:
        return min(params.k_min, len(x)), sweep
    return max(sweep, key=lambda k: sweep[k]), sweep
