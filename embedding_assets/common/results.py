"""Result tables kept per embedding set: a materialization replaces the rows of its own model
key in one transaction, so a reader never sees half a set, and records there the fingerprint of
the inputs the rows were computed from (`fingerprints`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedding_assets.common import tables
from resources.duckdb_store import connect

if TYPE_CHECKING:
    import pyarrow as pa

# The tables written through `replace_rows` (all carry a model_key column but image_quality).
TABLES = (
    tables.PROJECTIONS,
    tables.CLUSTERS,
    tables.ANOMALY_SCORES,
    tables.NEAR_DUPLICATES,
    tables.IMAGE_QUALITY,
    tables.LABEL_ISSUES,
    tables.UNIQUENESS,
    tables.OUTLIERS,
    tables.DATASET_CHECKS,
    tables.BATCH_DRIFT,
    tables.OOD_SCORES,
    tables.IMAGE_TAGS,
    tables.IMAGENET_TERMS,
)


@dataclass
class Scores:
    """What one computation of a per-set result produced: the table's columns (model_key is
    added when written), further tables it replaces too (e.g. per-image scores beside
    per-batch verdicts), metadata (plain values and `markdown.Markdown`), one line for the
    run log, and what to keep once the rows are written (e.g. the fitted model new images are
    placed by: kept before, a failed write would leave it over the old rows)."""

    rows: dict[str, Any]  # column -> NumPy array, list or pyarrow Array (for an explicit type)
    metadata: dict[str, Any] = field(default_factory=dict)
    log: str = ""
    more_tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    after_write: Callable[[], None] | None = None


def check_table(table: str) -> None:
    """Only result tables are written or read by name here (the names go into SQL)."""
    if table not in TABLES:
        raise ValueError(f"{table!r} is not one of {TABLES}")


def replace_rows(db_path: Path, table: str, model_key: str | None, rows: pa.Table) -> int:
    """Delete `model_key`'s rows of `table` (None: a table not kept per embedding set, all its
    rows) and insert `rows` (matched to the table's columns by name), atomically."""
    check_table(table)
    with connect(db_path) as con:
        con.begin()  # first: it also settles the schema check's pending result (DuckDB 2)
        try:
            con.register("new_rows", rows)
            if model_key is None:
                con.execute(f"DELETE FROM {table}")
            else:
                con.execute(f"DELETE FROM {table} WHERE model_key = ?", [model_key])
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM new_rows")
            con.commit()
        except BaseException:
            con.rollback()
            raise
        finally:
            con.unregister("new_rows")
    return rows.num_rows
