"""Retrain when labels land: watch the `labels` log and request one `retrain_classifier` run
per batch of new labels.

The cursor is the highest label_id already handed to a run; the run key names the label_id
range, so the same labels never trigger twice. The catalog is opened read-only with a short
lock timeout: while a materialization holds the DuckDB writer the tick is skipped (cursor
unchanged) and the next tick picks the labels up, so none is missed.

Labels a classifier version was already trained on (`model_versions.max_label_id`) do not
count, and no run is requested while another run that trains the classifier (a "Materialize
all" from the UI, say) is queued or in progress: that run already sees the labels.
"""

from __future__ import annotations

import os

import dagster as dg

from resources.duckdb_store import CatalogLockedError, connect, is_lock_error
from resources.storage import StorageResource

RETRAIN_JOB = "retrain_classifier"
CLASSIFIER = dg.AssetKey("classifier")
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
MIN_LABELS_ENV = "EMB_RETRAIN_MIN_LABELS"
LOCK_TIMEOUT_S = 2.0

retrain_job = dg.define_asset_job(
    RETRAIN_JOB,
    selection=dg.AssetSelection.assets("classifier", "predictions", "label_queue"),
    description="Retrain the classifier, predict every image and queue the next batch to label.",
)


def classifier_run_in_progress(instance: dg.DagsterInstance) -> str | None:
    """The id of a queued or running run whose plan includes the classifier step, if any."""
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=IN_PROGRESS), limit=100)
    for record in records:
        run = record.dagster_run
        if run.asset_selection is not None:
            if CLASSIFIER in run.asset_selection:
                return run.run_id
            continue
        if run.step_keys_to_execute is not None:
            if CLASSIFIER.path[-1] in run.step_keys_to_execute:
                return run.run_id
            continue
        plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        if any(step.key == CLASSIFIER.path[-1] for step in plan.steps):
            return run.run_id
    return None


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
                "WHERE table_name IN ('labels', 'embedding_sets', 'model_versions')"
            ).fetchall()
        }
        if "labels" not in tables:
            return 0, None, None, False
        if "model_versions" in tables:  # labels a classifier has already been trained on
            trained = con.execute("SELECT max(max_label_id) FROM model_versions").fetchone()[0]
            cursor = max(cursor, int(trained or 0))
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
    busy = classifier_run_in_progress(context.instance)
    if busy:
        return dg.SkipReason(f"Run {busy} trains the classifier already; waiting for it to end.")
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
