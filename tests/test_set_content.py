"""The embedding set's content version is computed once, when the set is registered, and
downstream assets read it from the catalog instead of re-hashing the Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedding_assets.embedding import sets
from resources.duckdb_store import connect
from resources.paths import DataPaths


def test_the_registered_set_carries_its_content_version(data_dir: Path):
    paths = DataPaths(data_dir)
    paths.ensure(paths.parquet_dir)
    ids = np.arange(1, 6)
    x = np.eye(5, 8, dtype=np.float32)
    parquet = sets.write_parquet(paths.parquet_dir / "k.parquet", ids, list("abcde"), "k", x)
    sets.register(paths.catalog_db, sets.EmbeddingSet("k", "synthetic", 8, 5, parquet), None, {})
    found = sets.current_set(paths.catalog_db)
    assert found.content == sets.content_version(parquet, "k")
    parquet.unlink()  # read from the catalog, not from the Parquet
    assert found.content_version() == found.content
    with connect(paths.catalog_db) as con:  # a set registered before the column existed
        con.execute("UPDATE embedding_sets SET content_version = NULL")
    assert sets.current_set(paths.catalog_db).content is None
