"""`embedding_model` → `embeddings`: a head (or fine-tuned backbone) trained on the labels and
promoted only when it beats the current embeddings on held-out images, then one vector per
usable image, cached in LMDB, handed on as Parquet. Thin wrappers over `embedding.training` and
`embedding.run`."""

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
from pydantic import Field

from embedding_assets.assets.sharding import partitions_def, shard_for
from embedding_assets.common import markdown
from embedding_assets.common.choices import (
    Augmentation,
    EngineKind,
    Loss,
    Mode,
    Precision,
    Runtime,
    StoreDtype,
)
from embedding_assets.common.fingerprints import REUSED, SKIPPED
from embedding_assets.common.progress import Progress
from embedding_assets.embedding import sets
from embedding_assets.embedding.defaults import DEFAULT_MODEL, DEFAULT_WEIGHTS
from resources.gpu import GPU_POOL, GPUResource
from resources.storage import StorageResource

if TYPE_CHECKING:
    from embedding_assets.embedding.embedder import EmbedParams
    from embedding_assets.embedding.run import EmbedSummary, RunOptions
    from embedding_assets.embedding.train_config import TrainConfig
    from embedding_assets.embedding.training import ModelSettings, Outcome

GATE = "challenger_promoted"

CHECKS = {
    "vectors_finite": "Every vector is finite (no NaN or inf).",
    "dimension_as_expected": "The vectors have the backbone's feature size.",
    "unit_norm": "Vectors are L2-normalized (norm within 1e-2 of 1).",
    "one_vector_per_usable_image": "The hand-off holds exactly one row per usable image.",
}


class BackboneConfig(dg.Config):
    """The backbone settings `embeddings` and `embedding_model` share; a trained model is used
    (head='auto') only by embeddings of the backbone it was trained on."""

    model: str = Field(
        default=DEFAULT_MODEL,
        description="efficientnet_lite0 (default), efficientnet_lite1/2, any torchvision "
        "classification model (resnet50, convnext_tiny, vit_b_16, ...) or any timm model name "
        "(prefix timm/ to prefer timm where torchvision has the same name).",
    )
    weights: str = Field(
        default=DEFAULT_WEIGHTS,
        description="'DEFAULT' (the model's pretrained weights: from an installed package where "
        "one ships them, else downloaded), 'packaged', 'none' (seeded random init), a "
        "torchvision weights name (IMAGENET1K_V2), a timm pretrained tag (in1k) or a path to a "
        ".pth state dict.",
    )
    image_size: int = Field(
        default=0,
        description="Crop size in pixels; 0 = the weights' own size (224 without weights).",
    )
    runtime: Runtime = Field(
        default="auto",
        description="What runs the forward pass: 'auto' (ONNX Runtime on the CPU, torch on a "
        "GPU), 'torch' or 'onnxruntime' (CPU only). The vectors are the same either way "
        "(within 1e-4), so the cache serves both; training is always torch.",
    )
    threads: int = Field(
        default=0, ge=0, description="Threads of the forward pass on the CPU; 0 = automatic."
    )

    def inference(self, device: str) -> "RunOptions":
        """How the backbone's forward pass runs for these settings."""
        from embedding_assets.embedding.run import RunOptions

        return RunOptions(device=device, runtime=self.runtime, threads=self.threads)

    def backbone(self, store_dtype: StoreDtype = "float32") -> "EmbedParams":
        from embedding_assets.embedding.embedder import EmbedParams

        weights = None if self.weights == "none" else self.weights
        return EmbedParams(self.model, weights, self.image_size, store_dtype)


class EmbeddingConfig(BackboneConfig):
    batch_size: int = Field(default=64, ge=1, description="Images per forward pass.")
    workers: int = Field(
        default=-1, ge=-1, description="DataLoader decode workers; -1 = automatic."
    )
    precision: Precision = Field(
        default="auto",
        description="auto (bf16 where the GPU has it, else fp16) or a fixed one; autocast "
        "applies on CUDA only.",
    )
    store_dtype: StoreDtype = Field(
        default="float32", description="Vector type in the LMDB cache and the Parquet hand-off."
    )
    allow_download: bool = Field(
        default=True, description="Fetch missing pretrained weights into the torch cache."
    )
    head: str = Field(
        default="auto",
        description="'auto' (the newest promoted embedding_model for this backbone, if any), "
        "'none' (plain backbone), or a trained projection head file.",
    )
    engine: EngineKind = Field(
        default="local",
        description="Where the model runs: 'local' (this step's process) or 'ray' (one actor "
        "per GPU, or per CPU when the gpu resource picks the CPU, on the cluster at "
        "ray_address; needs the `ray` extra on every node).",
    )
    ray_address: str = Field(
        default="", description="Ray cluster address for engine 'ray'; empty = $RAY_ADDRESS."
    )

    def params(self, db: Path) -> "EmbedParams":
        from embedding_assets.embedding.training import trained_params

        base = self.backbone(self.store_dtype)
        if self.head == "auto":
            return trained_params(db, base)
        return replace(base, head=None if self.head == "none" else self.head)

    def run_options(self, device: str) -> "RunOptions":
        from embedding_assets.embedding.run_options import Engine

        return replace(
            self.inference(device),
            batch_size=self.batch_size,
            workers=None if self.workers < 0 else self.workers,
            precision=self.precision,
            allow_download=self.allow_download,
            engine=Engine(self.engine, self.ray_address),
        )


