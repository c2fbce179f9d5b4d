"""Where state lives: the data directory and the name of every file in it.

Free of Dagster and DuckDB, so the CLI can import it and start quickly.
"""

from __future__ import annotations

import os
from pathlib import Path

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
    def exports_dir(self) -> Path:
        """Backbones exported for an inference runtime (ONNX files by model key)."""
        return self.root / "exports"

    @property
    def map_points(self) -> Path:
        """The map viewer's points, one row per mapped image (analytics/map_export.py)."""
        return self.root / "map_points.parquet"

    @property
    def indexes_dir(self) -> Path:
        return self.root / "indexes"

    def neighbor_graph(self, model_key: str) -> Path:
        """The embedding set's neighbour graph (common/neighbor_graph.py)."""
        return self.root / "graphs" / f"{model_key}.npz"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    def relative(self, path: str | Path) -> str:
        """How the catalog stores a file: relative to the data directory when it lies under it
        (so the folder can be moved or copied), else absolute (a user's own file)."""
        full = Path(path).expanduser().resolve()
        try:
            return full.relative_to(self.root).as_posix()
        except ValueError:
            return str(full)

    def resolve(self, stored: str | Path) -> Path:
        """A path read from the catalog, against the current data directory."""
        path = Path(stored)
        return path if path.is_absolute() else self.root / path

    def ensure(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        return path
