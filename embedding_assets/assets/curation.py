"""Curation assets: `image_quality`, `label_issues`, `uniqueness`, `batch_drift`, and the
split-leak check on `near_duplicates`.

Thin wrappers over `curation` (plain functions); results go to the DuckDB tables of
resources/ddl/110_curation.sql so that SQL users and other tools can rely on them. Each asset
that reads the embeddings is a score table (`score_tables`): it fingerprints its inputs and
reuses its stored rows when they did not change.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import dagster as dg
import numpy as np
from pydantic import Field

from embedding_assets.assets.neighbors import read_graph
from embedding_assets.assets.reuse import Inputs, Report, materialize
from embedding_assets.assets.score_tables import Scorer, Scores, score_table
from embedding_assets.common import markdown, tables
from embedding_assets.common.figures import histogram_markdown, png_markdown
from embedding_assets.common.fingerprints import labels_version
from embedding_assets.common.settings import page_url
from embedding_assets.embedding.sets import EmbeddingSet, current_set, read_parquet
from resources.storage import StorageResource

if TYPE_CHECKING:
    import pandas as pd

GROUP = "curation"
OWNERS = ["team:ml-platform"]
TOP_ROWS = 10


class ImageQualityConfig(dg.Config):
    """Thresholds on the measures taken while the catalog decoded each image (defaults and
    why: curation/image_quality.py::QualityThresholds)."""

    sharpness_below: float = Field(
        default=0.12, description="Sharpness (var(Laplacian) / var(grey) at 64 px) below: blurry."
    )
    blur_below: float = Field(
        default=100.0,
        description="Variance of the Laplacian below: blurry (rows of older catalogs only).",
    )
    grayscale_chroma_below: float = Field(
        default=3.0, description="99th percentile of max(RGB) - min(RGB) below: grayscale."
    )
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
    k: int = Field(default=10, ge=1, le=20, description="Neighbours behind representativeness.")


class OutliersConfig(dg.Config):
    k: int = Field(
        default=10, ge=1, le=20, description="Neighbours an image's distance is taken to."
    )
    z: float = Field(
        default=3.5,
        gt=0,
        description="Flag images whose distance is over the median plus this many robust "
        "standard deviations (1.4826 x MAD).",
    )


def _rows(db: Path, sql: str, params: list | None = None) -> "pd.DataFrame":
    from resources.duckdb_store import connect

    with connect(db, read_only=True) as con:
        return con.execute(sql, params or []).df()


def _top_table(df: "pd.DataFrame", columns: list[str]) -> dg.MetadataValue:
    rows = [[_fmt(v) for v in r] for r in df[columns].head(TOP_ROWS).itertuples(index=False)]
    return dg.MetadataValue.md(markdown.table(columns, rows))


def _fmt(value: object) -> object:
    return round(float(value), 4) if isinstance(value, float | np.floating) else value


@dg.asset(deps=["image_catalog"], group_name=GROUP, kinds={"duckdb"}, owners=OWNERS)
def image_quality(
    context: dg.AssetExecutionContext, config: ImageQualityConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Blurry, too dark, too bright, low-information, grey and odd-size images (table
    `image_quality`, one row per usable image with its `flags`). The measures were taken while
    the catalog decoded each image, so no file is read again; images catalogued before that
    (older catalogs) are measured once here."""
    from embedding_assets.curation import quality_table

    db = storage.paths.catalog_db
    measured = quality_table.measure_missing(db)
    if measured:
        context.log.info(f"measured {measured} images catalogued before quality measures")

    def compute() -> Report:
        from embedding_assets.curation.image_quality import QualityThresholds

        found = quality_table.flag_images(db, QualityThresholds(**config.model_dump()))
        flagged, images = found.flagged, found.images
        context.log.info(f"{len(flagged)} of {len(images)} images flagged: {found.counts}")
        columns = ["image_id", "flags", "sharpness", "brightness", "path"]
        cut = float(np.log10(config.sharpness_below + 1e-4))
        histogram = histogram_markdown(quality_table.log_sharpness(images), "log10(sharpness)", cut)
        return Report(
            {
                "images": len(images),
                "flagged": len(flagged),
                "flag_counts": dg.MetadataValue.json(found.counts),
                "flagged_images": _top_table(flagged, columns),
                "sharpness_histogram": dg.MetadataValue.md(histogram),
                "thresholds": dg.MetadataValue.json(config.model_dump()),
            }
        )

    from embedding_assets.catalog.scan import usable_version

    inputs = Inputs(tables.IMAGE_QUALITY, (usable_version(db), config.model_dump(mode="json")))
    return materialize(context, db, inputs, compute)


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
    db = storage.paths.catalog_db

    def compute(_: EmbeddingSet) -> Scores:
        from embedding_assets.catalog.images import image_info
        from embedding_assets.curation.label_issues import LabelIssueParams, find_label_issues
        from embedding_assets.embedding.features import classifier_features

        found = classifier_features(storage.paths)
        ids, X = found.ids, found.matrix
        info = image_info(db, ids)  # path and current label, in the order of ids
        found = find_label_issues(
            ids, X, info["label"].tolist(), LabelIssueParams(**config.model_dump())
        )
        issues = found[found["issue"].astype(bool)]
        shown = issues.merge(info[["image_id", "path"]], on="image_id", how="left")
        return Scores(
            rows={
                "image_id": issues["image_id"].to_numpy(np.int64),
                "given_label": issues["given_label"].astype(str).tolist(),
                "suggested_label": issues["suggested_label"].astype(str).tolist(),
                "score": issues["score"].to_numpy(np.float64),
            },
            metadata={
                "labeled_images": len(found),
                "flagged": len(issues),
                "top_issues": _top_table(
                    shown, ["image_id", "given_label", "suggested_label", "score", "path"]
                ),
                "score_histogram": dg.MetadataValue.md(
                    histogram_markdown(found["score"].to_numpy(float), "label-issue score")
                ),
                "review": "emb queue --label-issues 50 --export review.csv",
            },
            log=f"{len(issues)} of {len(found)} labeled images flagged",
        )

    from embedding_assets.catalog.labels import labeled_content
    from embedding_assets.embedding.features import classifier_feature_key

    # only the labeled images' features and labels decide it: new unlabeled images do not
    labeled = (classifier_feature_key(db), labeled_content(db))
    scorer = Scorer(compute, whole_set=False)
    return score_table(context, storage, tables.LABEL_ISSUES, config, scorer, labeled)


