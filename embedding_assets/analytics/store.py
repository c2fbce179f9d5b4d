"""DuckDB reads and writes of the analytics results (projections, clusters, anomaly scores),
kept per embedding set (model key) and written through `common.results.replace_rows`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedding_assets.common import tables
from embedding_assets.common.results import check_table, replace_rows
from resources.duckdb_store import connect

if TYPE_CHECKING:
    import pandas as pd


def read_column(
    db_path: Path, table: str, column: str, model_key: str, image_ids: np.ndarray
) -> np.ndarray | None:
    """`column` of `table` for `model_key`, aligned to `image_ids` (NaN where missing);
    None when the table has no rows for that model key yet."""
    check_table(table)
    import pyarrow as pa

    ids = np.asarray(image_ids, dtype=np.int64)
    wanted = pa.table({"image_id": ids, "pos": np.arange(len(ids), dtype=np.int64)})
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
    check_table(table)
    select = ", ".join(f"t.{c}" for c in columns)
    with connect(db_path, read_only=True) as con:
        return con.execute(
            f"SELECT t.image_id, {select}, i.path, l.label FROM {table} t "
            f"LEFT JOIN {tables.IMAGES} i USING (image_id) "
            f"LEFT JOIN {tables.CURRENT_LABELS} l USING (image_id) "
            "WHERE t.model_key = ? ORDER BY t.image_id",
            [model_key],
        ).df()


def stored_column(
    db_path: Path, table: str, model_key: str, column: str
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The stored `column` of `table` for `model_key`: (image ids, {column: values}), image_id
    order (what `placing.place_new` keeps for the images it does not place)."""
    rows = rows_with_labels(db_path, table, model_key, [column])
    return rows["image_id"].to_numpy(np.int64), {column: rows[column].to_numpy()}


def label_classes(db_path: Path) -> int:
    """How many classes the current labels of usable images name."""
    with connect(db_path, read_only=True) as con:
        return con.execute(
            f"SELECT count(DISTINCT l.label) FROM {tables.CURRENT_LABELS} l "
            f"JOIN {tables.USABLE_IMAGES} USING (image_id)"
        ).fetchone()[0]


def read_projections(
    db_path: Path, model_key: str, methods: list[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The stored maps of `model_key`: (image ids, {method: float32 (n, 2)}), image_id order."""
    with connect(db_path, read_only=True) as con:
        df = con.execute(
            f"SELECT method, image_id, x, y FROM {tables.PROJECTIONS} WHERE model_key = ? "
            "ORDER BY method, image_id",
            [model_key],
        ).df()
    by_method = {m: rows for m, rows in df.groupby("method", sort=False)}
    ids = by_method[methods[0]]["image_id"].to_numpy(dtype=np.int64)
    return ids, {m: by_method[m][["x", "y"]].to_numpy(dtype=np.float32) for m in methods}


def write_projections(
    db_path: Path, model_key: str, ids: np.ndarray, maps: dict[str, np.ndarray]
) -> None:
    """Replace the maps of `model_key`: a row per image and method, in `ids` order."""
    import pyarrow as pa

    n = len(ids)
    rows = pa.table(
        {
            "image_id": pa.array(np.tile(ids, len(maps)), pa.int64()),
            "model_key": pa.array([model_key] * (n * len(maps)), pa.string()),
            "method": pa.array(np.repeat(list(maps), n), pa.string()),
            "x": pa.array(np.concatenate([c[:, 0] for c in maps.values()]), pa.float32()),
            "y": pa.array(np.concatenate([c[:, 1] for c in maps.values()]), pa.float32()),
        }
    )
    replace_rows(db_path, tables.PROJECTIONS, model_key, rows)


def row_counts(db_path: Path, table: str, model_key: str) -> dict[str, int]:
    """For the asset checks: rows, distinct images and NULL/NaN values of `table` for a key."""
    value = {tables.CLUSTERS: "cluster", tables.ANOMALY_SCORES: "score"}[table]
    with connect(db_path, read_only=True) as con:
        rows, images, bad = con.execute(
            f"SELECT count(*), count(DISTINCT image_id), "
            f"count(*) FILTER ({value} IS NULL OR isnan({value}::DOUBLE)) "
            f"FROM {table} WHERE model_key = ?",
            [model_key],
        ).fetchone()
    return {"rows": rows, "images": images, "bad_values": bad}


def projections_complete(db_path: Path, model_key: str, images: int) -> dict[str, bool]:
    """For the asset check: per stored method, whether it has one finite (x, y) for each of
    `images` distinct images."""
    with connect(db_path, read_only=True) as con:
        return dict(
            con.execute(
                "SELECT method, count(DISTINCT image_id) FILTER (NOT isnan(x) AND NOT isnan(y)) "
                f"= count(*) AND count(*) = ? FROM {tables.PROJECTIONS} WHERE model_key = ? "
                "GROUP BY 1",
                [images, model_key],
            ).fetchall()
        )
