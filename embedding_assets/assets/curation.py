"""Curation assets: `image_quality`, `label_issues`, `uniqueness`, `batch_drift`, and the
split-leak check on `near_duplicates`.

Thin wrappers over `embedding_assets.curation` (plain functions); results go to the DuckDB
tables of resources/ddl/110_curation.sql so that SQL users and other tools can rely on them.
Each asset that reads the embeddings fingerprints its inputs and reuses its stored rows when
they did not change.
"""

import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import dagster as dg
import numpy as np
from pydantic import Field

from embedding_assets import analytics_store as store
from embedding_assets import markdown
from embedding_assets.assets.reuse import reused, set_inputs
from embedding_assets.fingerprints import fingerprint, labels_version, stored
from embedding_assets.vectors import current_set
from resources.storage import StorageResource

if TYPE_CHECKING:
    import pandas as pd

GROUP = "curation"
OWNERS = ["team:ml-platform"]
TOP_ROWS = 10


class ImageQualityConfig(dg.Config):
    """Thresholds on the measures taken while the catalog decoded each image (defaults and
    why: embedding_assets/curation/image_quality.py::QualityThresholds)."""

    blur_below: float = Field(default=100.0, description="Variance of the Laplacian below: blurry.")
    dark_highlight_below: float = Field(
        default=100.0, description="99th grey percentile below: too dark."
    )
    dark_mean_below: float = Field(default=30.0, description="Mean grey below: too dark.")
    bright_shadow_above: float = Field(
        default=155.0, description="1st grey percentile above: too bright."
    )
    bright_mean_above: float = Field(default=225.0, description="Mean grey above: too bright.")
    entropy_below: float = Field(default=3.0, description="Entropy (bits) below: low information.")
    contrast_below: float = Field(default=8.0, description="Grey std below: low information.")
    min_side: int = Field(default=32, description="Shorter side below (px): odd size.")
    max_side: int = Field(default=20000, description="Longer side above (px): odd size.")
    max_aspect: float = Field(default=4.0, description="Aspect ratio above: odd size.")


class LabelIssuesConfig(dg.Config):
    n_folds: int = Field(default=5, description="Folds of the out-of-fold probabilities.")
    pca_dim: int = Field(default=64, description="PCA dimensions the classifier sees.")
    k: int = Field(default=20, description="Labeled neighbours voting in the kNN evidence.")
    knn_weight: float = Field(default=0.25, description="Share of the kNN vote in the score.")
    seed: int = Field(default=0, description="Seed of the folds.")


class UniquenessConfig(dg.Config):
    k: int = Field(default=10, description="Neighbours behind representativeness.")


def _rows(db: Path, sql: str, params: list | None = None) -> "pd.DataFrame":
    from resources.duckdb_store import connect

    with connect(db, read_only=True) as con:
        return con.execute(sql, params or []).df()


def _top_table(df: "pd.DataFrame", columns: list[str]) -> dg.MetadataValue:
    rows = [[_fmt(v) for v in r] for r in df[columns].head(TOP_ROWS).itertuples(index=False)]
    return dg.MetadataValue.md(markdown.table(columns, rows))


def _fmt(value: object) -> object:
    return round(float(value), 4) if isinstance(value, float | np.floating) else value


def _histogram(values: np.ndarray, title: str, threshold: float | None = None) -> str:
    from matplotlib.figure import Figure

    from embedding_assets.plots import png_markdown

    fig = Figure(figsize=(5, 2.6))
    ax = fig.add_subplot()
    finite = values[np.isfinite(values)]
    ax.hist(finite, bins=40, color="#4c72b0")
    if threshold is not None:
        ax.axvline(threshold, color="#d62728", linestyle="--", label="threshold")
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return png_markdown(fig, title)