@dg.asset(deps=["neighbor_graph"], group_name=GROUP, kinds={"duckdb"}, owners=OWNERS)
def uniqueness(
    context: dg.AssetExecutionContext, config: UniquenessConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """How unlike every other image each one is (`uniqueness`: 1 - similarity to its nearest
    neighbour, near 0 for copies) and how typical of its neighbourhood (`representativeness`:
    mean similarity to its k nearest), in table `uniqueness`. The label queue's `uniqueness`
    strategy asks about the most unique unlabeled images."""
    db = storage.paths.catalog_db

    def compute(emb_set: EmbeddingSet) -> Scores:
        from embedding_assets.curation.uniqueness import uniqueness_scores

        graph = read_graph(storage.paths, emb_set)
        unique, typical = uniqueness_scores(graph.first(config.k)[0])
        return Scores(
            rows={
                "image_id": graph.ids,
                "uniqueness": unique.astype(np.float64),
                "representativeness": typical.astype(np.float64),
            },
            metadata={
                "images": len(graph.ids),
                "uniqueness_histogram": dg.MetadataValue.md(
                    histogram_markdown(unique, "uniqueness")
                ),
            },
        )

    def most_unique(emb_set: EmbeddingSet) -> dict:
        top = _rows(
            db,
            "SELECT u.image_id, u.uniqueness, u.representativeness, i.path "
            f"FROM {tables.UNIQUENESS} u JOIN {tables.IMAGES} i USING (image_id) "
            "WHERE u.model_key = ? ORDER BY u.uniqueness DESC",
            [emb_set.model_key],
        )
        return {
            "most_unique": _top_table(top, ["image_id", "uniqueness", "representativeness", "path"])
        }

    return score_table(context, storage, tables.UNIQUENESS, config, Scorer(compute, most_unique))


@dg.asset(deps=["neighbor_graph"], group_name=GROUP, kinds={"duckdb"}, owners=OWNERS)
def outliers(
    context: dg.AssetExecutionContext, config: OutliersConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Images far from their nearest neighbours, as a flag (table `outliers`: distance = 1 -
    mean cosine similarity to the k nearest, the threshold median + z robust SDs, flagged).
    Local, unlike `anomaly_scores`' Isolation Forest over the whole space: a lone image among
    dense ones is flagged, a sparse region of many alike is not."""
    db = storage.paths.catalog_db

    def compute(emb_set: EmbeddingSet) -> Scores:
        from embedding_assets.curation.outliers import find_outliers

        graph = read_graph(storage.paths, emb_set)
        ids = graph.ids
        found = find_outliers(graph.first(config.k)[0], config.z)
        return Scores(
            rows={
                "image_id": ids,
                "distance": found.distance,
                "threshold": np.full(len(ids), found.threshold),
                "flagged": found.flagged,
            },
            metadata={
                "images": len(ids),
                "flagged": int(found.flagged.sum()),
                "threshold": dg.MetadataValue.float(round(found.threshold, 4)),
                "distance_histogram": dg.MetadataValue.md(
                    histogram_markdown(found.distance, "kNN distance")
                ),
            },
            log=f"{int(found.flagged.sum())} of {len(ids)} images are outliers",
        )

    def furthest(emb_set: EmbeddingSet) -> dict:
        top = _rows(
            db,
            "SELECT o.image_id, o.distance, o.flagged, i.path "
            f"FROM {tables.OUTLIERS} o JOIN {tables.IMAGES} i USING (image_id) "
            "WHERE o.model_key = ? ORDER BY o.distance DESC",
            [emb_set.model_key],
        )
        rows = [
            [
                f"![{r.image_id}]({page_url(f'thumb/{r.image_id}')})",
                r.image_id,
                _fmt(r.distance),
                bool(r.flagged),
                r.path,
            ]
            for r in top.head(TOP_ROWS).itertuples(index=False)
        ]
        columns = ["thumbnail (emb serve)", "image_id", "distance", "flagged", "path"]
        return {"furthest": dg.MetadataValue.md(markdown.table(columns, rows))}

    return score_table(context, storage, tables.OUTLIERS, config, Scorer(compute, furthest))


@dg.asset(deps=["image_catalog", "labels"], group_name=GROUP, kinds={"duckdb"}, owners=OWNERS)
def dataset_checks(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    """The labeled set as a whole (table `dataset_checks`): labels per class, warning under
    10, and class imbalance, warning when the rarest class has under a fifth of the median
    class's labels."""
    from embedding_assets.curation.dataset_checks import check_labels

    db = storage.paths.catalog_db

    def compute() -> Report:
        found = check_labels(db)
        for row in found.rows:
            if row["warning"]:
                context.log.warning(row["detail"])
        table = [
            [r["check_name"], r["subject"], _fmt(r["value"]), r["warning"], r["detail"]]
            for r in found.rows
        ]
        columns = ["check", "subject", "value", "warning", "detail"]
        return Report(
            {
                "labels": found.labels,
                "classes": found.classes,
                "warnings": sum(r["warning"] for r in found.rows),
                "checks": dg.MetadataValue.md(markdown.table(columns, table)),
            }
        )

    inputs = Inputs(tables.DATASET_CHECKS, (labels_version(db),))
    return materialize(context, db, inputs, compute)


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
        f"SELECT l.*, ia.path AS path_a, ib.path AS path_b FROM {tables.SPLIT_LEAKS} l "
        f"JOIN {tables.IMAGES} ia ON ia.image_id = l.image_id_a "
        f"JOIN {tables.IMAGES} ib ON ib.image_id = l.image_id_b "
        "WHERE l.model_key = ? ORDER BY l.similarity DESC",
        [key],
    )
    splits = _rows(db, f"SELECT split, count(*) AS n FROM {tables.SPLITS} GROUP BY 1 ORDER BY 1")
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
    alpha: float = Field(
        default=0.01, description="A batch drifted when p < alpha (and its effect is large enough)."
    )
    min_effect: float = Field(
        default=0.05,
        description="The smallest mean shift called drift, as a fraction of the reference's "
        "spread: a large batch can make a negligible shift significant.",
    )
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
    the embeddings (mean shift in the reference's principal components, permutation p-value,
    and an effect size that must reach `min_effect`): one verdict per batch in `batch_drift`,
    and per image an `ood_score` (its k-th nearest reference distance as a reference quantile)
    in `ood_scores`. The plot shows the newest batch against the reference on a 2-D map."""
    db = storage.paths.catalog_db

    def compute(emb_set: EmbeddingSet) -> Scores:
        from embedding_assets.curation import drift

        ids, vectors = read_parquet(emb_set.parquet_path)
        batch_of = drift.first_seen(db, ids)
        found = drift.batch_drift(
            ids, vectors, batch_of, drift.DriftSettings(**config.model_dump())
        )
        drifted = sum(v.drifted for v in found.verdicts)
        table = [
            [
                v.batch_id,
                v.images,
                round(v.p_value, 4),
                round(v.p_holm, 4),
                round(v.effect_size, 3),
                v.drifted,
            ]
            for v in found.verdicts
        ]
        columns = ["batch", "images", "p_value", "p_holm", "effect", "drifted"]
        metadata = {
            "batches": len(set(batch_of.tolist())),
            "tested": len(found.verdicts),
            "drifted": drifted,
            "verdicts": dg.MetadataValue.md(markdown.table(columns, table)),
        }
        if found.newest is not None:
            figure = png_markdown(
                drift.drift_map(vectors, *found.newest), "newest batch vs reference"
            )
            metadata["newest_batch_map"] = dg.MetadataValue.md(figure)
        return Scores(
            rows=found.verdict_rows(),
            more_tables={tables.OOD_SCORES: found.ood_rows()},
            metadata=metadata,
            log=f"{len(found.verdicts)} batches tested, {drifted} drifted",
        )

    return score_table(context, storage, tables.BATCH_DRIFT, config, Scorer(compute))
