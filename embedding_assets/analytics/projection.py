"""2-D maps of an embedding matrix: PCA, UMAP and t-SNE, safe for tiny and large inputs.

Large inputs: UMAP and t-SNE first see the data reduced to `pca_dims` by PCA (less noise, far
less work per distance), and above `max_fit_samples` rows they are fitted on a random sample and
the remaining rows are placed with the fitted model's `transform`; each result keeps its fitted
model (`Placer`) so that a later run can place a few new images the same way
(analytics/placing.py). Tiny inputs: perplexity and
n_neighbors are clamped to what the number of rows allows, and the result says so.
On a GPU with cuML importable, cuML's PCA/UMAP/TSNE fit every row (they scale there).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import numpy as np


class Method(str, Enum):
    """A 2-D map method. An Enum, not a Literal: Dagster config takes a list of Enum members
    (the launchpad lists them and refuses others) but not a list of Literal values."""

    pca = "pca"
    umap = "umap"
    tsne = "tsne"


METHODS: tuple[str, ...] = tuple(m.value for m in Method)
MIN_ROWS = 5  # below this a neighbour graph (UMAP, t-SNE) is meaningless


@dataclass(frozen=True)
class ProjectionParams:
    perplexity: float = 30.0
    n_neighbors: int = 15
    min_dist: float = 0.1
    pca_dims: int = 50
    max_fit_samples: int = 25_000
    seed: int = 0
    n_jobs: int = -1


@dataclass(frozen=True)
class Placer:
    """Puts new rows on a fitted map: the PCA reduction the map was made after (if any), then
    the fitted method's own `transform` (scikit-learn PCA, umap-learn, openTSNE). Pickled
    beside the map (analytics/placing.py)."""

    reducer: Any | None
    model: Any

    def place(self, x: np.ndarray) -> np.ndarray:
        if type(self.model).__module__.startswith("umap"):  # a later run places, unpickled
            from embedding_assets.analytics.compiled_cache import keep_umap_compiled

            keep_umap_compiled()
        x = np.ascontiguousarray(x, dtype=np.float32)
        reduced = x if self.reducer is None else self.reducer.transform(x).astype(np.float32)
        return np.asarray(self.model.transform(reduced), dtype=np.float32)


@dataclass
class Projection:
    method: str
    coords: np.ndarray  # float32 (n, 2), row order of the input
    seconds: float
    backend: str  # e.g. "scikit-learn", "openTSNE", "umap-learn", "cuml"
    fitted_on: int  # rows the model was fitted on; the rest were transformed
    notes: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    placer: Placer | None = None  # None: the backend cannot place new rows (cuML)


def safe_perplexity(perplexity: float, n: int) -> float:
    """t-SNE needs perplexity < (n - 1) / 3 (3 * perplexity neighbours per point)."""
    limit = (n - 1) / 3 - 0.01
    return float(min(perplexity, max(limit, 1.0)))


def safe_n_neighbors(n_neighbors: int, n: int) -> int:
    """UMAP needs 2 <= n_neighbors < n."""
    return int(max(2, min(n_neighbors, n - 1)))


def project(
    vectors: np.ndarray, method: str, params: ProjectionParams, use_cuml: bool = False
) -> Projection:
    """Project `vectors` (n, d) to 2-D with `method` (pca | umap | tsne)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) < MIN_ROWS:
        raise ValueError(
            f"Need at least {MIN_ROWS} embedded images for a 2-D map, got {len(x)}: "
            "add images and materialize `embeddings` again."
        )
    if not np.isfinite(x).all():
        raise ValueError("Embeddings contain NaN or inf: re-materialize `embeddings`.")
    start = time.perf_counter()
    if method == "pca":
        result = _pca(x, params, use_cuml)
    else:
        reduced, notes, reducer = _reduce(x, params, use_cuml)
        fn = _umap if method == "umap" else _tsne
        result = fn(reduced, params, use_cuml)
        result.notes[:0] = notes
        if result.placer is not None:
            result.placer = replace(result.placer, reducer=reducer)
    result.seconds = time.perf_counter() - start
    result.coords = result.coords.astype(np.float32, copy=False)
    return result


def _pca(x: np.ndarray, params: ProjectionParams, use_cuml: bool) -> Projection:
    if use_cuml:
        from cuml import PCA as CuPCA

        coords = np.asarray(CuPCA(n_components=2, random_state=params.seed).fit_transform(x))
        return Projection("pca", coords, 0.0, "cuml", len(x))
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=params.seed)
    coords = pca.fit_transform(x)
    ratio = [round(float(r), 4) for r in pca.explained_variance_ratio_]
    return Projection(
        "pca",
        coords,
        0.0,
        "scikit-learn",
        len(x),
        params={"explained_variance_ratio": ratio},
        placer=Placer(None, pca),
    )


