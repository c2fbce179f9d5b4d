"""Reporting a stored result that an asset reused because its inputs did not change
(`common.fingerprints`): same data version, the figures measured when it was
computed, and `reused` in the metadata saying so."""

from pathlib import Path

import dagster as dg

from embedding_assets.common.fingerprints import REUSED, SKIPPED, fingerprint, stored
from embedding_assets.embedding.sets import EmbeddingSet, content_version, current_set

DATA_VERSION_TAG = "dagster/data_version"  # the tag holding a materialization's data version


def previous_metadata(
    context: dg.AssetExecutionContext, data_version: str
) -> dict[str, dg.MetadataValue]:
    """The metadata of this asset's latest materialization when it has `data_version`, else {}
    (e.g. a fresh Dagster instance over an existing data directory)."""
    event = context.instance.get_latest_materialization_event(context.asset_key)
    materialization = event.asset_materialization if event else None
    if materialization is None or materialization.tags.get(DATA_VERSION_TAG) != data_version:
        return {}
    return dict(materialization.metadata)


def reused(
    context: dg.AssetExecutionContext,
    data_version: str,
    metadata: dict | None = None,
    *,
    note: str = SKIPPED,
    previous: dict | None = None,
    check_results: list[dg.AssetCheckResult] | None = None,
) -> dg.MaterializeResult:
    """The materialization of a reused result: `previous` (default: `previous_metadata`) with
    `metadata` on top and `reused: note`."""
    if previous is None:
        previous = previous_metadata(context, data_version)
    context.log.info(f"{context.asset_key.to_user_string()}: {note}")
    return dg.MaterializeResult(
        metadata={**previous, **(metadata or {}), REUSED: note},
        data_version=dg.DataVersion(data_version),
        check_results=check_results,
    )


def set_inputs(
    db: Path, asset: str, config: dg.Config, *more: object
) -> tuple[EmbeddingSet, str, bool]:
    """The current embedding set, the fingerprint of `asset`'s inputs (that set's content, the
    config and any `more`, e.g. the labels version) and whether the stored rows of that set
    were computed from exactly these."""
    emb_set = current_set(db)
    content = content_version(emb_set.parquet_path, emb_set.model_key)
    fp = fingerprint(asset, content, config.model_dump(mode="json"), *more)
    found = stored(db, asset, emb_set.model_key)
    return emb_set, fp, found is not None and found.fingerprint == fp
