"""`embedding_model` → `embeddings`: a head (or fine-tuned backbone) trained on the labels and
promoted only when it beats the current embeddings on held-out images, then one vector per
usable image, cached in LMDB, handed on as Parquet. Thin wrappers over `embedding.training`,
`embedding.run` and what they report (`embedding.reports`)."""

import dagster as dg

from embedding_assets.assets.sharding import partitions_def, shard_for
from embedding_assets.common.progress import Progress
from embedding_assets.configs.embedding import EmbeddingConfig, EmbeddingModelConfig
from resources.gpu import GPU_POOL, GPUResource
from resources.storage import StorageResource

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
    """The backbone fine-tuned on the labeled images (default: a cosine-softmax classifier,
    BatchNorm frozen, within `time_budget_s`), or a projection head trained with a
    pytorch-metric-learning loss: embeddings in which same-label images sit together.

    Every labeled image judged once by a half-training that left it out (kNN top-1,
    Precision@5, macro-F1, silhouette) against the current model judged the same way;
    promoted on a paired win beyond noise (sign test, p < 0.05, at least 20 judged images).
    Versioned in the DuckDB table `embedding_models`;
    `embeddings` (head='auto') uses the newest promoted one.
    """
    if not config.enabled:
        return dg.MaterializeResult(
            metadata={"status": "disabled"},
            check_results=[dg.AssetCheckResult(check_name=GATE, passed=True)],
            data_version=dg.DataVersion("disabled"),
        )

    from embedding_assets.embedding.reports import epoch_note, model_report
    from embedding_assets.embedding.training import train_embedding_model

    settings = config.model_settings()
    epochs = Progress(context.log, "embedding_model", "epoch", "epoch {done}/{total}", 0)
    features = Progress(
        context.log, "embedding_model features", "img", "backbone features {done}/{total}"
    )
    with gpu.acquire(context.log) as device, epochs, features:
        out = train_embedding_model(
            storage.paths,
            settings,
            options=config.inference(device.torch_device),
            progress=lambda row: epochs.update(row["epoch"], row["epochs"], epoch_note(row)),
            feature_progress=features.update,
        )
    context.log.info(f"embedding_model {out.status}: {out.reason}")
    report = model_report(out, settings)
    loss = {"loss_by_epoch": dg.MetadataValue.md(report.loss_table)} if report.loss_table else {}
    gate = dg.AssetCheckResult(
        check_name=GATE,
        passed=report.gate_passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=report.decision,
        metadata=report.gate_metadata,
    )
    return dg.MaterializeResult(
        metadata={**report.metadata, **loss},
        check_results=[gate],
        data_version=dg.DataVersion(report.version),
    )


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
    from embedding_assets.embedding.reports import embed_report
    from embedding_assets.embedding.run import run_embeddings

    shard, db = shard_for(context), storage.paths.catalog_db
    params = config.params(storage.paths)
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
    report = embed_report(summary, db, shard, device.describe(), config.engine)
    for line in report.warnings:
        context.log.warning(line)
    return dg.MaterializeResult(
        metadata=report.metadata,
        check_results=[
            dg.AssetCheckResult(check_name=c.name, passed=c.passed, metadata=c.metadata)
            for c in report.checks
        ],
        data_version=dg.DataVersion(report.version),
    )
