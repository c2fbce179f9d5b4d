"""DuckDB reads and writes shared by the analytics assets (projections, clusters, anomalies).

Each result table holds rows for several embedding sets (model keys); a materialization
replaces the rows of its own model key in one transaction, so a reader never sees half a set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from resources.duckdb_store import connect

TABLES = ("projections", "clusters", "anomaly_scores")


def replace_rows(db_path: Path, table: str, model_key: str, rows: pa.Table) -> int:
    """Delete `model_key`'s rows of `table` and insert `rows` (same column order), atomically."""
    if table not in TABLES:
        raise ValueError(f"{table!r} is not one of {TABLES}")
    with connect(db_path) as con:
        con.begin()  # first: it also settles the schema check's pending result (DuckDB 2)
        try:
            con.register("new_rows", rows)
            con.execute(f"DELETE FROM {table} WHERE model_key = ?", [model_key])
            con.execute(f"INSERT INTO {table} SELECT * FROM new_rows")
            con.commit()
        except BaseException:
            con.rollback()
            raise
        finally:
            con.unregister("new_rows")
    return rows.num_rows


def image_info(db_path: Path, image_ids: np.ndarray) -> pd.DataFrame:
    """path and current label for `image_ids`, in their order (label None when unlabeled)."""
    wanted = _wanted(image_ids)
    with connect(db_path, read_only=True) as con:
        con.register("wanted", wanted)
        return con.execute(
            """
            SELECT w.image_id, i.path, l.label
            FROM wanted w
            LEFT JOIN images i USING (image_id)
            LEFT JOIN current_labels l USING (image_id)
            ORDER BY w.pos
            """
        ).df()


def read_column(
    db_path: Path, table: str, column: str, model_key: str, image_ids: np.ndarray
) -> np.ndarray | None:
    """`column` of `table` for `model_key`, aligned to `image_ids` (NaN where missing);
    None when the table has no rows for that model key yet."""
    if table not in TABLES:
        raise ValueError(f"{table!r} is not one of {TABLES}")
    wanted = _wanted(image_ids)
    with connect(db_path, read_only=True) as con:
        con.register("wanted", wanted)
        df = con.execute(
            f"""
            SELECT t.{column}::DOUBLE AS value
            FROM wanted w LEFT JOIN (SELECT * FROM {table} WHERE model_key = ?) t USING (image_id)
            ORDER BY w.pos
            """,
            [model_key],
        ).df()
    values = df["value"].to_numpy(dtype=np.float64, na_value=np.nan)
    return None if np.isnan(values).all() else values


def row_counts(db_path: Path, table: str, model_key: str) -> dict[str, int]:
    """For the asset checks: rows, distinct images and NULL/NaN values of `table` for a key."""
    value = {"clusters": "cluster", "anomaly_scores": "score"}[table]
    with connect(db_path, read_only=True) as con:
        rows, images, bad = con.execute(
            f"SELECT count(*), count(DISTINCT image_id), "
            f"count(*) FILTER ({value} IS NULL OR isnan({value}::DOUBLE)) "
            f"FROM {table} WHERE model_key = ?",
            [model_key],
        ).fetchone()
    return {"rows": rows, "images": images, "bad_values": bad}


def _wanted(image_ids: np.ndarray) -> pa.Table:
    ids = np.asarray(image_ids, dtype=np.int64)
    return pa.table({"image_id": ids, "pos": np.arange(len(ids), dtype=np.int64)})