@dg.asset(deps=["image_catalog"], group_name=GROUP, kinds={"duckdb"}, owners=OWNERS)
def image_quality(
    context: dg.AssetExecutionContext, config: ImageQualityConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Blurry, too dark, too bright, low-information and odd-size images (table
    `image_quality`, one row per usable image with its `flags`). The measures were taken while
    the catalog decoded each image, so no file is read again; images catalogued before that
    (older catalogs) are measured once here."""
    import pyarrow as pa

    from embedding_assets.curation.image_quality import (
        FLAGS,
        QualityStats,
        QualityThresholds,
        quality_flags,
    )

    db = storage.paths.catalog_db
    _measure_missing(db, context)
    fp = fingerprint("image_quality", _catalog_version(db), config.model_dump(mode="json"))
    found = stored(db, "image_quality")
    if found is not None and found.fingerprint == fp:
        return reused(context, fp)
    df = _rows(
        db,
        "SELECT i.image_id, i.path, i.width, i.height, q.* EXCLUDE (image_id) "
        "FROM usable_images i JOIN image_quality_measures q USING (image_id) ORDER BY image_id",
    )
    thresholds = QualityThresholds(**config.model_dump())
    names = [f.name for f in fields(QualityStats)]
    flags = [
        [
            name
            for name, on in quality_flags(
                QualityStats(**{n: row[n] for n in names}), thresholds
            ).items()
            if on
        ]
        for row in df.to_dict("records")
    ]
    table = pa.table(
        {
            "image_id": pa.array(df["image_id"], pa.int64()),
            "blur": pa.array(df["blur"], pa.float64()),
            "brightness": pa.array(df["brightness"], pa.float64()),
            "contrast": pa.array(df["contrast"], pa.float64()),
            "entropy": pa.array(df["entropy"], pa.float64()),
            "flags": pa.array(flags, pa.list_(pa.string())),
        }
    )
    store.replace_rows(db, "image_quality", None, table, fp)
    counts = {f: sum(f in row for row in flags) for f in FLAGS}
    df["flags"] = [", ".join(f) for f in flags]
    flagged = df[df["flags"] != ""].sort_values("blur")
    context.log.info(f"{len(flagged)} of {len(df)} images flagged: {counts}")
    return dg.MaterializeResult(
        metadata={
            "images": len(df),
            "flagged": len(flagged),
            "flag_counts": dg.MetadataValue.json(counts),
            "flagged_images": _top_table(
                flagged, ["image_id", "flags", "blur", "brightness", "path"]
            ),
            "blur_histogram": dg.MetadataValue.md(
                _histogram(
                    np.log10(1 + df["blur"].to_numpy()),
                    "log10(1 + blur)",
                    float(np.log10(1 + config.blur_below)),
                )
            ),
            "thresholds": dg.MetadataValue.json(config.model_dump()),
        },
        data_version=dg.DataVersion(fp),
    )


def _measure_missing(db: Path, context: dg.AssetExecutionContext) -> None:
    """Images catalogued before quality measures existed: decode them once now."""
    import pyarrow as pa
    from PIL import Image

    from embedding_assets.catalog import QUALITY_COLUMNS
    from embedding_assets.curation.image_quality import quality_stats
    from embedding_assets.embedding_run import fs_path
    from embedding_assets.object_store import image_source
    from resources.duckdb_store import connect

    missing = _rows(
        db,
        "SELECT image_id, coalesce(path_bytes, encode(path)) AS raw FROM usable_images "
        "WHERE image_id NOT IN (SELECT image_id FROM image_quality_measures)",
    )
    if missing.empty:
        return
    measured = []
    for image_id, raw in zip(missing["image_id"], missing["raw"], strict=True):
        try:
            with Image.open(image_source(fs_path(bytes(raw)))) as im:
                measured.append((int(image_id), quality_stats(im)))
        except Exception:  # noqa: BLE001 - a file that changed since: the next scan says so
            continue
    columns = {"image_id": pa.array([i for i, _ in measured], pa.int64())}
    for c in QUALITY_COLUMNS:
        columns[c] = pa.array([getattr(q, c) for _, q in measured], pa.float64())
    with connect(db) as con:
        con.register("measured", pa.table(columns))
        con.execute("INSERT OR REPLACE INTO image_quality_measures SELECT * FROM measured")
    context.log.info(f"measured {len(measured)} images catalogued before quality measures")


def _catalog_version(db: Path) -> str:
    """Which usable images, with which content: the quality measures follow from these."""
    found = _rows(
        db,
        "SELECT md5(coalesce(string_agg(image_id || ':' || sha256, ',' ORDER BY image_id), '')) "
        "AS v FROM usable_images",
    )
    return str(found["v"].iloc[0])


@dg.asset(
    deps=["embeddings", "labels"], group_name=GROUP, kinds={"scikitlearn", "duckdb"}, owners=OWNERS
)
def label_issues(
    context: dg.AssetExecutionContext, config: LabelIssuesConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Labeled images whose label disagrees with the evidence, most suspicious first (table
    `label_issues`): confident learning (Northcutt et al. 2021, implemented here, not the
    AGPL cleanlab) on out-of-fold probabilities of a logistic regression, plus the labels of
    each image's nearest labeled neighbours. Read on the plain backbone features, as the
    classifier is. `emb queue --label-issues N` exports the top N for review."""
    import pyarrow as pa

    from embedding_assets.curation.label_issues import LabelIssueParams, find_label_issues
    from embedding_assets.embedding_run import classifier_features

    db = storage.paths.catalog_db
    emb_set, fp, unchanged = set_inputs(db, "label_issues", config, labels_version(db))
    key = emb_set.model_key
    if unchanged:
        return reused(context, fp, {"model_key": key})
    t0 = time.perf_counter()
    _, _, ids, X = classifier_features(storage.paths)
    info = store.image_info(db, ids)  # path and current label, in the order of ids
    params = LabelIssueParams(
        n_folds=config.n_folds,
        pca_dim=config.pca_dim,
        k=config.k,
        knn_weight=config.knn_weight,
        seed=config.seed,
    )
    found_df = find_label_issues(ids, X, info["label"].tolist(), params)
    issues = found_df[found_df["issue"].astype(bool)]
    rows = pa.table(
        {
            "image_id": pa.array(issues["image_id"].astype(np.int64), pa.int64()),
            "given_label": pa.array(issues["given_label"], pa.string()),
            "suggested_label": pa.array(issues["suggested_label"], pa.string()),
            "score": pa.array(issues["score"].astype(float), pa.float64()),
            "model_key": pa.array([key] * len(issues), pa.string()),
        }
    )
    store.replace_rows(db, "label_issues", key, rows, fp)
    shown = issues.merge(info[["image_id", "path"]], on="image_id", how="left")
    context.log.info(f"{len(issues)} of {len(found_df)} labeled images flagged")
    return dg.MaterializeResult(
        metadata={
            "model_key": key,
            "labeled_images": len(found_df),
            "flagged": len(issues),
            "top_issues": _top_table(
                shown, ["image_id", "given_label", "suggested_label", "score", "path"]
            ),
            "score_histogram": dg.MetadataValue.md(
                _histogram(found_df["score"].to_numpy(float), "label-issue score")
            ),
            "seconds": round(time.perf_counter() - t0, 3),
            "review": "emb queue --label-issues 50 --export review.csv",
        },
        data_version=dg.DataVersion(fp),
    )


@dg.asset(deps=["embeddings"], group_name=GROUP, kinds={"faiss", "duckdb"}, owners=OWNERS)
def uniqueness(
    context: dg.AssetExecutionContext, config: UniquenessConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """How unlike every other image each one is (`uniqueness`: 1 - similarity to its nearest
    neighbour, near 0 for copies) and how typical of its neighbourhood (`representativeness`:
    mean similarity to its k nearest), in table `uniqueness`. The label queue's `uniqueness`
    strategy asks about the most unique unlabeled images."""
    import pyarrow as pa

    from embedding_assets.curation.uniqueness import uniqueness_scores
    from embedding_assets.vectors import read_parquet

    db = storage.paths.catalog_db
    emb_set, fp, unchanged = set_inputs(db, "uniqueness", config)
    key = emb_set.model_key
    if unchanged:
        return reused(context, fp, {"model_key": key})
    t0 = time.perf_counter()
    ids, vectors = read_parquet(emb_set.parquet_path)
    unique, typical = uniqueness_scores(vectors, config.k)
    rows = pa.table(
        {
            "image_id": pa.array(ids, pa.int64()),
            "uniqueness": pa.array(unique.astype(np.float64)),
            "representativeness": pa.array(typical.astype(np.float64)),
            "model_key": pa.array([key] * len(ids), pa.string()),
        }
    )
    store.replace_rows(db, "uniqueness", key, rows, fp)
    top = _rows(
        db,
        "SELECT u.image_id, u.uniqueness, u.representativeness, i.path FROM uniqueness u "
        "JOIN images i USING (image_id) WHERE u.model_key = ? ORDER BY u.uniqueness DESC",
        [key],
    )
    return dg.MaterializeResult(
        metadata={
            "model_key": key,
            "images": len(ids),
            "most_unique": _top_table(
                top, ["image_id", "uniqueness", "representativeness", "path"]
            ),
            "uniqueness_histogram": dg.MetadataValue.md(_histogram(unique, "uniqueness")),
            "seconds": round(time.perf_counter() - t0, 3),
        },
        data_version=dg.DataVersion(fp),
    )


@dg.asset_check(
    asset="near_duplicates",
    name="no_split_leaks",
    blocking=False,
    description="Near-duplicates that cross train / val / test splits (view `split_leaks`): "
    "a copy of a test image in training inflates test accuracy.",
)
def no_split_leaks(storage: StorageResource) -> dg.AssetCheckResult:
    db = storage.paths.catalog_db
    key = current_set(db).model_key
    leaks = _rows(
        db,
        "SELECT l.*, ia.path AS path_a, ib.path AS path_b FROM split_leaks l "
        "JOIN images ia ON ia.image_id = l.image_id_a JOIN images ib ON ib.image_id = l.image_id_b "
        "WHERE l.model_key = ? ORDER BY l.similarity DESC",
        [key],
    )
    splits = _rows(db, "SELECT split, count(*) AS n FROM splits GROUP BY 1 ORDER BY 1")
    return dg.AssetCheckResult(
        passed=leaks.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "leaks": len(leaks),
            "images_per_split": dg.MetadataValue.json(
                {str(s): int(n) for s, n in zip(splits["split"], splits["n"], strict=True)}
            ),
            "top_leaks": _top_table(
                leaks, ["split_a", "split_b", "similarity", "path_a", "path_b"]
            ),
        },
        description=None
        if leaks.empty
        else f"{len(leaks)} near-duplicate pairs cross splits: see "
        '`emb sql "select * from split_leaks"` and remove or move one of each pair.',
    )


class BatchDriftConfig(dg.Config):
    reference: Literal["before", "first"] = Field(
        default="before",
        description="What each batch is compared with: every image seen before it, or the "
        "first batch only (a pinned reference).",
    )
    alpha: float = Field(default=0.01, description="A batch drifted when p < alpha.")
    permutations: int = Field(default=1000, description="Permutations behind the p-value.")
    k: int = Field(default=10, description="Neighbour behind the per-image ood_score.")
    max_batches: int = Field(default=20, description="The newest batches tested per run.")
    seed: int = Field(default=0, description="Seed of the permutations.")


@dg.asset(deps=["embeddings"], group_name=GROUP, kinds={"faiss", "duckdb"}, owners=OWNERS)
def batch_drift(
    context: dg.AssetExecutionContext, config: BatchDriftConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Has a new batch of images drifted from what came before? A batch is the images the
    catalog first saw in one scan. Each is compared with the reference by a two-sample test on
    the embeddings (mean shift in the reference's principal components, permutation p-value):
    one verdict per batch in `batch_drift`, and per image an `ood_score` (its k-th nearest
    reference distance as a reference quantile) in `ood_scores`. The plot shows the newest
    batch against the reference on a 2-D map."""
    import pyarrow as pa

    from embedding_assets.curation.drift import drift_test, fit_reference
    from embedding_assets.vectors import read_parquet

    db = storage.paths.catalog_db
    emb_set, fp, unchanged = set_inputs(db, "batch_drift", config)
    key = emb_set.model_key
    if unchanged:
        return reused(context, fp, {"model_key": key})
    t0 = time.perf_counter()
    ids, vectors = read_parquet(emb_set.parquet_path)
    seen = _rows(db, "SELECT image_id, first_seen FROM images")
    first = dict(zip(seen["image_id"], seen["first_seen"], strict=True))
    batch_of = np.array([str(first[int(i)]) for i in ids])
    batches = sorted(set(batch_of.tolist()))
    results, ood_rows, newest = [], [], None
    for b in batches[1:][-config.max_batches :]:
        ref_mask = batch_of == batches[0] if config.reference == "first" else batch_of < b
        members = batch_of == b
        if ref_mask.sum() < config.k + 2:
            continue
        reference = fit_reference(vectors[ref_mask], k=config.k)
        r = drift_test(reference, vectors[members], config.alpha, config.permutations, config.seed)
        what = "first batch" if config.reference == "first" else "all earlier batches"
        results.append(
            (
                b,
                int(members.sum()),
                r.score,
                r.p_value,
                r.drifted,
                f"{what} ({int(ref_mask.sum())} images)",
            )
        )
        ood_rows += [(int(i), b, float(s)) for i, s in zip(ids[members], r.ood_score, strict=True)]
        newest = (ref_mask, members, r)
    cols = list(zip(*results, strict=True)) if results else [[]] * 6
    table = pa.table(
        {
            "batch_id": pa.array(cols[0], pa.string()),
            "images": pa.array(cols[1], pa.int32()),
            "score": pa.array(cols[2], pa.float64()),
            "p_value": pa.array(cols[3], pa.float64()),
            "drifted": pa.array(cols[4], pa.bool_()),
            "reference": pa.array(cols[5], pa.string()),
            "model_key": pa.array([key] * len(results), pa.string()),
        }
    )
    store.replace_rows(db, "batch_drift", key, table, fp)
    ood = list(zip(*ood_rows, strict=True)) if ood_rows else [[]] * 3
    store.replace_rows(
        db,
        "ood_scores",
        key,
        pa.table(
            {
                "image_id": pa.array(ood[0], pa.int64()),
                "batch_id": pa.array(ood[1], pa.string()),
                "ood_score": pa.array(ood[2], pa.float64()),
                "model_key": pa.array([key] * len(ood_rows), pa.string()),
            }
        ),
    )
    drifted = [b for b, *_, d, _ in results if d]
    context.log.info(f"{len(results)} batches tested, {len(drifted)} drifted")
    metadata = {
        "model_key": key,
        "batches": len(batches),
        "tested": len(results),
        "drifted": len(drifted),
        "verdicts": dg.MetadataValue.md(
            markdown.table(
                ["batch", "images", "score", "p_value", "drifted"],
                [[b, n, round(s, 5), round(p, 4), d] for b, n, s, p, d, _ in results],
            )
        ),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if newest is not None:
        metadata["newest_batch_map"] = dg.MetadataValue.md(_drift_map(vectors, *newest))
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(fp))


def _drift_map(vectors: np.ndarray, ref_mask: np.ndarray, members: np.ndarray, result) -> str:
    """The newest batch (coloured by ood_score) over the reference (grey), on the reference's
    first two principal components."""
    from matplotlib.figure import Figure

    from embedding_assets.plots import png_markdown

    ref = vectors[ref_mask]
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
    return png_markdown(fig, "newest batch vs reference")
