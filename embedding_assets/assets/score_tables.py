"""The recipe every per-image result asset shares, written once over `reuse.materialize`: the
current embedding set's content, the config and any further inputs decide the rows; they are
reused when those did not change, else computed and written (with the set's model key) in one
transaction. An asset says only what it computes (`Scores`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from embedding_assets.assets.reuse import Inputs, Report, dagster_metadata, materialize
from embedding_assets.common.results import Scores
from embedding_assets.embedding.sets import EmbeddingSet, current_set
from resources.storage import StorageResource


def set_inputs(asset: str, emb_set: EmbeddingSet, config: dg.Config, *more: object) -> Inputs:
    """The inputs of a result kept per embedding set: its content, the config and `more`."""
    content = emb_set.content_version()
    parts = (content, config.model_dump(mode="json"), *more)
    return Inputs(asset, parts, scope=emb_set.model_key)


@dataclass(frozen=True)
class Scorer:
    """What a score-table asset does: compute its rows for an embedding set, and (`shown`)
    read metadata back from the stored rows (e.g. the top rows with their paths), reported
    whether the rows were reused or computed."""

    compute: Callable[[EmbeddingSet], Scores]
    shown: Callable[[EmbeddingSet], dict[str, Any]] | None = None
    # False: the rows depend on a part of the set that `more` names (e.g. only the labeled
    # images), so new unlabeled images do not compute them again
    whole_set: bool = True


def score_table(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    table: str,
    config: dg.Config,
    scorer: Scorer,
    more: tuple = (),
) -> dg.MaterializeResult:
    """Materialize `table` for the current embedding set. `more`: further inputs of the
    fingerprint besides the set's content and the config (e.g. the labels version)."""
    compute, shown = scorer.compute, scorer.shown
    import pyarrow as pa

    from embedding_assets.common.results import replace_rows

    db = storage.paths.catalog_db
    emb_set = current_set(db)
    key = emb_set.model_key

    def show() -> dict[str, Any]:
        return {"model_key": key, **dagster_metadata(shown(emb_set) if shown else {})}

    def with_key(columns: dict[str, Any]) -> pa.Table:
        rows = pa.table(columns)
        return rows.append_column("model_key", pa.array([key] * rows.num_rows, pa.string()))

    def run() -> Report:
        started = time.perf_counter()
        scores = compute(emb_set)
        computed = time.perf_counter() - started
        replace_rows(db, table, key, with_key(scores.rows))
        for other, columns in scores.more_tables.items():
            replace_rows(db, other, key, with_key(columns))
        if scores.after_write:
            scores.after_write()
        if scores.log:
            context.log.info(scores.log)
        written = round(time.perf_counter() - started - computed, 3)
        return Report(
            {
                **show(),
                **dagster_metadata(scores.metadata),
                "write_seconds": dg.MetadataValue.float(written),
            }
        )

    if scorer.whole_set:
        inputs = set_inputs(table, emb_set, config, *more)
    else:
        inputs = Inputs(table, (config.model_dump(mode="json"), *more), scope=key)
    return materialize(context, db, inputs, run, kept=lambda _: Report(show()))
