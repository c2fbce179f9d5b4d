"""One Parquet file per data folder with everything a map viewer shows per usable image: the
2-D coordinates, label, prediction, cluster, anomaly and curation flags, and the nearest
neighbours in the embedding. Embedding Atlas (`emb serve`'s /atlas) reads it in the browser
with DuckDB-WASM, so the page never opens the catalog; it is written to a temporary name and
renamed, so a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedding_assets.common import tables
from resources.duckdb_store import connect

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from embedding_assets.common.neighbor_graph import NeighborGraph

NEIGHBORS_K = 10
METHODS = ("umap", "tsne", "pca")  # the projections a map shows, the viewer's default first


def _columns(con: duckdb.DuckDBPyConnection) -> tuple[str, str]:
    """The SELECT list and the joins over whichever result tables this catalog has (a folder
    without labels has no predictions; curation may not have run)."""
    select = [
        "o.image_id",
        "o.path",
        "img.sha256",
        "'/thumb/' || o.image_id AS thumbnail",
        "o.label",
        "o.cluster::VARCHAR AS cluster",  # a category to filter by, not a number to bin
        "o.anomaly_score",
        "coalesce(o.anomaly_flag, false) AS anomaly",
        *(f"o.{m}_x::FLOAT AS {m}_x, o.{m}_y::FLOAT AS {m}_y" for m in METHODS),
    ]
    joins = [f"JOIN {tables.IMAGES} img ON img.image_id = o.image_id"]

    def optional(table: str, cols: list[str], join: str, missing: list[str]) -> None:
        if tables.exists(con, table):
            select.extend(cols)
            joins.append(join)
        else:
            select.extend(missing)

    key = "o.model_key"
    optional(
        tables.PREDICTIONS,
        ["p.predicted", "p.probability"],
        f"LEFT JOIN {tables.PREDICTIONS} p ON p.image_id = o.image_id",
        ["NULL::VARCHAR AS predicted", "NULL::DOUBLE AS probability"],
    )
    optional(
        tables.LABEL_ISSUES,
        ["li.image_id IS NOT NULL AS label_issue", "li.suggested_label"],
        f"LEFT JOIN {tables.LABEL_ISSUES} li ON li.image_id = o.image_id AND li.model_key = {key}",
        ["false AS label_issue", "NULL::VARCHAR AS suggested_label"],
    )
    optional(
        tables.IMAGE_QUALITY,
        ["coalesce(q.flags, []::VARCHAR[]) AS quality_flags"],
        f"LEFT JOIN {tables.IMAGE_QUALITY} q ON q.image_id = o.image_id",
        ["[]::VARCHAR[] AS quality_flags"],
    )
    optional(
        tables.UNIQUENESS,
        ["u.uniqueness"],
        f"LEFT JOIN {tables.UNIQUENESS} u ON u.image_id = o.image_id AND u.model_key = {key}",
        ["NULL::DOUBLE AS uniqueness"],
    )
    optional(
        tables.OUTLIERS,
        ["coalesce(ol.flagged, false) AS outlier"],
        f"LEFT JOIN {tables.OUTLIERS} ol ON ol.image_id = o.image_id AND ol.model_key = {key}",
        ["false AS outlier"],
    )
    optional(
        tables.NEAR_DUPLICATES,
        ["d.duplicate_group"],
        f"""LEFT JOIN (SELECT image_id, min(group_id) AS duplicate_group FROM (
                SELECT image_id_a AS image_id, group_id, model_key FROM {tables.NEAR_DUPLICATES}
                UNION ALL
                SELECT image_id_b, group_id, model_key FROM {tables.NEAR_DUPLICATES})
            WHERE model_key = {tables.CURRENT_MODEL_KEY} GROUP BY image_id) d
            ON d.image_id = o.image_id""",
        ["NULL::BIGINT AS duplicate_group"],
    )
    optional(
        tables.IMAGE_TAGS,
        ["t.tag"],
        f"""LEFT JOIN (SELECT image_id, any_value(split_part(tag, ',', 1)) AS tag
                       FROM {tables.IMAGE_TAGS} WHERE rank = 1 GROUP BY image_id) t
            ON t.image_id = o.image_id""",
        ["NULL::VARCHAR AS tag"],
    )
    return ", ".join(select), " ".join(joins)


def read_points(db: Path) -> tuple[str, pa.Table]:
    """(model key, one row per usable image with a map position), read in one short
    connection."""
    with connect(db, read_only=True) as con:
        key_row = con.execute(f"SELECT {tables.CURRENT_MODEL_KEY}").fetchone()
        if key_row is None or key_row[0] is None:
            raise LookupError("No embeddings yet: materialize `embeddings` and `projections`.")
        select, joins = _columns(con)
        where = " OR ".join(f"o.{m}_x IS NOT NULL" for m in METHODS)
        # `text`: what the viewer searches and names its density clusters by
        found = con.sql(
            "SELECT *, concat_ws(' ', coalesce(label, predicted), tag) AS text FROM ("
            f"SELECT {select} FROM {tables.IMAGE_OVERVIEW} o {joins} WHERE {where}) "
            "ORDER BY image_id"
        )
        # DuckDB 1.4 named it to_arrow_table; before, arrow() returned the table
        points = found.to_arrow_table() if hasattr(found, "to_arrow_table") else found.arrow()
    return key_row[0], points


def nearest_neighbors(graph: NeighborGraph, k: int = NEIGHBORS_K) -> tuple[np.ndarray, np.ndarray]:
    """(neighbour image ids (n, k), cosine distances (n, k)) of each row of `graph`, the image
    itself left out; k is at most the graph's, so every row is full."""
    sims, rows = graph.first(min(k, graph.neighbors.shape[1]))
    return graph.ids[rows], np.clip(1.0 - sims, 0.0, 2.0).astype(np.float32)


