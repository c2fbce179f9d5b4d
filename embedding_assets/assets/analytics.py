"""`clusters`, `anomaly_scores` and `projections`: what the embedding space looks like.

Thin wrappers over `analytics` (`per_image`, `mapping`); results go to DuckDB (tables of
resources/ddl/040_analytics.sql, view `image_overview`), pictures to the metadata. Each reuses
its stored rows when the embedding set's content and its config are unchanged.
"""

from functools import partial
from typing import Any

import dagster as dg

from embedding_assets.analytics import store
from embedding_assets.analytics.clustering import parse_k
from embedding_assets.analytics.mapping import (
    Drawn,
    MapFiles,
    Maps,
    MapSettings,
    compute_maps,
    draw_maps,
)
from embedding_assets.analytics.per_image import (
    anomaly_scores_of,
    cluster_table,
    clusters_of,
    flagged_table,
)
from embedding_assets.assets.reuse import (
    Inputs,
    Report,
    dagster_metadata,
    materialize,
    previous_metadata,
)
from embedding_assets.assets.score_tables import Scorer, score_table
from embedding_assets.common import tables
from embedding_assets.common.fingerprints import REUSED, Stored, fingerprint, labels_version, stored
from embedding_assets.common.results import Scores
from embedding_assets.common.settings import page_url
from embedding_assets.configs.analytics import AnomalyConfig, ClustersConfig, ProjectionsConfig
from embedding_assets.embedding.sets import EmbeddingSet, current_set
from resources.gpu import GPU_POOL, GPUResource
from resources.storage import StorageResource

MAPS_REUSED = (
    "maps reused (embeddings and settings unchanged); pictures drawn again for new labels, "
    "clusters or anomaly flags"
)
GROUP = "analytics"
OWNERS = ["team:ml-platform"]


@dg.asset(
    deps=["embeddings"],
    group_name=GROUP,
    kinds={"scikitlearn", "faiss", "duckdb"},
    owners=OWNERS,
    pool=GPU_POOL,
)
def clusters(
    context: dg.AssetExecutionContext,
    config: ClustersConfig,
    storage: StorageResource,
    gpu: GPUResource,
) -> dg.MaterializeResult:
    """k-means cluster id per image (table `clusters`), FAISS k-means for large inputs;
    `k: auto` picks k by a silhouette sweep."""
    parse_k(config.k)  # a bad k fails before any data is read
    paths = storage.paths
    n_classes = store.label_classes(paths.catalog_db)
    made_with = fingerprint(config.model_dump(mode="json"), n_classes)
    device = partial(gpu.acquire, context.log)

    def compute(emb_set: EmbeddingSet) -> Scores:
        params = config.params(n_classes)
        return clusters_of(emb_set, paths, params, made_with, device)

    def shown(emb_set: EmbeddingSet) -> dict[str, Any]:
        return {"clusters": dg.MetadataValue.md(cluster_table(paths.catalog_db, emb_set.model_key))}

    return score_table(
        context, storage, tables.CLUSTERS, config, Scorer(compute, shown), more=(n_classes,)
    )


