"""`image_catalog`: the folder of images as rows in DuckDB, refreshed incrementally."""

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from embedding_assets.assets.sharding import partitions_def, shard_for
from embedding_assets.catalog.labels import UNLABELED_FOLDERS
from embedding_assets.catalog.probe import DEFAULT_MAX_PIXELS
from embedding_assets.common import tables
from embedding_assets.common.settings import default_image_dir
from resources.storage import StorageResource

if TYPE_CHECKING:
    from embedding_assets.catalog.scan import ScanSummary
    from resources.paths import DataPaths


class CatalogConfig(dg.Config):
    image_dir: str = Field(
        default=default_image_dir(),
        description="Folder to scan recursively (PNG, JPEG, TIFF, WebP, BMP, GIF), or an "
        "object-storage URL (s3://bucket/prefix, gs://..., az://...; credentials from the "
        "standard environment variables). "
        "Defaults to $EMB_IMAGE_DIR, else the demo images in the data directory.",
    )
    max_image_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS,
        description="Images with more pixels are rejected as possible decompression bombs.",
    )
    labels_from_folders: bool = Field(
        default=True,
        description="Record each image's parent folder name as its label "
        "(folders named in unlabeled_folders give none).",
    )
    unlabeled_folders: list[str] = Field(
        default=list(UNLABELED_FOLDERS),
        description="Folder names (case-insensitive, exact) whose images get no folder label; "
        "any other folder name becomes a label class.",
    )
    workers: int = Field(default=0, description="Threads that hash and decode; 0 = automatic.")


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
    from embedding_assets.catalog.labels import looks_unlabeled
    from embedding_assets.catalog.scan import (
        ScanSettings,
        scan_catalog,
        usable_version,
        write_snapshot,
    )

    paths = storage.paths
    shard = shard_for(context)
    settings = ScanSettings(
        config.max_image_pixels,
        config.labels_from_folders,
        config.workers or None,
        tuple(config.unlabeled_folders),
    )
    summary = scan_catalog(paths.catalog_db, config.image_dir, settings, shard=shard)
    snapshot = paths.parquet_dir / "images.parquet"
    if summary.new or summary.changed or summary.removed or not snapshot.exists():
        write_snapshot(paths.catalog_db, snapshot)  # else it holds these rows already
    context.log.info(
        f"Scanned {summary.found} files in {summary.seconds:.2f} s: {summary.new} new, "
        f"{summary.changed} changed, {summary.removed} removed; status {summary.by_status}"
    )
    context.log.info(f"Label classes (images): {summary.label_classes}")
    suspicious = [c for c in summary.label_classes if looks_unlabeled(c, config.unlabeled_folders)]
    if suspicious:
        context.log.warning(
            f"Label class(es) {', '.join(suspicious)} look like unlabeled folders but are not "
            f"named exactly one of {', '.join(config.unlabeled_folders)}: their images are "
            "labeled with the folder name; rename the folder or add it to unlabeled_folders "
            "in the image_catalog config"
        )
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
    with storage.connect(read_only=True) as con:
        usable, bad = con.execute(
            "SELECT count(*) FILTER (status = 'ok'), count(*) FILTER (status <> 'ok') "
            f"FROM {tables.IMAGES} WHERE removed_at IS NULL"
        ).fetchone()
    return dg.AssetCheckResult(
        passed=usable > 0,
        metadata={"usable_images": usable, "unusable_images": bad},
        description=None
        if usable
        else f'No usable image ({bad} unusable): see `emb sql "select path, error from images"`',
    )
