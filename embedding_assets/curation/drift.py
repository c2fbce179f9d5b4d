"""Drift of a new batch of embeddings against a reference set, and per-image OOD scores.

Batch test: the statistic is the squared distance between the batch's mean embedding and the
reference's (an MMD with a linear kernel) on L2-normalised vectors projected onto the
reference's top `dims` principal components; its p-value is a permutation test over the
pooled reference + batch (random batch-sized subsets of the pool give the null). On CIFAR-10
embeddings this detected a 10 % admixture of an unseen class more often than the
mean kNN-distance statistic or a cluster-histogram chi-square (see benchmarks/curation.py for
the measured power, which is far from perfect at 10 %).

Per image: ood_score = the share of reference images whose own distance to their k-th nearest
other reference image is below this image's distance to its k-th nearest reference image, i.e.
the kNN distance calibrated to reference quantiles (0.99 = further out than 99 % of the
reference). Distances are cosine (1 - similarity) from an exact faiss IndexFlatIP search.

A verdict needs both a small p-value and an effect worth reporting: `effect_size` is how far the
batch's mean moved beyond chance (the observed squared shift less the permutation null's mean)
as a fraction of the reference's RMS spread around its mean. A large batch from a subtly
different source (another camera, a re-encode) can have a tiny p-value for a shift no one would
act on; `min_effect` keeps those from being called drifted, and both numbers are reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from embedding_assets.common.neighbors import knn, normalize

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MIN_EFFECT = 0.05  # smallest mean shift called drift, as a fraction of the reference's spread
COVARIANCE_SAMPLE = 20_000  # reference images the principal directions are fitted on
MAP_POINTS = 20_000  # reference images drawn on the newest batch's map
CALIBRATION_SAMPLE = 2_000  # reference images whose k-th neighbour distance calibrates ood_score


@dataclass(frozen=True)
class DriftReference:
    vectors: np.ndarray  # (n, d) L2-normalised reference
    mean: np.ndarray  # (d,) mean of `vectors`
    components: np.ndarray  # (d, p) top principal directions
    projected: np.ndarray  # (n, p) centred reference in the component basis
    spread: float  # mean squared norm of `projected` (the reference's total variance)
    knn_distances: np.ndarray  # sorted leave-one-out k-th neighbour distances
    k: int


@dataclass(frozen=True)
class DriftResult:
    score: float  # squared mean shift in the projected space (0 = no shift)
    p_value: float
    effect_size: float  # mean shift beyond chance / the reference's RMS spread (0 = none)
    drifted: bool
    ood_score: np.ndarray  # (m,) per-image calibrated kNN distance, 0..1


def fit_reference(reference: np.ndarray, k: int = 10, dims: int = 128) -> DriftReference:
    """Everything the batch tests need from the reference, computed once (for 10k x 1280-d
    reference vectors: a covariance eigendecomposition and an exact kNN search of at most
    CALIBRATION_SAMPLE images against the reference, a few seconds; linear in n)."""
    x = normalize(reference)
    if len(x) < k + 2:
        raise ValueError(f"the reference needs more than {k + 1} images, got {len(x)}")
    mean = x.mean(axis=0)
    centred = x - mean
    p = min(dims, x.shape[1], len(x) - 1)
    # Principal directions from the d x d covariance (cheap when d << n) of at most
    # COVARIANCE_SAMPLE rows: no float64 copy of a large reference
    rows = centred
    if len(x) > COVARIANCE_SAMPLE:
        pick = np.random.default_rng(0).choice(len(x), COVARIANCE_SAMPLE, replace=False)
        rows = centred[np.sort(pick)]
    rows = rows.astype(np.float64)
    _, vecs = np.linalg.eigh(rows.T @ rows / len(rows))
    components = np.ascontiguousarray(vecs[:, ::-1][:, :p], dtype=np.float32)
    distances = np.sort(1.0 - _kth_similarity(x, k)).astype(np.float64)
    projected = centred @ components
    spread = float((projected.astype(np.float64) ** 2).sum(axis=1).mean())
    return DriftReference(x, mean, components, projected, spread, distances, k)


def _kth_similarity(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Each reference image's similarity to its k-th nearest other, for every image up to
    CALIBRATION_SAMPLE of them, else for a sample of that many (searched against all): the
    quantiles need no more, and the cost stays linear in the reference's size."""
    if len(x) <= CALIBRATION_SAMPLE:
        return knn(x, None, k, normalized=True)[0][:, -1]
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(x), size=CALIBRATION_SAMPLE, replace=False))
    sims, rows = knn(x[sample], x, k + 1, normalized=True)
    others = rows != sample[:, None]
    return np.array([row[keep][k - 1] for row, keep in zip(sims, others, strict=True)])