@dg.asset(deps=["embeddings"], group_name=GROUP, kinds={"scikitlearn", "duckdb"}, owners=OWNERS)
def anomaly_scores(
    context: dg.AssetExecutionContext, config: AnomalyConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Isolation Forest score per image (table `anomaly_scores`, higher = more unusual), the
    top `flag_fraction` flagged and listed in the metadata."""
    paths = storage.paths
    made_with = fingerprint(config.scoring())

    def compute(emb_set: EmbeddingSet) -> Scores:
        return anomaly_scores_of(emb_set, paths, config.params(), made_with)

    def shown(emb_set: EmbeddingSet) -> dict[str, Any]:
        flagged = flagged_table(paths.catalog_db, emb_set.model_key, config.list_max)
        return {"flagged_images": dg.MetadataValue.md(flagged)}

    return score_table(context, storage, tables.ANOMALY_SCORES, config, Scorer(compute, shown))


@dg.asset(
    deps=["embeddings", clusters, anomaly_scores],
    group_name=GROUP,
    kinds={"scikitlearn", "duckdb", "html"},
    owners=OWNERS,
    pool=GPU_POOL,
)
def projections(
    context: dg.AssetExecutionContext,
    config: ProjectionsConfig,
    storage: StorageResource,
    gpu: GPUResource,
) -> dg.MaterializeResult:
    """2-D maps (PCA, UMAP, t-SNE) in table `projections`, each drawn as a PNG coloured by
    label, cluster and anomaly flag, plus an interactive HTML map. The maps are computed again
    only when the embeddings or their settings change, the pictures when labels, clusters or
    anomaly flags do."""
    methods = config.method_names()
    paths = storage.paths
    db = paths.catalog_db
    emb_set = current_set(db)
    key = emb_set.model_key
    computed_from = config.map_settings()
    parts = (emb_set.content_version(), methods, computed_from)
    inputs = Inputs(tables.PROJECTIONS, parts, scope=key)
    drawn_from = [stored(db, table, key) for table in (tables.CLUSTERS, tables.ANOMALY_SCORES)]
    version = fingerprint(
        inputs.fingerprint,
        config.plot_settings(),
        labels_version(db),
        [s.fingerprint if s else None for s in drawn_from],
    )
    files = MapFiles.of(paths, key)
    coords_kept = inputs.unchanged(db) is not None

    def kept(_: Stored) -> Report | None:
        drawn = previous_metadata(context, version) and files.drawn(methods)
        return Report(version=version) if drawn else None

    def compute() -> Report:
        if coords_kept:
            maps, metadata = Maps.stored(db, key, methods), {REUSED: MAPS_REUSED}
        else:
            settings = MapSettings(methods, config.params(), fingerprint(methods, computed_from))
            device = partial(gpu.acquire, context.log)
            maps = compute_maps(emb_set, paths, settings, device, context.log.info)
            metadata = dagster_metadata(maps.metadata)
        drawn = draw_maps(db, maps, files, config.drawing())
        metadata.update(_drawn(drawn, files), model_key=key, images=len(maps.ids))
        metadata["plot_seconds"] = drawn.seconds
        return Report(metadata, version)

    return materialize(context, db, inputs, compute, kept)


def _drawn(drawn: Drawn, files: MapFiles) -> dict[str, Any]:
    """The metadata of the drawn maps: the pictures, and links to the files and pages."""
    return {
        **dagster_metadata(drawn.pictures),
        "html_map": dg.MetadataValue.path(str(drawn.html)),
        "map_in_browser": dg.MetadataValue.url(page_url("map")),
        "atlas_in_browser": dg.MetadataValue.url(page_url("atlas/")),  # after map_export
        "png_dir": dg.MetadataValue.path(str(files.plot_dir)),
        "coloured_by": drawn.coloured_by,
    }


def _one_good_row_per_image(storage: StorageResource, table: str) -> dg.AssetCheckResult:
    """Passes when `table` holds exactly one row without NULL/NaN values per image of the
    current embedding set."""
    db = storage.paths.catalog_db
    emb_set = current_set(db)
    c = store.row_counts(db, table, emb_set.model_key)
    passed = c["rows"] == c["images"] == emb_set.count and c["bad_values"] == 0
    return dg.AssetCheckResult(passed=passed, metadata={"embedded_images": emb_set.count, **c})


@dg.asset_check(
    asset=clusters, blocking=True, description="Every embedded image has exactly one cluster."
)
def clusters_cover_all_images(storage: StorageResource) -> dg.AssetCheckResult:
    return _one_good_row_per_image(storage, tables.CLUSTERS)


@dg.asset_check(
    asset=anomaly_scores, blocking=True, description="One finite score per embedded image."
)
def anomaly_scores_are_finite(storage: StorageResource) -> dg.AssetCheckResult:
    return _one_good_row_per_image(storage, tables.ANOMALY_SCORES)


@dg.asset_check(
    asset=projections, description="Each method has one finite (x, y) per embedded image."
)
def projection_rows_match(storage: StorageResource) -> dg.AssetCheckResult:
    db = storage.paths.catalog_db
    emb_set = current_set(db)
    per_method = store.projections_complete(db, emb_set.model_key, emb_set.count)
    passed = bool(per_method) and all(per_method.values())
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "embedded_images": emb_set.count,
            "methods_ok": dg.MetadataValue.json(per_method),
        },
    )
