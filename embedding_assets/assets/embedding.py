"""`embedding_model` → `embeddings`: a head (or fine-tuned backbone) trained on the labels and
promoted only when it beats the current embeddings on held-out images, then one vector per
usable image, cached in LMDB, handed on as Parquet. Thin wrappers over `embedding.training` and
`embedding.run`."""

from typing import TYPE_CHECKING

import dagster as dg
import numpy as np

from embedding_assets.assets.sharding import partitions_def, shard_for
from embedding_assets.common import markdown
from embedding_assets.common.fingerprints import REUSED, SKIPPED
from embedding_assets.common.progress import Progress
from embedding_assets.configs.embedding import EmbeddingConfig, EmbeddingModelConfig
from embedding_assets.embedding import sets
from resources.gpu import GPU_POOL, GPUResource
from resources.storage import StorageResource

if TYPE_CHECKING:
    from embedding_assets.embedding.run import EmbedSummary
    from embedding_assets.embedding.training import Outcome

GATE = "challenger_promoted"

CHECKS = {
    "vectors_finite": "Every vector is finite (no NaN or inf).",
    "dimension_as_expected": "The vectors have the backbone's feature size.",
    "unit_norm": "Vectors are L2-normalized (norm within 1e-2 of 1).",
    "one_vector_per_usable_image": "The hand-off holds exactly one row per usable image.",
}


@dg.asset(
    deps=["image_catalog"],
    pool=GPU_POOL,
    group_name="embeddings",
    kinds={"pytorch"},
    owners=["team:ml-platform"],
    check_specs=[
        dg.AssetCheckSpec(
            GATE,
            asset="embedding_model",
            blocking=False,
            description="A newly trained model is promoted only when it beats the current "
            "embeddings on held-out images by more than noise; when it does not, this warns and "
            "the run goes on with the current model.",
        )
    ],
)
def embedding_model(
    context: dg.AssetExecutionContext,
    config: EmbeddingModelConfig,
    storage: StorageResource,
    gpu: GPUResource,
) -> dg.MaterializeResult:
    """The backbone fine-tuned on the labeled images (default: as a cosine-softmax classifier,
    BatchNorm statistics frozen, within `time_budget_s`), or a projection head trained with a
    pytorch-metric-learning loss: embeddings in which same-label images sit together.

    Evaluated on a held-out split fixed by content hash: kNN top-1, Precision@5 (GUIE),
    kNN macro-F1 and silhouette, against the current model on the same images; promotion needs
    a paired win beyond noise (exact sign test, p < 0.05) on at least 20 held-out images. Models
    are versioned in the DuckDB table `embedding_models`; `embeddings` (head='auto') uses the
    newest promoted one, and its model key changes with it.
    """
    if not config.enabled:
        return dg.MaterializeResult(
            metadata={"status": "disabled"},
            check_results=[dg.AssetCheckResult(check_name=GATE, passed=True)],
            data_version=dg.DataVersion("disabled"),
        )

    from embedding_assets.embedding.training import ModelStatus, train_embedding_model

    epochs = Progress(context.log, "embedding_model", "epoch", "epoch {done}/{total}", 0)
    features = Progress(
        context.log, "embedding_model features", "img", "backbone features {done}/{total}"
    )
    with gpu.acquire(context.log) as device, epochs, features:
        out = train_embedding_model(
            storage.paths,
            config.model_settings(),
            options=config.inference(device.torch_device),
            progress=lambda row: _epoch_done(epochs, row),
            feature_progress=features.update,
        )
    context.log.info(f"embedding_model {out.status}: {out.reason}")
    metadata = _model_metadata(out, config)
    gate_metadata = {k: v for k, v in metadata.items() if k.startswith(("held_out_", "current_"))}
    gate = dg.AssetCheckResult(
        check_name=GATE,
        passed=out.status != ModelStatus.TRAINED or out.promoted,
        severity=dg.AssetCheckSeverity.WARN,
        description=out.reason,
        metadata={"decision": out.reason, **gate_metadata},
    )
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[gate],
        data_version=dg.DataVersion(out.params.model_key() if out.params else "none"),
    )


def _epoch_done(epochs: Progress, row: dict) -> None:
    val = f", val kNN top-1 {row['val_knn_top1']:.3f}" if "val_knn_top1" in row else ""
    epochs.update(row["epoch"], row["epochs"], f"loss {row['loss']:.4f}{val}")


def _model_metadata(out: "Outcome", config: EmbeddingModelConfig) -> dict:
    """What a training (or the reason for none) reports: decision, sizes, held-out metrics of
    the new and the current model, and the loss per epoch."""
    from embedding_assets.embedding.training import ModelStatus

    metadata = {
        **({REUSED: f"{SKIPPED}: {out.reason}"} if out.status == ModelStatus.UNCHANGED else {}),
        "status": out.status.value,
        "decision": out.reason,
        "model_id": out.model_id or 0,
        "embeddings_use": out.params.model_key() if out.params else "",
        "train_images": out.n_train,
        "held_out_images": out.n_eval,
        "epochs_run": len(out.history),
        "train_seconds": dg.MetadataValue.float(round(out.seconds, 2)),
    }
    if config.mode == "finetune" and out.status == ModelStatus.TRAINED:
        metadata["frozen_stride"] = out.frozen_stride  # 0: every layer trained
    if config.mode == "finetune" and config.time_budget_s:
        metadata["time_budget_s"] = config.time_budget_s
        metadata["stopped_by_time_budget"] = out.stopped_early
    for name, value in out.metrics.items():
        metadata[f"held_out_{name}"] = dg.MetadataValue.float(round(float(value), 4))
    for name, value in out.current_metrics.items():
        metadata[f"current_{name}"] = dg.MetadataValue.float(round(float(value), 4))
    if out.history:
        metadata["loss_by_epoch"] = dg.MetadataValue.md(_history_table(out.history))
    return metadata