def _reduce(
    x: np.ndarray, params: ProjectionParams, use_cuml: bool
) -> tuple[np.ndarray, list, Any | None]:
    """PCA to `pca_dims` before a neighbour-graph method, when that is a reduction: (reduced
    rows, notes, the fitted scikit-learn PCA or None)."""
    dims = min(params.pca_dims, x.shape[1], len(x))
    if params.pca_dims <= 0 or dims >= x.shape[1]:
        return x, [], None
    notes = [f"PCA {x.shape[1]} -> {dims} dims first"]
    if use_cuml:
        from cuml import PCA as CuPCA

        reduced = np.asarray(CuPCA(n_components=dims).fit_transform(x), dtype=np.float32)
        return reduced, notes, None
    from sklearn.decomposition import PCA

    pca = PCA(n_components=dims, random_state=params.seed)
    return pca.fit_transform(x).astype(np.float32), notes, pca


def _sample(n: int, params: ProjectionParams) -> np.ndarray | None:
    """Row indexes to fit on, or None to fit on all rows."""
    if params.max_fit_samples <= 0 or n <= params.max_fit_samples:
        return None
    rng = np.random.default_rng(params.seed)
    return np.sort(rng.choice(n, size=params.max_fit_samples, replace=False))


def _umap(x: np.ndarray, params: ProjectionParams, use_cuml: bool) -> Projection:
    n = len(x)
    k = safe_n_neighbors(params.n_neighbors, n)
    notes = [] if k == params.n_neighbors else [f"n_neighbors {params.n_neighbors} -> {k} (n={n})"]
    used = {"n_neighbors": k, "min_dist": params.min_dist}
    if use_cuml:
        from cuml import UMAP as CuUMAP

        model = CuUMAP(n_neighbors=k, min_dist=params.min_dist, random_state=params.seed)
        return Projection("umap", np.asarray(model.fit_transform(x)), 0.0, "cuml", n, notes, used)
    import umap

    from embedding_assets.analytics.compiled_cache import keep_umap_compiled

    keep_umap_compiled()
    # A fixed seed makes umap-learn single-threaded; with n_jobs we trade exact repeatability
    # for speed, except on small inputs where one thread is fast anyway.
    seeded = n <= 5_000 or params.n_jobs == 1
    model = umap.UMAP(
        n_neighbors=k,
        min_dist=params.min_dist,
        n_components=2,
        random_state=params.seed if seeded else None,
        n_jobs=1 if seeded else params.n_jobs,
        init="spectral" if n > k + 2 else "random",
    )
    idx = _sample(n, params)
    placer = Placer(None, model)
    if idx is None:
        coords = model.fit_transform(x)
        return Projection("umap", coords, 0.0, "umap-learn", n, notes, used, placer)
    coords = np.empty((n, 2), dtype=np.float32)
    coords[idx] = model.fit_transform(x[idx])
    rest = np.setdiff1d(np.arange(n), idx, assume_unique=True)
    coords[rest] = model.transform(x[rest])
    notes.append(f"fitted on a sample of {len(idx)}, transformed the other {len(rest)}")
    return Projection("umap", coords, 0.0, "umap-learn", len(idx), notes, used, placer)


def _tsne(x: np.ndarray, params: ProjectionParams, use_cuml: bool) -> Projection:
    n = len(x)
    perplexity = safe_perplexity(params.perplexity, n)
    notes = (
        []
        if perplexity == params.perplexity
        else [f"perplexity {params.perplexity:g} -> {perplexity:.2f} (n={n})"]
    )
    used = {"perplexity": round(perplexity, 2)}
    if use_cuml:
        from cuml import TSNE as CuTSNE

        model = CuTSNE(n_components=2, perplexity=perplexity, random_state=params.seed)
        return Projection("tsne", np.asarray(model.fit_transform(x)), 0.0, "cuml", n, notes, used)
    from openTSNE import TSNE

    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        n_jobs=params.n_jobs,
        random_state=params.seed,
        verbose=False,
    )
    idx = _sample(n, params)
    if idx is None:
        embedding = tsne.fit(x)
        placer = Placer(None, embedding)
        return Projection("tsne", np.asarray(embedding), 0.0, "openTSNE", n, notes, used, placer)
    embedding = tsne.fit(x[idx])
    coords = np.empty((n, 2), dtype=np.float32)
    coords[idx] = np.asarray(embedding)
    rest = np.setdiff1d(np.arange(n), idx, assume_unique=True)
    coords[rest] = np.asarray(embedding.transform(x[rest]))
    notes.append(f"fitted on a sample of {len(idx)}, transformed the other {len(rest)}")
    placer = Placer(None, embedding)
    return Projection("tsne", coords, 0.0, "openTSNE", len(idx), notes, used, placer)
