"""One data directory holds all state; this resource says where, and opens the catalog."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

from resources import duckdb_store

DATA_DIR_ENV = "EMB_DATA_DIR"


def default_data_dir() -> str:
    """`$EMB_DATA_DIR`, else `./data` (relative to where Dagster or the CLI was started)."""
    return os.environ.get(DATA_DIR_ENV, "data")


class DataPaths:
    """Names of every file under the data directory, so no module invents its own layout."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def catalog_db(self) -> Path:
        return self.root / "catalog.duckdb"

    @property
    def demo_images(self) -> Path:
        return self.root / "demo_images"

    @property
    def parquet_dir(self) -> Path:
        return self.root / "parquet"

    @property
    def embeddings_lmdb(self) -> Path:
        return self.root / "embeddings.lmdb"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def indexes_dir(self) -> Path:
        return self.root / "indexes"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    def ensure(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        return path


class StorageResource(dg.ConfigurableResource):
    """The data directory and short-lived connections to its DuckDB catalog.

    We do not use dagster-duckdb's DuckDBResource because the sensor and the CLI need read-only
    connections and every caller needs the lock-retry in `duckdb_store.connect`, which plain
    (non-Dagster) code shares.
    """

    data_dir: str = Field(
        default_factory=default_data_dir,
        description="Folder for all state (DuckDB, LMDB, Parquet, models, plots). "
        f"Defaults to ${DATA_DIR_ENV} or ./data.",
    )
    lock_timeout_s: float = Field(
        default=120.0, description="How long to wait for another process's DuckDB write lock."
    )

    @property
    def paths(self) -> DataPaths:
        return DataPaths(self.data_dir)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to close quickly: never hold it across heavy compute."""
        with duckdb_store.connect(
            self.paths.catalog_db, read_only=read_only, timeout_s=self.lock_timeout_s
        ) as con:
            yield con
