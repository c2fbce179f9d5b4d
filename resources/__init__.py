"""Dagster resources: where state lives (data directory, DuckDB) and where compute runs (GPU)."""

from resources.gpu import GPUResource
from resources.storage import StorageResource

__all__ = ["GPUResource", "StorageResource"]
