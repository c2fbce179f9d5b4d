"""Shared set-up of the active-learning tests: a real catalog plus synthetic embeddings."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import numpy as np

from embedding_assets.assets.learning import classifier, label_queue, predictions
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.embedding import sets as vec
from resources.duckdb_store import connect
from resources.storage import DataPaths
from tests.helpers import resources

MODEL_KEY = "synthetic-8d"
AL_ASSETS = [classifier, predictions, label_queue]


def catalog_with_vectors(data_dir: Path, folder: Path, seed: int = 0) -> DataPaths:
    """Scan `folder` into the catalog and register 8-d vectors that separate its classes (the
    class_N in the folder's or the file's name; other images get a random class's vector)."""
    paths = DataPaths(data_dir)
    scan_catalog(paths.catalog_db, folder)
    with connect(paths.catalog_db, read_only=True) as con:
        rows = con.execute("SELECT image_id, sha256, path FROM usable_images ORDER BY 1").fetchall()
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 8)) * 3
    x = np.stack([centres[_class_of(p, rng)] + rng.normal(size=8) * 0.3 for _, _, p in rows])
    x = x.astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    parquet = vec.write_parquet(
        paths.parquet_dir / f"embeddings-{MODEL_KEY}.parquet",
        ids,
        [r[1] for r in rows],
        MODEL_KEY,
        x,
    )
    vec.register(
        paths.catalog_db,
        vec.EmbeddingSet(MODEL_KEY, "synthetic", 8, len(ids), parquet),
        None,
        {},
    )
    return paths


def _class_of(path: str, rng: np.random.Generator) -> int:
    found = re.search(r"class_(\d)", f"{Path(path).parent.name}/{Path(path).name}")
    return int(found[1]) if found else int(rng.integers(3))


def materialize(data_dir: Path, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        AL_ASSETS,
        resources=resources(data_dir, lock_timeout_s=30),
        run_config=run_config,
        raise_on_error=False,
    )


def query(data_dir: Path, sql: str) -> list[tuple]:
    with connect(DataPaths(data_dir).catalog_db, read_only=True) as con:
        return con.execute(sql).fetchall()
