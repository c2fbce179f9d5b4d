"""DuckDB reads and writes shared by the analytics assets (projections, clusters, anomalies)
and `near_duplicates`.

Each result table holds rows for several embedding sets (model keys); a materialization
replaces the rows of its own model key in one transaction, so a reader never sees half a set,
and records there the fingerprint of the inputs the rows were computed from.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedding_assets import fingerprints
from resources.duckdb_store import connect

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

TABLES = (
    "projections",
    "clusters",
    "anomaly_scores",
    "near_duplicates",
    "image_quality",
    "label_issues",
    "uniqueness",
    "batch_drift",
    "ood_scores",
)


def replace_rows(
    db_path: Path,
    table: str,
    model_key: str | None,
    rows: pa.Table,
    fingerprint: str | None = None,
) -> int:
    """Delete `model_key`'s rows of `table` (None: a table not kept per embedding set, all its
    rows) and insert `rows` (same column order), atomically, with the `fingerprint` of their
    inputs (None: rows of unknown inputs, never reused)."""
    if table not in TABLES:
        raise ValueError(f"{table!r} is not one of {TABLES}")
    scope = model_key or ""
    with connect(db_path) as con:
        con.begin()  # first: it also settles the schema check's pending result (DuckDB 2)
        try:
            con.register("new_rows", rows)
            if model_key is None:
                con.execute(f"DELETE FROM {table}")
            else:
                con.execute(f"DELETE FROM {table} WHERE model_key = ?", [model_key])
            con.execute(f"INSERT INTO {table} SELECT * FROM new_rows")
            if fingerprint is None:
                con.execute(
                    "DELETE FROM asset_fingerprints WHERE asset = ? AND scope = ?",
                    [table, scope],
                )
            else:
                fingerprints.record(con, table, fingerprint, scope=scope)
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


def rows_with_labels(db_path: Path, table: str, model_key: str, columns: list[str]) -> pd.DataFrame:
    """`columns` of `table`'s rows for `model_key`, with each image's path and current label
    (None when unlabeled), in image_id order."""
    if table not in TABLES:
        raise ValueError(f"{table!r} is not one of {TABLES}")
    select = ", ".join(f"t.{c}" for c in columns)
    with connect(db_path, read_only=True) as con:
        return con.execute(
            f"SELECT t.image_id, {select}, i.path, l.label FROM {table} t "
            "LEFT JOIN images i USING (image_id) LEFT JOIN current_labels l USING (image_id) "
            "WHERE t.model_key = ? ORDER BY t.image_id",
            [model_key],
        ).df()


def read_projections(
    db_path: Path, model_key: str, methods: list[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The stored maps of `model_key`: (image ids, {method: float32 (n, 2)}), image_id order."""
    with connect(db_path, read_only=True) as con:
        df = con.execute(
            "SELECT method, image_id, x, y FROM projections WHERE model_key = ? "
            "ORDER BY method, image_id",
            [model_key],
        ).df()
    by_method = {m: rows for m, rows in df.groupby("method", sort=False)}
    ids = by_method[methods[0]]["image_id"].to_numpy(dtype=np.int64)
    return ids, {m: by_method[m][["x", "y"]].to_numpy(dtype=np.float32) for m in methods}


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
    import pyarrow as pa

    ids = np.asarray(image_ids, dtype=np.int64)
    return pa.table({"image_id": ids, "pos": np.arange(len(ids), dtype=np.int64)})
