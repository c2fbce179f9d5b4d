"""Run configuration of `embedding_model` and `embeddings` (and of every asset that runs the
plain backbone, e.g. `image_tags`): the backbone, how it runs, and how the fine-tune trains."""

from dataclasses import replace
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from embedding_assets.common.choices import (
    Augmentation,
    EngineKind,
    Loss,
    Mode,
    Precision,
    Runtime,
    StoreDtype,
)
from embedding_assets.embedding.defaults import DEFAULT_MODEL, DEFAULT_WEIGHTS

if TYPE_CHECKING:
    from embedding_assets.embedding.embedder import EmbedParams
    from embedding_assets.embedding.run import RunOptions
    from embedding_assets.embedding.train_config import TrainConfig
    from embedding_assets.embedding.training import ModelSettings
    from resources.paths import DataPaths


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

    def params(self, paths: "DataPaths") -> "EmbedParams":
        from embedding_assets.embedding.training import trained_params

        base = self.backbone(self.store_dtype)
        if self.head == "auto":
            return trained_params(paths, base)
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
        default=120.0,
        ge=0,
        description="finetune: training stops before an epoch that would end past this many "
        "seconds (measured on the first epoch; 0 = no budget). A few hundred labels train "
        "their epochs in seconds; at 10,000 labels an epoch takes ~50 s on 2 CPU cores.",
    )
    min_steps: int = Field(
        default=100,
        ge=0,
        description="finetune (cosface): every training, the half-trainings the gate judges "
        "and the served one, runs at least this many batches: more epochs than `epochs` where "
        "labels are few (320 labels: 10 epochs, each half of them 20; at most 4x `epochs`). "
        "0 = `epochs` only.",
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
        gt=0,
        le=0.5,
        description="Share of the labeled images (by content hash) that one training leaves "
        "out and is judged on, once 1,000 or more fall in it (~5,000 labels at 0.2); with "
        "fewer, every labeled image is judged by the half-training that left it out. A "
        "champion trained that way is judged on those images only.",
    )
    min_improvement: float = Field(
        default=0.0,
        description="kNN top-1 gain over the current model (every labeled image judged once) "
        "needed to promote.",
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
            min_steps=self.min_steps if finetune else 0,
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
