"""`image_catalog`: the folder of images as rows in DuckDB, refreshed incrementally."""

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from embedding_assets.assets.sharding import partitions_def, shard_for
from embedding_assets.configs.catalog import CatalogConfig
from resources.storage import StorageResource

if TYPE_CHECKING:
    from embedding_assets.catalog.scan import ScanSummary
    from resources.paths import DataPaths


@dg.asset(
    partitions_def=partitions_def(),
    group_name="ingest",
    kinds={"duckdb", "parquet"},
    owners=["team:ml-platform"],
    tags={"stage": "ingest"},
)
def image_catalog(
    context: dg.AssetExecutionContext, config: CatalogConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Every image file under `image_dir` as a row of the DuckDB table `images` (hash, size,
    pixels, mode, format, status), with folder labels in `labels` and a Parquet snapshot.

    Re-runs rehash only files whose size or modification time (an object's ETag) changed;
    vanished files are marked `removed_at`, never deleted. Bad files are kept with status and
    error text. The snapshot is rewritten only when the scan changed a row (its `last_seen` is
    that of the last change), so a run with nothing new leaves the data folder's files as they
    were.
    """
    from embedding_assets.catalog.labels import unlabeled_warning
    from embedding_assets.catalog.scan import scan_catalog, usable_version, write_snapshot

    paths = storage.paths
    shard = shard_for(context)
    summary = scan_catalog(paths.catalog_db, config.image_dir, config.scan_settings(), shard=shard)
    snapshot = paths.parquet_dir / "images.parquet"
    if summary.new or summary.changed or summary.removed or not snapshot.exists():
        write_snapshot(paths.catalog_db, snapshot)  # else it holds these rows already
    context.log.info(
        f"Scanned {summary.found} files in {summary.seconds:.2f} s: {summary.new} new, "
        f"{summary.changed} changed, {summary.removed} removed; status {summary.by_status}"
    )
    context.log.info(f"Label classes (images): {summary.label_classes}")
    warning = unlabeled_warning(summary.label_classes, config.unlabeled_folders)
    if warning:
        context.log.warning(warning)
    return dg.MaterializeResult(
        metadata=_scan_metadata(summary, config, paths, snapshot),
        data_version=dg.DataVersion(usable_version(paths.catalog_db, shard)),
    )


def _scan_metadata(
    summary: "ScanSummary", config: CatalogConfig, paths: "DataPaths", snapshot: Path
) -> dict:
    """What a scan reports: what it found and changed, by status, format and label class."""
    from embedding_assets.catalog.object_store import is_url

    root = summary.root
    return {
        "image_dir": dg.MetadataValue.url(root) if is_url(root) else dg.MetadataValue.path(root),
        "files_found": summary.found,
        "usable_images": summary.usable,
        "new": summary.new,
        "changed": summary.changed,
        "removed": summary.removed,
        "unchanged (not rehashed)": summary.unchanged,
        "labels_added": summary.labels_added,
        "duplicate_content_groups": summary.duplicate_groups,
        "by_status": dg.MetadataValue.json(summary.by_status),
        "by_format": dg.MetadataValue.json(summary.by_format),
        "label_classes": dg.MetadataValue.json(summary.label_classes),
        "unlabeled_folders": dg.MetadataValue.json(list(config.unlabeled_folders)),
        "seconds": dg.MetadataValue.float(round(summary.seconds, 3)),
        "images_per_second": dg.MetadataValue.float(round(summary.images_per_second, 1)),
        "catalog_db": dg.MetadataValue.path(str(paths.catalog_db)),
        "parquet_snapshot": dg.MetadataValue.path(str(snapshot)),
    }


@dg.asset_check(asset=image_catalog, blocking=True, description="At least one usable image.")
def catalog_has_usable_images(storage: StorageResource) -> dg.AssetCheckResult:
    from embedding_assets.catalog.images import status_counts

    counts = status_counts(storage.paths.catalog_db)
    return dg.AssetCheckResult(
        passed=counts.usable > 0,
        metadata={"usable_images": counts.usable, "unusable_images": counts.unusable},
        description=None
        if counts.usable
        else f"No usable image ({counts.unusable} unusable): "
        'see `emb sql "select path, error from images"`',
    )
