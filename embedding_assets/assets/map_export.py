"""`map_export`: the Parquet file behind `emb serve`'s /atlas page (Embedding Atlas), written
after the maps and the curation results it shows (analytics/map_export.py)."""

from pathlib import Path

import dagster as dg

from embedding_assets.assets.neighbors import read_graph
from embedding_assets.assets.reuse import Inputs, Report, materialize
from embedding_assets.common import tables
from embedding_assets.common.fingerprints import labels_version
from embedding_assets.common.settings import page_url
from embedding_assets.embedding.sets import EmbeddingSet, current_set
from resources.duckdb_store import connect
from resources.storage import StorageResource

SHOWN = [
    "neighbor_graph",
    "projections",
    "predictions",
    "label_issues",
    "image_quality",
    "near_duplicates",
    "uniqueness",
    "outliers",
    "image_tags",
]


def _inputs(db: Path, emb_set: EmbeddingSet) -> Inputs:
    """What the file is made of: the embedding set's content, every stored result's
    fingerprint, the labels and the champion's predictions."""
    with connect(db, read_only=True) as con:
        results = con.execute(
            f"SELECT asset, scope, fingerprint FROM {tables.ASSET_FINGERPRINTS} "
            "WHERE scope IN (?, '') AND asset <> 'map_export' ORDER BY 1, 2",
            [emb_set.model_key],
        ).fetchall()
        shown = (
            con.execute(
                f"SELECT max(version_id), count(*), max(predicted_at) FROM {tables.PREDICTIONS}"
            ).fetchall()
            if tables.exists(con, tables.PREDICTIONS)
            else []
        )
    content = emb_set.content_version()
    return Inputs("map_export", (content, results, shown, labels_version(db)))


@dg.asset(deps=SHOWN, group_name="analytics", kinds={"parquet"}, owners=["team:ml-platform"])
def map_export(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """One row per mapped image (coordinates of every projection, label, prediction and its
    probability, cluster, anomaly and curation flags, the 10 nearest neighbours) in
    `map_points.parquet`, which the /atlas page of `emb serve` loads into the browser. Written
    again only when one of the results it shows changed."""
    from embedding_assets.analytics.map_export import readable, write_map_export

    paths = storage.paths
    db = paths.catalog_db
    out = paths.map_points

    def compute() -> Report:
        written = write_map_export(db, read_graph(paths, emb_set), out)
        context.log.info(f"map_export: {written['points']} points in {out}")
        return Report(
            {
                **{k: v for k, v in written.items() if k != "columns"},
                "columns": ", ".join(written["columns"]),
                "path": dg.MetadataValue.path(str(out)),
                "atlas": dg.MetadataValue.url(page_url("atlas/")),
            }
        )

    emb_set = current_set(db)
    inputs = _inputs(db, emb_set)
    return materialize(context, db, inputs, compute, lambda _: Report() if readable(out) else None)