def ood_scores(ref: DriftReference, vectors: np.ndarray) -> np.ndarray:
    """(n,) in [0, 1]: each image's k-th-nearest-reference distance as a reference quantile."""
    sims, _ = knn(vectors, ref.vectors, ref.k)
    d = 1.0 - sims[:, -1].astype(np.float64)
    n = len(ref.knn_distances)
    return (np.searchsorted(ref.knn_distances, d, side="right") / n).astype(np.float32)


def drift_test(
    ref: DriftReference,
    batch: np.ndarray,
    alpha: float = 0.01,
    n_permutations: int = 1000,
    seed: int = 0,
    min_effect: float = MIN_EFFECT,
) -> DriftResult:
    """Is `batch` drawn from the reference distribution? drifted = p_value < alpha and
    effect_size >= min_effect.

    alpha defaults to 0.01 so that a pipeline testing each new batch once raises at most about
    one false alarm per hundred clean batches (benchmarks/curation.py measures it)."""
    b = normalize(batch)
    m = len(b)
    if m == 0:
        return DriftResult(0.0, 1.0, 0.0, False, np.zeros(0, np.float32))
    pb = (b - ref.mean) @ ref.components
    pool = np.concatenate([ref.projected, pb]).astype(np.float64)
    n_total = len(pool)
    total = pool.sum(axis=0)

    def stat(batch_sum: np.ndarray) -> np.ndarray:
        shift = batch_sum / m - (total - batch_sum) / (n_total - m)
        return (shift**2).sum(axis=-1)

    observed = float(stat(pb.sum(axis=0)))
    rng = np.random.default_rng(seed)
    null = []
    for start in range(0, n_permutations, 100):
        rows = min(100, n_permutations - start)
        # m of n_total without replacement per permutation: O(m) each when m << n_total
        pick = np.stack([rng.choice(n_total, m, replace=False) for _ in range(rows)])
        null.append(stat(pool[pick].sum(axis=1)))
    null = np.concatenate(null)
    p_value = float((1 + (null >= observed).sum()) / (1 + len(null)))
    effect = float(np.sqrt(max(observed - null.mean(), 0.0) / max(ref.spread, 1e-12)))
    drifted = p_value < alpha and effect >= min_effect
    return DriftResult(observed, p_value, effect, drifted, ood_scores(ref, b))


