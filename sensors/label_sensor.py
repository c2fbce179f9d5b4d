"""Retrain when labels land: watch the `labels` log and request one `retrain_classifier` run
per batch of new labels.

The cursor is the highest label_id already handed to a run; the run key names the label_id
range, so the same labels never trigger twice. The catalog is opened read-only with a short
lock timeout: while a materialization holds the DuckDB writer the tick is skipped (cursor
unchanged) and the next tick picks the labels up, so none is missed.
"""

from __future__ import annotations

import os

import dagster as dg

from resources.duckdb_store import CatalogLockedError, connect, is_lock_error
from resources.storage import StorageResource

RETRAIN_JOB = "retrain_classifier"
MIN_LABELS_ENV = "EMB_RETRAIN_MIN_LABELS"
LOCK_TIMEOUT_S = 2.0

retrain_job = dg.define_asset_job(
    RETRAIN_JOB,
    selection=dg.AssetSelection.assets("classifier", "predictions", "label_queue"),
    description="Retrain the classifier, predict every image and queue the next batch to label.",
)


def min_new_labels() -> int:
    """New labels needed before a retrain (`$EMB_RETRAIN_MIN_LABELS`, default 1)."""
    return max(1, int(os.environ.get(MIN_LABELS_ENV, "1")))


def new_labels(storage: StorageResource, cursor: int) -> tuple[int, int | None, int | None, bool]:
    """(count, first label_id, last label_id, embeddings exist) of labels after `cursor`."""
    with connect(storage.paths.catalog_db, read_only=True, timeout_s=LOCK_TIMEOUT_S) as con:
        tables = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() "
                "WHERE table_name IN ('labels', 'embedding_sets')"
            ).fetchall()
        }
        if "labels" not in tables:
            return 0, None, None, False
        n, lo, hi = con.execute(
            "SELECT count(*), min(label_id), max(label_id) FROM labels WHERE label_id > ?",
            [cursor],
        ).fetchone()
        has_embeddings = "embedding_sets" in tables and bool(
            con.execute("SELECT count(*) FROM embedding_sets").fetchone()[0]
        )
    return int(n), lo, hi, has_embeddings


@dg.sensor(
    job=retrain_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a retrain_classifier run when new rows land in the DuckDB labels log "
    f"(at least ${MIN_LABELS_ENV}, default 1).",
)
def label_sensor(
    context: dg.SensorEvaluationContext, storage: StorageResource
) -> dg.RunRequest | dg.SkipReason:
    cursor = int(context.cursor or 0)
    try:
        n, lo, hi, has_embeddings = new_labels(storage, cursor)
    except FileNotFoundError:
        return dg.SkipReason("No catalog yet: materialize image_catalog first.")
    except CatalogLockedError as exc:
        return dg.SkipReason(
            f"Catalog locked by a running materialization; retry next tick ({exc})"
        )
    except Exception as exc:  # a lock error raised after connecting (e.g. by a checkpoint)
        if not is_lock_error(exc):
            raise
        return dg.SkipReason(f"Catalog locked; retry next tick ({exc})")
    needed = min_new_labels()
    if n < needed:
        return dg.SkipReason(f"{n} new label(s) since label_id {cursor}; waiting for {needed}.")
    if not has_embeddings:
        return dg.SkipReason(f"{n} new label(s), but no embeddings yet: materialize embeddings.")
    context.update_cursor(str(hi))
    return dg.RunRequest(
        run_key=f"labels-{lo}-{hi}",
        tags={"emb/new_labels": str(n), "emb/label_ids": f"{lo}-{hi}"},
    )
