"""One data directory holds all state; this resource says where, and opens the catalog."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb
from pydantic import Field

from resources import duckdb_store
from resources.paths import DATA_DIR_ENV, DataPaths, default_data_dir


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
