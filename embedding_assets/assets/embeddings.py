"""`embeddings`: one vector per usable image, cached in LMDB, handed on as Parquet."""

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
from pydantic import Field

from embedding_assets import vectors
from embedding_assets.assets.sharding import partitions_def, shard_for
from embedding_assets.choices import EngineKind, Precision, StoreDtype
from embedding_assets.fingerprints import REUSED
from embedding_assets.model_defaults import DEFAULT_MODEL, DEFAULT_WEIGHTS
from embedding_assets.progress import Progress
from resources.gpu import GPU_POOL, GPUResource
from resources.storage import StorageResource

if TYPE_CHECKING:
    from embedding_assets.embedder import EmbedParams

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

    def backbone(self, store_dtype: StoreDtype = "float32") -> "EmbedParams":
        from embedding_assets.embedder import EmbedParams

        weights = None if self.weights == "none" else self.weights
        return EmbedParams(self.model, weights, self.image_size, store_dtype)


class EmbeddingConfig(BackboneConfig):
    batch_size: int = Field(default=64, description="Images per forward pass.")
    workers: int = Field(default=-1, description="DataLoader decode workers; -1 = automatic.")
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
        from embedding_assets.embedding_training import trained_params

        base = self.backbone(self.store_dtype)
        if self.head == "auto":
            return trained_params(db, base)
        return replace(base, head=None if self.head == "none" else self.head)


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
    from embedding_assets.embedding_run import Engine, run_embeddings, usable_count

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
            shard=shard,
            device=device.torch_device,
            batch_size=config.batch_size,
            workers=None if config.workers < 0 else config.workers,
            precision=config.precision,
            allow_download=config.allow_download,
            progress=progress.update,
            engine=Engine(config.engine, config.ray_address),
        )
    for line in summary.retried:
        context.log.warning(f"{line}; resubmitted")
    for path, err in summary.failed:
        context.log.warning(f"{path}: {err}")
    usable = usable_count(storage.paths.catalog_db, shard)  # after the run's failures
    empty = not summary.parquet_path.exists()  # a shard without usable images
    if empty:
        st = vectors.VectorStats(0, summary.dim, 0, np.nan, np.nan)
    else:
        st = vectors.stats(summary.parquet_path)
    reused = summary.embedded == 0 and not summary.parquet_rewritten
    return dg.MaterializeResult(
        metadata={
            **({REUSED: "nothing new to embed: every vector from the cache"} if reused else {}),
            "model_key": summary.model_key,
            "device": device.describe(),
            "engine": config.engine,
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
        },
        check_results=_checks(st, summary.dim, usable),
        data_version=dg.DataVersion(
            "empty" if empty else vectors.content_version(summary.parquet_path, summary.model_key)
        ),
    )


def _checks(st: vectors.VectorStats, dim: int, usable: int) -> list[dg.AssetCheckResult]:
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
