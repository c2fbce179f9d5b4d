"""What `embedding_model` and `embeddings` report, as plain values: the asset hands them to
Dagster as they are (numbers, text, paths), only the markdown and the check results need its
types. Kept here so a training or an embedding run reads the same wherever it is shown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedding_assets.common import markdown
from embedding_assets.common.fingerprints import REUSED, SKIPPED
from embedding_assets.embedding import sets

if TYPE_CHECKING:
    from embedding_assets.catalog.shards import Shard
    from embedding_assets.embedding.run import EmbedSummary
    from embedding_assets.embedding.training import ModelSettings, Outcome

HISTORY_COLUMNS = [  # (history key, column, format) of the loss table, where trained
    ("loss", "loss", "{:.4f}"),
    ("train_accuracy", "train accuracy", "{:.3f}"),
    ("val_knn_top1", "val kNN top-1", "{:.3f}"),
    ("seconds", "seconds", "{:.1f}"),
]


def epoch_note(row: dict) -> str:
    """The progress line of one trained epoch."""
    val = f", val kNN top-1 {row['val_knn_top1']:.3f}" if "val_knn_top1" in row else ""
    return f"loss {row['loss']:.4f}{val}"


@dataclass(frozen=True)
class ModelReport:
    """What a materialization of `embedding_model` reports: metadata, the loss per epoch as a
    markdown table ("" when none was trained), whether the promotion gate passes (only a
    trained model left unpromoted warns) and the data version (the model key embeddings use)."""

    decision: str
    metadata: dict[str, Any]
    loss_table: str
    gate_passed: bool
    version: str

    @property
    def gate_metadata(self) -> dict[str, Any]:
        """The decision and the held-out figures of the new and the current model."""
        prefixes = ("held_out_", "current_")
        shown = {k: v for k, v in self.metadata.items() if k.startswith(prefixes)}
        return {"decision": self.decision, **shown}


def model_report(out: Outcome, settings: ModelSettings) -> ModelReport:
    """What a training (or the reason for none) reports: decision, sizes, held-out metrics of
    the new and the current model, and the loss per epoch."""
    from embedding_assets.embedding.training import ModelStatus

    trained = out.status == ModelStatus.TRAINED
    finetune = settings.mode == "finetune"
    metadata = {
        **({REUSED: f"{SKIPPED}: {out.reason}"} if out.status == ModelStatus.UNCHANGED else {}),
        "status": out.status.value,
        "decision": out.reason,
        "model_id": out.model_id or 0,
        "embeddings_use": out.params.model_key() if out.params else "",
        "train_images": out.n_train,
        "held_out_images": out.n_eval,
        "epochs_run": len(out.history),
        "train_seconds": float(round(out.seconds, 2)),
    }
    if finetune and trained:
        metadata["frozen_stride"] = out.frozen_stride  # 0: every layer trained
        metadata["train_image_size"] = out.train_size
    if finetune and settings.cfg.time_budget_s:
        metadata["time_budget_s"] = settings.cfg.time_budget_s
        metadata["stopped_by_time_budget"] = out.stopped_early
    for name, value in out.metrics.items():
        metadata[f"held_out_{name}"] = round(float(value), 4)
    for name, value in out.current_metrics.items():
        metadata[f"current_{name}"] = round(float(value), 4)
    return ModelReport(
        decision=out.reason,
        metadata=metadata,
        loss_table=history_table(out.history) if out.history else "",
        gate_passed=not trained or out.promoted,
        version=out.params.model_key() if out.params else "none",
    )


def history_table(history: list[dict]) -> str:
    """The epochs as a markdown table, with the columns the training recorded."""
    shown = [c for c in HISTORY_COLUMNS if c[0] in history[0]]
    rows = [[r["epoch"], *(fmt.format(r[key]) for key, _, fmt in shown)] for r in history]
    return markdown.table(["epoch", *(name for _, name, _ in shown)], rows)


@dataclass(frozen=True)
class Check:
    """One asset check's verdict on the vectors."""

    name: str
    passed: bool
    metadata: dict[str, Any]


@dataclass(frozen=True)
class EmbedReport:
    """What a run of `embeddings` reports: metadata, the verdicts of its checks, its data
    version ("empty": a shard without usable images) and the warnings for the run log."""

    metadata: dict[str, Any]
    checks: list[Check]
    version: str
    warnings: list[str]


def embed_report(
    summary: EmbedSummary, db: Path, shard: Shard | None, device: str, engine: str
) -> EmbedReport:
    """Where the vectors are, how many were embedded now and how fast, peak memory, and the
    checks of the hand-off against the usable images counted apart from the run."""
    from embedding_assets.catalog.images import usable_count

    usable = usable_count(db, shard)  # after the run's failures
    empty = not summary.parquet_path.exists()  # a shard without usable images
    if empty:
        st = sets.VectorStats(0, summary.dim, 0, np.nan, np.nan)
    else:
        st = sets.stats(summary.parquet_path)
    warnings = [
        *(f"{line}; resubmitted" for line in summary.retried),
        *summary.notes,
        *(f"{path}: {err}" for path, err in summary.failed),
    ]
    return EmbedReport(
        _embed_metadata(summary, device, engine),
        vector_checks(st, summary.dim, usable),
        "empty" if empty else summary.content,
        warnings,
    )


def _embed_metadata(summary: EmbedSummary, device: str, engine: str) -> dict[str, Any]:
    reused = summary.embedded == 0 and not summary.parquet_rewritten
    return {
        **({REUSED: "nothing new to embed: every vector from the cache"} if reused else {}),
        "model_key": summary.model_key,
        "device": device,
        "engine": engine,
        "runtime": summary.runtime or "none (nothing to embed)",
        "retried_batches": len(summary.retried),
        "dimension": summary.dim,
        "usable_images": summary.usable,
        "embedded_now": summary.embedded,
        "from_cache": summary.from_cache,
        "failed_to_decode": len(summary.failed),
        "embed_seconds": float(round(summary.embed_seconds, 2)),
        "images_per_second": float(round(summary.images_per_second, 1)),
        "total_seconds": float(round(summary.seconds, 2)),
        "peak_rss_mb": float(round(summary.peak_rss_mb, 1)),
        "peak_gpu_mb": float(round(summary.peak_gpu_mb or 0.0, 1)),
        "parquet": summary.parquet_path,  # a path to Dagster
        "parquet_rewritten": summary.parquet_rewritten,
    }


def vector_checks(st: sets.VectorStats, dim: int, usable: int) -> list[Check]:
    """Finite, of the backbone's size, unit norm, and one per usable image."""
    norms = st.rows > 0 and abs(st.min_norm - 1) < 1e-2 and abs(st.max_norm - 1) < 1e-2
    norm_ok = norms or st.rows == usable == 0  # an empty shard has no vector to be wrong
    return [
        Check("vectors_finite", st.nonfinite_rows == 0, {"nonfinite_rows": st.nonfinite_rows}),
        Check("dimension_as_expected", st.dim == dim, {"dimension": st.dim, "expected": dim}),
        Check("unit_norm", norm_ok, {"min_norm": st.min_norm, "max_norm": st.max_norm}),
        Check(
            "one_vector_per_usable_image",
            st.rows == usable,
            {"rows": st.rows, "usable_images": usable},
        ),
    ]
