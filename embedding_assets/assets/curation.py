"""Curation assets: `image_quality`, `label_issues`, `uniqueness`, `outliers`,
`dataset_checks`, `batch_drift`, and the split-leak check on `near_duplicates`.

Thin wrappers over `curation` (plain functions); results go to the DuckDB tables of
resources/ddl/110_curation.sql so that SQL users and other tools can rely on them. Each asset
that reads the embeddings is a score table (`score_tables`): it fingerprints its inputs and
reuses its stored rows when they did not change.
"""

import dagster as dg

from embedding_assets.assets.neighbors import read_graph
from embedding_assets.assets.reuse import Inputs, Report, dagster_metadata, materialize
from embedding_assets.assets.score_tables import Scorer, score_table
from embedding_assets.common import tables
from embedding_assets.common.fingerprints import labels_version
from embedding_assets.common.results import Scores
from embedding_assets.configs.curation import (
    BatchDriftConfig,
    ImageQualityConfig,
    LabelIssuesConfig,
    OutliersConfig,
    UniquenessConfig,
)
from embedding_assets.curation import quality_table, reports, scores
from embedding_assets.curation.dataset_checks import check_labels
from embedding_assets.embedding.sets import EmbeddingSet, current_set
from resources.storage import StorageResource

GROUP = "curation"
OWNERS = ["team:ml-platform"]


@dg.asset(deps=["image_catalog"], group_name=GROUP, kinds={"duckdb"}, owners=OWNERS)
def image_quality(
    context: dg.AssetExecutionContext, config: ImageQualityConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Blurry, too dark, too bright, low-information, grey and odd-size images (table
    `image_quality`), from the measures the catalog took while decoding each image; images of
    older catalogs are measured once here."""
    from embedding_assets.catalog.scan import usable_version

    db = storage.paths.catalog_db
    measured = quality_table.measure_missing(db)
    if measured:
        context.log.info(f"measured {measured} images catalogued before quality measures")

    def compute() -> Report:
        thresholds = config.thresholds()
        found = quality_table.flag_images(db, thresholds)
        context.log.info(found.summary)
        return Report(
            {**dagster_metadata(found.shown(thresholds)), "thresholds": config.model_dump()}
        )

    inputs = Inputs(tables.IMAGE_QUALITY, (usable_version(db), config.model_dump(mode="json")))
    return materialize(context, db, inputs, compute)


@dg.asset(
    deps=["embeddings", "labels"], group_name=GROUP, kinds={"scikitlearn", "duckdb"}, owners=OWNERS
)
def label_issues(
    context: dg.AssetExecutionContext, config: LabelIssuesConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Labeled images whose label disagrees with the evidence, most suspicious first (table
    `label_issues`): confident learning (curation/label_issues.py, not the AGPL cleanlab) plus
    the labels of the nearest labeled neighbours, on the plain backbone features.
    `emb queue --label-issues N` exports the top N for review."""
    from embedding_assets.catalog.labels import labeled_content
    from embedding_assets.embedding.features import classifier_feature_key

    db = storage.paths.catalog_db

    def compute(_: EmbeddingSet) -> Scores:
        return scores.label_issue_table(storage.paths, config.params())

    # only the labeled images' features and labels decide it: new unlabeled images do not
    labeled = (classifier_feature_key(storage.paths), labeled_content(db))
    scorer = Scorer(compute, whole_set=False)
    return score_table(context, storage, tables.LABEL_ISSUES, config, scorer, labeled)


@dg.asset(deps=["neighbor_graph"], group_name=GROUP, kinds={"duckdb"}, owners=OWNERS)
def uniqueness(
    context: dg.AssetExecutionContext, config: UniquenessConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """How unlike every other image each one is (`uniqueness`, near 0 for copies) and how
    typical of its neighbourhood (`representativeness`), in table `uniqueness`; the label
    queue's `uniqueness` strategy asks about the most unique unlabeled images."""

    def compute(emb_set: EmbeddingSet) -> Scores:
        return scores.uniqueness_table(read_graph(storage.paths, emb_set), config.k)

    def most_unique(emb_set: EmbeddingSet) -> dict:
        return dagster_metadata(reports.most_unique(storage.paths.catalog_db, emb_set.model_key))

    return score_table(context, storage, tables.UNIQUENESS, config, Scorer(compute, most_unique))


@dg.asset(deps=["neighbor_graph"], group_name=GROUP, kinds={"duckdb"}, owners=OWNERS)
def outliers(
    context: dg.AssetExecutionContext, config: OutliersConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Images far from their nearest neighbours, flagged over median + z robust SDs (table
    `outliers`). Local, unlike `anomaly_scores`: a lone image among dense ones is flagged, a
    sparse region of many alike is not."""

    def compute(emb_set: EmbeddingSet) -> Scores:
        return scores.outlier_table(read_graph(storage.paths, emb_set), config.k, config.z)

    def furthest(emb_set: EmbeddingSet) -> dict:
        return dagster_metadata(reports.furthest(storage.paths.catalog_db, emb_set.model_key))

    return score_table(context, storage, tables.OUTLIERS, config, Scorer(compute, furthest))


@dg.asset(deps=["image_catalog", "labels"], group_name=GROUP, kinds={"duckdb"}, owners=OWNERS)
def dataset_checks(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    """The labeled set as a whole (table `dataset_checks`): labels per class, warning under
    10, and class imbalance, warning when the rarest class has under a fifth of the median
    class's labels."""
    db = storage.paths.catalog_db

    def compute() -> Report:
        found = check_labels(db)
        for warning in found.warnings:
            context.log.warning(warning)
        return Report(dagster_metadata(found.shown()))

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
    leaks = reports.split_leaks(db, current_set(db).model_key)
    return dg.AssetCheckResult(
        passed=not leaks.pairs,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "leaks": leaks.pairs,
            "images_per_split": leaks.images_per_split,
            "top_leaks": dg.MetadataValue.md(str(leaks.top)),
        },
        description=leaks.description,
    )


@dg.asset(deps=["embeddings"], group_name=GROUP, kinds={"faiss", "duckdb"}, owners=OWNERS)
def batch_drift(
    context: dg.AssetExecutionContext, config: BatchDriftConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Has a new batch of images (those the catalog first saw in one scan) drifted from what
    came before? A two-sample test on the embeddings (curation/drift.py) gives one verdict per
    batch in `batch_drift` and a per-image `ood_score` in `ood_scores`; the plot shows the
    newest batch against the reference on a 2-D map."""

    def compute(emb_set: EmbeddingSet) -> Scores:
        return scores.drift_table(storage.paths.catalog_db, emb_set, config.settings())

    return score_table(context, storage, tables.BATCH_DRIFT, config, Scorer(compute))
