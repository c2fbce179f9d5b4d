"""Notice new rows of the DuckDB `labels` log and report them as materializations of the external
`labels` asset; the eager automation conditions of classifier → predictions → label_queue turn
each report into one retrain run, launched by `active_learning_automation`.

The cursor is the highest label_id already reported. The catalog is opened read-only with a short
lock timeout: while a materialization holds the DuckDB writer the tick is skipped (cursor
unchanged) and the next tick picks the labels up, so none is missed.

Labels a classifier version was already trained on (`model_versions.max_label_id`) are not
reported: the run that trained on them (a "Materialize all" that scanned folder labels, say) was
their retrain, and a report would start a second one.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import dagster as dg

from embedding_assets.assets.learning import classifier, label_queue, labels, predictions
from embedding_assets.assets.reuse import DATA_VERSION_TAG
from embedding_assets.common import tables
from resources.duckdb_store import CatalogLockedError, connect, is_lock_error
from resources.storage import StorageResource

MIN_LABELS_ENV = "EMB_RETRAIN_MIN_LABELS"
LOCK_TIMEOUT_S = 2.0


def min_new_labels() -> int:
    """New labels needed before a retrain (`$EMB_RETRAIN_MIN_LABELS`, default 1)."""
    return max(1, int(os.environ.get(MIN_LABELS_ENV, "1")))


class NewLabels(NamedTuple):
    """What a tick finds in the labels log."""

    count: int
    first: int | None
    last: int | None
    after: int  # the cursor, or the last label_id a classifier was trained on if higher
    has_embeddings: bool


def new_labels(storage: StorageResource, cursor: int) -> NewLabels:
    """The labels after `cursor` that no classifier version was trained on yet."""
    with connect(storage.paths.catalog_db, read_only=True, timeout_s=LOCK_TIMEOUT_S) as con:
        if not tables.exists(con, tables.LABELS):
            return NewLabels(0, None, None, cursor, False)
        if tables.exists(con, tables.MODEL_VERSIONS):  # labels a classifier was trained on
            trained = con.execute(
                f"SELECT max(max_label_id) FROM {tables.MODEL_VERSIONS}"
            ).fetchone()[0]
            cursor = max(cursor, int(trained or 0))
        n, lo, hi = con.execute(
            f"SELECT count(*), min(label_id), max(label_id) FROM {tables.LABELS} "
            "WHERE label_id > ?",
            [cursor],
        ).fetchone()
        has_embeddings = tables.exists(con, tables.EMBEDDING_SETS) and bool(
            con.execute(f"SELECT count(*) FROM {tables.EMBEDDING_SETS}").fetchone()[0]
        )
    return NewLabels(int(n), lo, hi, cursor, has_embeddings)


def labels_materialization(n: int, lo: int, hi: int) -> dg.AssetMaterialization:
    """One batch of label rows as a materialization of `labels`. The highest label_id is its
    data version, which each classifier materialization records as the labels it saw."""
    return dg.AssetMaterialization(
        asset_key=labels.key,
        description=f"{n} new label(s): label_id {lo}-{hi}",
        metadata={"first_label_id": lo, "last_label_id": hi, "count": n},
        tags={DATA_VERSION_TAG: str(hi)},
    )


@dg.sensor(
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reports new rows of the DuckDB labels log as materializations of `labels` "
    f"(once at least ${MIN_LABELS_ENV}, default 1, are new); `active_learning_automation` "
    "then retrains the classifier.",
)
def label_sensor(
    context: dg.SensorEvaluationContext, storage: StorageResource
) -> dg.SensorResult | dg.SkipReason:
    cursor = int(context.cursor or 0)
    try:
        new = new_labels(storage, cursor)
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
    if new.count < needed:
        return dg.SkipReason(
            f"{new.count} new label(s) after label_id {new.after}; waiting for {needed}."
        )
    if not new.has_embeddings:
        return dg.SkipReason(
            f"{new.count} new label(s), but no embeddings yet: materialize embeddings."
        )
    return dg.SensorResult(
        asset_events=[labels_materialization(new.count, new.first, new.last)],
        cursor=str(new.last),
        # a tick that requests no run shows as skipped in the UI: say what it did instead
        skip_reason=f"Reported label_id {new.first}-{new.last} ({new.count}) as a "
        "materialization of labels; active_learning_automation launches the retrain.",
    )


active_learning_automation = dg.AutomationConditionSensorDefinition(
    "active_learning_automation",
    target=[classifier, predictions, label_queue],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=10,
    description="Launches classifier → predictions → label_queue when their eager automation "
    "conditions say so: after new labels (reported by label_sensor) or new embeddings, never "
    "while a run that includes them is queued or in progress.",
)