class EmbeddingModelConfig(BackboneConfig):
    enabled: bool = Field(default=True, description="False: embeddings use the plain backbone.")
    mode: Mode = Field(
        default="finetune",
        description="finetune (default): train the whole backbone on the labels; its pooled "
        "features become the embeddings (a few minutes on a CPU, see time_budget_s). head: "
        "train a projection head over cached backbone features (seconds).",
    )
    loss: Loss = Field(
        default="cosface",
        description="cosface (default, finetune mode): a cosine-softmax classifier over the "
        "trunk, which the classifier asset can use too; or a pytorch-metric-learning loss "
        "(supcon, contrastive, triplet, arcface; ntxent is self-supervised: finetune mode with "
        "an augmentation, no labels needed).",
    )
    embedding_size: int = Field(default=64, description="Output dimension of a projection head.")
    hidden: int = Field(default=512, description="Hidden width of a projection head.")
    epochs: int | None = Field(
        default=None, description="Upper bound; unset = the mode's (finetune 5, head 40)."
    )
    patience: int = Field(
        default=6, description="Epochs without validation gain before stopping (metric losses)."
    )
    batch_size: int | None = Field(
        default=None, ge=1, description="Images per training batch; unset = the mode's (32, 128)."
    )
    lr: float | None = Field(
        default=None,
        description="AdamW learning rate (cosine schedule); unset = the mode's (finetune 3e-4 "
        "for the backbone, 10x for the head; head 1e-3).",
    )
    train_image_size: int = Field(
        default=160,
        description="finetune: the size the trunk trains and embeds at (short side resized to "
        "it, no centre crop); 0 = the backbone's image_size.",
    )
    time_budget_s: float = Field(
        default=300.0,
        ge=0,
        description="finetune: training stops before an epoch that would end past this many "
        "seconds (measured on the first epoch; 0 = no budget).",
    )
    frozen_stride: int = Field(
        default=8,
        ge=0,
        description="finetune: the backbone's early stages, up to this output stride, stay as "
        "pretrained and run once per image (better with few labels and several times cheaper "
        "per epoch); 0 trains every layer. Known for timm EfficientNets and ResNets; other "
        "models train every layer.",
    )
    freeze_bn: bool = Field(
        default=True,
        description="finetune: keep the backbone's BatchNorm statistics (a few hundred labels "
        "cannot estimate better ones; updating them cost 13-15 points of accuracy).",
    )
    augmentation: Augmentation = Field(
        default="none",
        description="Image augmentation of the metric losses in finetune mode (cosface always "
        "uses small random-resized crops and flips).",
    )
    seed: int = Field(default=0, description="Same seed, labels and settings -> same model.")
    holdout: float = Field(
        default=0.2,
        description="Share of labeled images held out for evaluation (by content hash; the "
        "classifier holds out the same images).",
    )
    min_improvement: float = Field(
        default=0.0,
        description="Held-out kNN top-1 gain over the current model needed to promote.",
    )
    retrain_growth: float = Field(
        default=0.5,
        ge=0,
        description="Train again once the labels grew this share since the last training, or "
        "a class appeared; fewer new labels retrain the classifier only. 0: on every change.",
    )

    def train_config(self) -> "TrainConfig":
        from embedding_assets.embedding.train_config import TrainConfig

        finetune = self.mode == "finetune"
        return TrainConfig(
            loss=self.loss,
            embedding_size=self.embedding_size,
            hidden=self.hidden,
            epochs=(5 if finetune else 40) if self.epochs is None else self.epochs,
            patience=self.patience,
            batch_size=self.batch_size or (32 if finetune else 128),
            lr=self.lr or (3e-4 if finetune else 1e-3),
            weight_decay=0.01 if finetune else 1e-4,
            augmentation=self.augmentation,
            seed=self.seed,
            image_size=self.train_image_size if finetune else 0,
            freeze_bn=self.freeze_bn,
            frozen_stride=self.frozen_stride if finetune else 0,
            time_budget_s=self.time_budget_s if finetune else 0.0,
        )

    def model_settings(self) -> "ModelSettings":
        """What this config decides of a training (embedding.training)."""
        from embedding_assets.embedding.training import ModelSettings

        return ModelSettings(
            self.backbone(),
            self.mode,
            self.train_config(),
            self.holdout,
            self.min_improvement,
            self.retrain_growth,
        )


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