def with_neighbors(points: pa.Table, graph: NeighborGraph) -> pa.Table:
    """`points` plus a `neighbors` column {ids, distances} (Embedding Atlas's format) from the
    embedding set's neighbour graph (neighbours are images of the set)."""
    import pyarrow as pa

    from embedding_assets.common.ids import positions

    if len(graph.ids) < 2:
        return points
    by_id = np.argsort(graph.ids)
    order = positions(graph.ids[by_id], points.column("image_id").to_numpy(), by_id)
    if (order < 0).any():  # a point the set lacks: the graph is of other embeddings
        return points
    nn_ids, nn_dist = nearest_neighbors(graph)
    k = nn_ids.shape[1]
    column = pa.StructArray.from_arrays(
        [
            pa.FixedSizeListArray.from_arrays(pa.array(nn_ids[order].ravel()), k),
            pa.FixedSizeListArray.from_arrays(pa.array(nn_dist[order].ravel()), k),
        ],
        names=["ids", "distances"],
    )
    return points.append_column("neighbors", column)


def readable(path: Path) -> bool:
    """Whether `path` is a whole Parquet file (its footer reads), so a damaged export is
    written again rather than reused."""
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except (OSError, ValueError):  # missing, truncated, not Parquet (ArrowInvalid)
        return False
    return True


def write_map_export(db: Path, graph: NeighborGraph, out: Path) -> dict:
    """Write the map's Parquet file to `out` from the catalog and the embedding set's
    neighbour graph; returns counts for the asset's metadata."""
    import pyarrow.parquet as pq

    key, points = read_points(db)
    points = with_neighbors(points, graph)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    pq.write_table(points, partial, compression="zstd")
    os.replace(partial, out)
    return {
        "model_key": key,
        "points": points.num_rows,
        "columns": points.column_names,
        "neighbors": "neighbors" in points.column_names,
        "bytes": out.stat().st_size,
    }
