"""`embedding_model`: a metric-learning head (or fine-tuned backbone) trained on the labels,
promoted only when it beats the current embeddings on held-out images."""

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from embedding_assets import markdown
from embedding_assets.assets.embeddings import BackboneConfig
from embedding_assets.choices import Augmentation, Loss, Mode
from embedding_assets.fingerprints import REUSED, SKIPPED
from embedding_assets.progress import Progress
from resources.gpu import GPU_POOL, GPUResource
from resources.storage import StorageResource

if TYPE_CHECKING:
    from embedding_assets.metric_training import TrainConfig

GATE = "challenger_promoted"


class EmbeddingModelConfig(BackboneConfig):
    enabled: bool = Field(default=True, description="False: embeddings use the plain backbone.")
    mode: Mode = Field(
        default="head",
        description="head: train a projection head over cached backbone features (fast, CPU). "
        "finetune: train the whole backbone too (GPU or small images).",
    )
    loss: Loss = Field(
        default="supcon",
        description="The pytorch-metric-learning loss; ntxent is self-supervised (finetune mode "
        "with an augmentation, no labels needed).",
    )
    embedding_size: int = Field(default=64, description="Output dimension of the head.")
    hidden: int = Field(default=512, description="Hidden width of the head.")
    epochs: int = Field(default=40, description="Upper bound; training stops early on plateau.")
    patience: int = Field(default=6, description="Epochs without validation gain before stopping.")
    batch_size: int = Field(default=128, description="Images per training batch.")
    lr: float = Field(default=1e-3, description="AdamW learning rate (cosine schedule).")
    augmentation: Augmentation = Field(
        default="none", description="Image augmentation in finetune mode."
    )
    seed: int = Field(default=0, description="Same seed, labels and settings -> same model.")
    holdout: float = Field(
        default=0.2, description="Share of labeled images held out for evaluation (by hash)."
    )
    min_improvement: float = Field(
        default=0.0,
        description="Held-out kNN top-1 gain over the current model needed to promote.",
    )

    def train_config(self) -> "TrainConfig":
        from embedding_assets.metric_training import TrainConfig

        return TrainConfig(
            loss=self.loss,
            embedding_size=self.embedding_size,
            hidden=self.hidden,
            epochs=self.epochs,
            patience=self.patience,
            batch_size=self.batch_size,
            lr=self.lr,
            augmentation=self.augmentation,
            seed=self.seed,
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
    """Metric learning on the labeled images (pytorch-metric-learning losses): a projection
    head (or fine-tuned backbone) that pulls same-label images together.

    Evaluated on a held-out split fixed by content hash: kNN top-1, Precision@5 (GUIE),
    kNN macro-F1 and silhouette, against the current model on the same images; promotion needs
    a paired win beyond noise on at least 50 held-out images. Models are
    versioned in the DuckDB table `embedding_models`; `embeddings` (head='auto') uses the
    newest promoted one, and its model key changes with it.
    """
    if not config.enabled:
        return dg.MaterializeResult(
            metadata={"status": "disabled"},
            check_results=[dg.AssetCheckResult(check_name=GATE, passed=True)],
            data_version=dg.DataVersion("disabled"),
        )

    from embedding_assets.embedding_training import train_embedding_model

    epochs = Progress(context.log, "embedding_model", "epoch", "epoch {done}/{total}", 0)
    features = Progress(
        context.log, "embedding_model features", "img", "backbone features {done}/{total}"
    )

    def progress(row: dict) -> None:
        val = f", val kNN top-1 {row['val_knn_top1']:.3f}" if "val_knn_top1" in row else ""
        epochs.update(row["epoch"], row["epochs"], f"loss {row['loss']:.4f}{val}")

    with gpu.acquire(context.log) as device, epochs, features:
        out = train_embedding_model(
            storage.paths,
            config.backbone(),
            config.mode,
            config.train_config(),
            holdout=config.holdout,
            min_improvement=config.min_improvement,
            device=device.torch_device,
            progress=progress,
            feature_progress=features.update,
        )
    context.log.info(f"embedding_model {out.status}: {out.reason}")
    metadata = {
        **({REUSED: f"{SKIPPED}: {out.reason}"} if out.status == "unchanged" else {}),
        "status": out.status,
        "decision": out.reason,
        "model_id": out.model_id or 0,
        "embeddings_use": out.params.model_key() if out.params else "",
        "train_images": out.n_train,
        "held_out_images": out.n_eval,
        "epochs_run": len(out.history),
        "train_seconds": dg.MetadataValue.float(round(out.seconds, 2)),
    }
    for name, value in out.metrics.items():
        metadata[f"held_out_{name}"] = dg.MetadataValue.float(round(float(value), 4))
    for name, value in out.current_metrics.items():
        metadata[f"current_{name}"] = dg.MetadataValue.float(round(float(value), 4))
    if out.history:
        metadata["loss_by_epoch"] = dg.MetadataValue.md(_history_table(out.history))
    gate_metadata = {k: v for k, v in metadata.items() if k.startswith(("held_out_", "current_"))}
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name=GATE,
                passed=out.status != "trained" or out.promoted,
                severity=dg.AssetCheckSeverity.WARN,
                description=out.reason,
                metadata={"decision": out.reason, **gate_metadata},
            )
        ],
        data_version=dg.DataVersion(out.params.model_key() if out.params else "none"),
    )


def _history_table(history: list[dict]) -> str:
    has_val = "val_knn_top1" in history[0]
    header = ["epoch", "loss"] + (["val kNN top-1"] if has_val else [])
    rows = [
        [r["epoch"], f"{r['loss']:.4f}"] + ([f"{r['val_knn_top1']:.3f}"] if has_val else [])
        for r in history
    ]
    return markdown.table(header, rows)