def drift_report(
    reference: np.ndarray | DriftReference,
    batches: Mapping[str, np.ndarray],
    alpha: float = 0.01,
    n_permutations: int = 1000,
    seed: int = 0,
    min_effect: float = MIN_EFFECT,
) -> pd.DataFrame:
    """One row per batch: batch, n, score, p_value, effect_size, drifted, mean_ood, share_ood
    (ood_score > 0.99)."""
    ref = reference if isinstance(reference, DriftReference) else fit_reference(reference)
    rows = []
    for name, vectors in batches.items():
        r = drift_test(ref, vectors, alpha, n_permutations, seed, min_effect)
        rows.append(
            {
                "batch": name,
                "n": len(r.ood_score),
                "score": r.score,
                "p_value": r.p_value,
                "effect_size": r.effect_size,
                "drifted": r.drifted,
                "mean_ood": float(r.ood_score.mean()) if len(r.ood_score) else float("nan"),
                "share_ood": float((r.ood_score > 0.99).mean()) if len(r.ood_score) else 0.0,
            }
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class BatchVerdict:
    batch_id: str
    images: int
    score: float
    p_value: float
    p_holm: float  # p_value adjusted (Holm) for every batch tested in the same run
    effect_size: float
    drifted: bool
    reference: str  # what it was compared with, in words


@dataclass
class BatchDrift:
    """One verdict per tested batch, the per-image OOD scores of their members, and the newest
    batch's (reference mask, member mask, result) for its map."""

    verdicts: list[BatchVerdict]
    ood_ids: np.ndarray
    ood_batches: list[str]
    ood_scores: np.ndarray
    newest: tuple[np.ndarray, np.ndarray, DriftResult] | None

    def verdict_rows(self) -> dict:
        """The `batch_drift` table's columns, one row per tested batch."""
        import pyarrow as pa

        v = self.verdicts
        return {
            "batch_id": pa.array([x.batch_id for x in v], pa.string()),
            "images": pa.array([x.images for x in v], pa.int32()),
            "score": pa.array([x.score for x in v], pa.float64()),
            "p_value": pa.array([x.p_value for x in v], pa.float64()),
            "p_holm": pa.array([x.p_holm for x in v], pa.float64()),
            "effect_size": pa.array([x.effect_size for x in v], pa.float64()),
            "drifted": pa.array([x.drifted for x in v], pa.bool_()),
            "reference": pa.array([x.reference for x in v], pa.string()),
        }

    def ood_rows(self) -> dict:
        """The `ood_scores` table's columns, one row per member of a tested batch."""
        import pyarrow as pa

        return {
            "image_id": pa.array(self.ood_ids, pa.int64()),
            "batch_id": pa.array(self.ood_batches, pa.string()),
            "ood_score": pa.array(self.ood_scores, pa.float64()),
        }


@dataclass(frozen=True)
class DriftSettings:
    """How batches are tested (the batch_drift asset's config)."""

    reference: str = "before"  # every earlier image, or "first": the first batch
    alpha: float = 0.01
    permutations: int = 1000
    k: int = 10
    max_batches: int = 20
    seed: int = 0
    min_effect: float = MIN_EFFECT


def first_seen(db: Path, ids: np.ndarray) -> np.ndarray:
    """Each image's batch: when the catalog first saw it (a sortable string)."""
    from embedding_assets.common import tables
    from resources.duckdb_store import connect

    with connect(db, read_only=True) as con:
        rows = con.execute(f"SELECT image_id, first_seen FROM {tables.IMAGES}").fetchall()
    first = dict(rows)
    return np.array([str(first[int(i)]) for i in ids])


def batch_drift(
    ids: np.ndarray, vectors: np.ndarray, batch_of: np.ndarray, settings: DriftSettings
) -> BatchDrift:
    """Test each of the newest `max_batches` batches (`batch_of`: each image's batch, sortable
    by time) against every image before it (`reference="before"`) or the first batch
    (`"first"`); batches whose reference is too small for k neighbours are skipped.

    A batch's verdict uses its own p-value: with "before" each batch is tested against a
    reference that does not change once later batches arrive, so it is one test per batch over
    the folder's life and alpha is the false-alarm rate per clean batch. `p_holm` (Holm over
    the batches listed together) is reported for whoever reads the table as one family."""
    reference, k, alpha = settings.reference, settings.k, settings.alpha
    permutations, seed, min_effect = settings.permutations, settings.seed, settings.min_effect
    batches = sorted(set(batch_of.tolist()))
    tested: list[tuple[str, int, DriftResult, str]] = []
    ood_ids, ood_batches, ood = [], [], []
    newest = None
    what = "first batch" if reference == "first" else "all earlier batches"
    for b in batches[1:][-settings.max_batches :]:
        ref_mask = batch_of == batches[0] if reference == "first" else batch_of < b
        members = batch_of == b
        if ref_mask.sum() < k + 2:
            continue
        ref = fit_reference(vectors[ref_mask], k=k)
        result = drift_test(ref, vectors[members], alpha, permutations, seed, min_effect)
        tested.append((b, int(members.sum()), result, f"{what} ({int(ref_mask.sum())} images)"))
        ood_ids.append(ids[members])
        ood_batches += [b] * int(members.sum())
        ood.append(result.ood_score)
        newest = (ref_mask, members, result)
    p_holm = holm([r.p_value for _, _, r, _ in tested])
    verdicts = [
        BatchVerdict(b, n, r.score, r.p_value, float(ph), r.effect_size, r.drifted, what)
        for (b, n, r, what), ph in zip(tested, p_holm, strict=True)
    ]
    return BatchDrift(
        verdicts,
        np.concatenate(ood_ids) if ood_ids else np.zeros(0, np.int64),
        ood_batches,
        np.concatenate(ood) if ood else np.zeros(0, np.float32),
        newest,
    )


def holm(p_values: list[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error), in the order given."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    scaled = np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p))))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(scaled, 1.0)
    return adjusted


def drift_map(vectors: np.ndarray, ref_mask: np.ndarray, members: np.ndarray, result) -> Figure:
    """The newest batch (coloured by ood_score) over the reference (grey), on the reference's
    first two principal components."""
    from matplotlib.figure import Figure

    ref = vectors[ref_mask]
    ref = ref[:: max(1, len(ref) // MAP_POINTS)]  # the picture needs no more grey dots
    mean = ref.mean(axis=0)
    _, _, vt = np.linalg.svd(ref[:: max(1, len(ref) // 5000)] - mean, full_matrices=False)
    xy_ref, xy_new = (ref - mean) @ vt[:2].T, (vectors[members] - mean) @ vt[:2].T
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    ax.scatter(xy_ref[:, 0], xy_ref[:, 1], s=3, c="#d9d9d9", label="reference")
    dots = ax.scatter(
        xy_new[:, 0],
        xy_new[:, 1],
        s=6,
        c=result.ood_score,
        cmap="viridis",
        vmin=0,
        vmax=1,
        label="batch",
    )
    fig.colorbar(dots, ax=ax, label="ood_score")
    verdict = "drifted" if result.drifted else "no drift"
    ax.set_title(f"newest batch: {verdict} (p = {result.p_value:.3g})", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
