"""The hash-shard partitions of `image_catalog` and `embeddings` (when `$EMB_SHARDS` is set)."""

from __future__ import annotations

from functools import cache

import dagster as dg

from embedding_assets.catalog.shards import Shard, partition_keys, shard_count


@cache
def partitions_def() -> dg.StaticPartitionsDefinition | None:
    """One partition per shard, or None (unpartitioned) when `$EMB_SHARDS` is unset. One object
    for both assets, so Dagster sees them share a partitioning."""
    count = shard_count()
    return dg.StaticPartitionsDefinition(partition_keys(count)) if count else None


def shard_for(context: dg.AssetExecutionContext) -> Shard | None:
    """The shard this run handles; None for an unpartitioned asset (the whole collection)."""
    if not context.has_partition_key:
        return None
    return Shard.from_key(context.partition_key, shard_count())
