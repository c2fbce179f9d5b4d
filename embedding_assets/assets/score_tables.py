"""The recipe every per-image result asset shares, written once: take the current embedding
set, fingerprint the inputs, reuse the stored rows when they were computed from the same ones,
else compute, write the rows (with the set's model key) in one transaction with their
fingerprint, and report. An asset says only what it computes (`Scores`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from embedding_assets.assets.reuse import reused, set_inputs
from embedding_assets.embedding.sets import EmbeddingSet
from resources.storage import StorageResource


@dataclass
class Scores:
    """What one computation produced: the table's columns (model_key is added), further result
    tables it replaces too (e.g. per-image scores beside per-batch verdicts), metadata, and one
    line for the run log."""

    rows: dict[str, Any]  # column -> NumPy array, list or pyarrow Array (for an explicit type)
    metadata: dict[str, Any] = field(default_factory=dict)
    log: str = ""
    more_tables: dict[str, dict[str, Any]] = field(default_factory=dict)


def score_table(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    table: str,
    config: dg.Config,
    compute: Callable[[EmbeddingSet], Scores],
    *,
    more: tuple = (),
    shown: Callable[[EmbeddingSet], dict[str, Any]] | None = None,
) -> dg.MaterializeResult:
    """Materialize `table` for the current embedding set. `more`: further inputs of the
    fingerprint (e.g. the labels version); `shown`: metadata read back from the stored rows
    (e.g. the top rows with their paths), reported whether the rows were reused or computed."""
    import pyarrow as pa

    from embedding_assets.common.results import replace_rows

    db = storage.paths.catalog_db
    emb_set, fp, unchanged = set_inputs(db, table, config, *more)
    key = emb_set.model_key

    def show() -> dict[str, Any]:
        return {"model_key": key, **(shown(emb_set) if shown else {})}

    if unchanged:
        return reused(context, fp, show())
    started = time.perf_counter()
    scores = compute(emb_set)
    computed = time.perf_counter() - started

    def with_key(columns: dict[str, Any]) -> pa.Table:
        rows = pa.table(columns)
        return rows.append_column("model_key", pa.array([key] * rows.num_rows, pa.string()))

    replace_rows(db, table, key, with_key(scores.rows), fp)
    for other, columns in scores.more_tables.items():
        replace_rows(db, other, key, with_key(columns))
    if scores.log:
        context.log.info(scores.log)
    return dg.MaterializeResult(
        metadata={
            **show(),
            **scores.metadata,
            "seconds": dg.MetadataValue.float(round(computed, 3)),
            "write_seconds": dg.MetadataValue.float(
                round(time.perf_counter() - started - computed, 3)
            ),
        },
        data_version=dg.DataVersion(fp),
    )
