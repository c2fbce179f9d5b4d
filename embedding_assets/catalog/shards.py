"""Hash shards of the image collection: the Dagster partitions of `image_catalog` and `embeddings`.

A file belongs to shard `crc32(path) % count`, decided by its path alone, so a shard can be
scanned before anything is read and keeps its files while others are added. `$EMB_SHARDS`
(read when the definitions load) turns sharding on; unset, both assets are unpartitioned and
one run handles the whole collection, as before.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SHARDS_ENV = "EMB_SHARDS"
MAX_SHARDS = 4096


def shard_count() -> int:
    """`$EMB_SHARDS` as a count of shards; 0 when unset (no partitions)."""
    raw = os.environ.get(SHARDS_ENV, "").strip()
    if not raw:
        return 0
    if not raw.isdigit() or not 2 <= int(raw) <= MAX_SHARDS:
        raise ValueError(
            f"${SHARDS_ENV}={raw!r}: give a whole number of shards from 2 to {MAX_SHARDS} "
            "(e.g. 64 for ten million images), or unset it for no partitions"
        )
    return int(raw)


def partition_keys(count: int) -> list[str]:
    """Keys that sort as numbers: 00 .. 63 for 64 shards."""
    return [Shard(i, count).key for i in range(count)]


@dataclass(frozen=True)
class Shard:
    """One of `count` hash shards."""

    index: int
    count: int

    @classmethod
    def from_key(cls, key: str, count: int) -> Shard:
        return cls(int(key), count)

    @property
    def key(self) -> str:
        """Its Dagster partition key."""
        return f"{self.index:0{len(str(self.count - 1))}d}"

    @property
    def name(self) -> str:
        return f"{self.key}-of-{self.count}"

    def contains(self, path: str) -> bool:
        return shard_of(path, self.count) == self.index

    def mask(self, paths: Sequence[str]) -> np.ndarray:
        """Which of `paths` (catalog display paths) fall in this shard."""
        return np.fromiter((self.contains(p) for p in paths), bool, len(paths))


def shard_of(path: str, count: int) -> int:
    """Stable across processes and Python versions (unlike hash())."""
    return zlib.crc32(path.encode("utf-8", "surrogateescape")) % count