def _history_table(history: list[dict]) -> str:
    columns = [
        ("loss", "loss", "{:.4f}"),
        ("train_accuracy", "train accuracy", "{:.3f}"),
        ("val_knn_top1", "val kNN top-1", "{:.3f}"),
        ("seconds", "seconds", "{:.1f}"),
    ]
    shown = [c for c in columns if c[0] in history[0]]
    rows = [[r["epoch"], *(fmt.format(r[key]) for key, _, fmt in shown)] for r in history]
    return markdown.table(["epoch", *(name for _, name, _ in shown)], rows)


@dg.asset(
    deps=["image_catalog", "embedding_model"],
    partitions_def=partitions_def(),
    pool=GPU_POOL,
    group_name="embeddings",
    kinds={"pytorch", "parquet"},
    owners=["team:ml-platform"],
    check_specs=[
        dg.AssetCheckSpec(name, asset="embeddings", description=d, blocking=True)
        for name, d in CHECKS.items()
    ],
)
def embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingConfig,
    storage: StorageResource,
    gpu: GPUResource,
) -> dg.MaterializeResult:
    """L2-normalized feature vectors of every usable image from a torchvision backbone.

    Only images whose content hash has no vector for this model key are run through the model
    (LMDB cache, one transaction per batch, so a killed run resumes). The vectors go to
    `parquet/embeddings/<model_key>.parquet` (partitioned: one file per shard in
    `<model_key>.shards-N/`), registered in the DuckDB table `embedding_sets`.
    """
    from embedding_assets.catalog.images import usable_count
    from embedding_assets.embedding.run import run_embeddings

    shard = shard_for(context)
    params = config.params(storage.paths.catalog_db)
    context.log.info(
        f"trained head {params.head}" if params.head else "plain backbone (no trained head)"
    )
    progress = Progress(context.log, "embeddings", "img", "embedded {done}/{total} images")
    with gpu.acquire(context.log) as device, progress:
        summary = run_embeddings(
            storage.paths,
            params,
            config.run_options(device.torch_device),
            shard=shard,
            progress=progress.update,
        )
    for line in summary.retried:
        context.log.warning(f"{line}; resubmitted")
    for line in summary.notes:
        context.log.warning(line)
    for path, err in summary.failed:
        context.log.warning(f"{path}: {err}")
    usable = usable_count(storage.paths.catalog_db, shard)  # after the run's failures
    empty = not summary.parquet_path.exists()  # a shard without usable images
    if empty:
        st = sets.VectorStats(0, summary.dim, 0, np.nan, np.nan)
    else:
        st = sets.stats(summary.parquet_path)
    return dg.MaterializeResult(
        metadata=_embed_metadata(summary, device.describe(), config.engine),
        check_results=_checks(st, summary.dim, usable),
        data_version=dg.DataVersion("empty" if empty else summary.content),
    )


def _embed_metadata(summary: "EmbedSummary", device: str, engine: str) -> dict:
    """What a run of `embeddings` reports: where the vectors are, how many were embedded now
    and how fast, and peak memory."""
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
        "embed_seconds": dg.MetadataValue.float(round(summary.embed_seconds, 2)),
        "images_per_second": dg.MetadataValue.float(round(summary.images_per_second, 1)),
        "total_seconds": dg.MetadataValue.float(round(summary.seconds, 2)),
        "peak_rss_mb": dg.MetadataValue.float(round(summary.peak_rss_mb, 1)),
        "peak_gpu_mb": dg.MetadataValue.float(round(summary.peak_gpu_mb or 0.0, 1)),
        "parquet": dg.MetadataValue.path(str(summary.parquet_path)),
        "parquet_rewritten": summary.parquet_rewritten,
    }


def _checks(st: sets.VectorStats, dim: int, usable: int) -> list[dg.AssetCheckResult]:
    norms = st.rows > 0 and abs(st.min_norm - 1) < 1e-2 and abs(st.max_norm - 1) < 1e-2
    norm_ok = norms or st.rows == usable == 0  # an empty shard has no vector to be wrong
    return [
        dg.AssetCheckResult(
            check_name="vectors_finite",
            passed=st.nonfinite_rows == 0,
            metadata={"nonfinite_rows": st.nonfinite_rows},
        ),
        dg.AssetCheckResult(
            check_name="dimension_as_expected",
            passed=st.dim == dim,
            metadata={"dimension": st.dim, "expected": dim},
        ),
        dg.AssetCheckResult(
            check_name="unit_norm",
            passed=norm_ok,
            metadata={"min_norm": st.min_norm, "max_norm": st.max_norm},
        ),
        dg.AssetCheckResult(
            check_name="one_vector_per_usable_image",
            passed=st.rows == usable,
            metadata={"rows": st.rows, "usable_images": usable},
        ),
    ]
