"""`similarity_index` → `published_index`, `near_duplicates`, and `image_tags`: FAISS over the
embeddings, and the words text search finds images by.

Thin wrappers over `search.builds` (one build per run: reuse, update in place or build; tune,
measure, register) and `search.versions` (versioned files, publication). The blocking check
`similarity_index_recall` only checks: it re-measures recall@5 of the index `similarity_index`
materialized against exact search on a fresh query sample. `published_index`, downstream, makes
that version the one search uses, so a failed check stops publication in the same run and
search keeps the previous version. Each asset fingerprints its inputs and reuses its stored
result when they did not change.
"""

from contextlib import contextmanager
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
from pydantic import Field

from embedding_assets.assets.reuse import Inputs, Report, materialize, previous_metadata
from embedding_assets.assets.score_tables import Scorer, Scores, score_table
from embedding_assets.common import markdown, tables
from embedding_assets.common.fingerprints import (
    REUSED,
    SKIPPED,
    Stored,
    fingerprint,
    labels_version,
)
from embedding_assets.common.settings import page_url
from embedding_assets.configs.embedding import BackboneConfig
from embedding_assets.embedding.sets import (
    EmbeddingSet,
    current_set,
    load_current,
    read_parquet,
)
from resources.gpu import GPU_POOL, GPUResource
from resources.storage import StorageResource

if TYPE_CHECKING:
    from embedding_assets.search.builds import BuildReport, BuildSettings, KnnReport
    from embedding_assets.search.tags import Tagged
    from embedding_assets.search.versions import IndexRecord

GROUP = "search"
OWNERS = ["team:ml-platform"]
MIN_RECALL_AT_5 = 0.95
RECALL_CHECK = "similarity_index_recall"
KNN_FIELDS = ("knn_k", "knn_max_queries")  # the kNN evaluation, not the index
INDEX_REUSED = (
    "index reused (embeddings and settings unchanged); kNN accuracy measured again for the "
    "current labels"
)
TAG_GRAPH = "neighbours-10-pca64"  # image_tags' neighbour graph: a change re-tags


class SimilarityIndexConfig(dg.Config):
    index_factory: str = Field(
        default="",
        description="A FAISS index_factory string (e.g. 'HNSW32,Flat', 'IVF4096,Flat', "
        "'IVF4096,PQ16x8') to override the automatic choice by collection size and memory.",
    )
    memory_budget_gb: float = Field(
        default=4.0, description="Memory the index may take; beyond it the codes are compressed."
    )
    exact_max: int = Field(
        default=20_000,
        description="Up to this many vectors (and 4M floats, n x dimension) the index is exact "
        "(Flat).",
    )
    train_sample: int = Field(default=100_000, description="Vectors sampled to train IVF/PQ.")
    target_recall: float = Field(
        default=0.97,
        description="Tuning stops at the smallest nprobe/efSearch reaching this recall@5 "
        "(a margin over the check's 0.95, which uses another query sample).",
    )
    nprobe: int = Field(default=0, description="Fixed IVF nprobe instead of tuning (0 = tune).")
    ef_search: int = Field(
        default=0, description="Fixed HNSW efSearch instead of tuning (0 = tune)."
    )
    max_nprobe: int = Field(default=1024, description="Largest nprobe tuning may choose.")
    max_ef_search: int = Field(default=1024, description="Largest efSearch tuning may choose.")
    recall_queries: int = Field(default=500, description="Query sample for recall and latency.")
    rebuild_fraction: float = Field(
        default=0.2,
        ge=0,
        description="New, changed and removed images are added to / removed from the current "
        "index in place while they are at most this share of it; beyond it (or when the "
        "collection outgrows the index type, or the settings change) the index is rebuilt.",
    )
    knn_k: int = Field(default=5, description="Neighbours voting in the kNN classification.")
    knn_max_queries: int = Field(
        default=20_000, description="Labeled images evaluated leave-one-out (a random sample)."
    )

    def build_settings(self) -> "BuildSettings":
        from embedding_assets.search.builds import BuildSettings

        return BuildSettings(**self.model_dump(exclude=set(KNN_FIELDS)))


class NearDuplicatesConfig(dg.Config):
    threshold: float = Field(
        default=0.98,
        description="Pairs at cosine similarity >= this are near-duplicates; judged on "
        "mean-centred features (of the plain backbone when embeddings use a trained head).",
    )
    k: int = Field(default=10, description="Neighbours examined per image.")
    memory_budget_gb: float = Field(
        default=4.0, description="Memory the index over those features may take."
    )
    max_phash_bits: int = Field(
        default=2,
        ge=0,
        le=3,
        description="Images whose 64-bit pHash differs in at most this many bits (and whose "
        "dHash in at most max_dhash_bits) are near-duplicates: copies resized or recompressed.",
    )
    max_dhash_bits: int = Field(default=3, ge=0, le=64, description="See max_phash_bits.")


@dg.asset(
    deps=["embeddings"],
    group_name=GROUP,
    kinds={"faiss", "duckdb"},
    owners=OWNERS,
    pool=GPU_POOL,
    tags={"stage": "search"},
)
def similarity_index(
    context: dg.AssetExecutionContext,
    config: SimilarityIndexConfig,
    storage: StorageResource,
    gpu: GPUResource,
) -> dg.MaterializeResult:
    """A FAISS index of the current embeddings with image ids inside, for `emb similar`, the
    HTTP search and kNN classification. The type follows collection size and memory (Flat,
    HNSW, IVF-Flat, IVF-PQ) unless `index_factory` is set; nprobe/efSearch are tuned until
    recall@5 against exact search reaches the target. Each build is a versioned file under
    `indexes/<model_key>/`, unpublished until `published_index`; an unchanged set and config
    reuse the build; a few new, changed or removed images update the previous build in place
    (rebuilt when they pass `rebuild_fraction` or the collection outgrows the index type). Each
    build writes its search snapshot (ids, vectors, paths, labels) so that serving never opens
    DuckDB. Also reports leave-one-out kNN accuracy on the labeled images.
    """

    from embedding_assets.search import snapshot, versions

    paths = storage.paths
    db = paths.catalog_db
    emb_set = current_set(db)
    key = emb_set.model_key
    settings = config.model_dump(mode="json")
    built_from = {k: v for k, v in settings.items() if k not in KNN_FIELDS}
    content = emb_set.content_version()
    inputs = Inputs(versions.ASSET, (content, built_from), scope=key, versioned=True)
    # the kNN accuracy in the metadata also depends on the labels
    version = fingerprint(inputs.fingerprint, labels_version(db), [settings[k] for k in KNN_FIELDS])
    record = versions.current_build(db, key) if inputs.unchanged(db) else None
    if record is not None and not record.path.is_file():
        record = None

    def kept(_: Stored) -> Report | None:
        whole = record and snapshot.exists(record.path) and previous_metadata(context, version)
        return Report(version=version) if whole else None

    def compute() -> Report:
        metadata, built = _index_and_knn(context, config, storage, gpu, record)
        return Report(metadata, version, result=built.version)

    return materialize(context, db, inputs, compute, kept)


def _index_and_knn(
    context: dg.AssetExecutionContext,
    config: SimilarityIndexConfig,
    storage: StorageResource,
    gpu: GPUResource,
    record: "IndexRecord | None",
) -> tuple[dict, "IndexRecord"]:
    """Reuse `record` (the current build, when the embeddings and settings are the same) or
    build an index, then measure kNN accuracy on the current labels: (metadata, the build)."""
    import faiss

    from embedding_assets.catalog.labels import current_labels
    from embedding_assets.search import builds, snapshot
    from embedding_assets.search.faiss_index import KnnSettings

    paths = storage.paths
    emb_set = current_set(paths.catalog_db)
    ids, vectors = read_parquet(emb_set.parquet_path)
    if record is not None:
        if not snapshot.exists(record.path):  # built before search snapshots existed
            builds.write_snapshot(paths.catalog_db, record, ids, vectors, config.build_settings())
        index, built = faiss.read_index(str(record.path)), record
        metadata = {REUSED: INDEX_REUSED, **_record_metadata(record)}
    else:

        @contextmanager
        def faiss_gpu():
            with gpu.acquire(context.log) as choice:
                yield choice.faiss_gpu_id

        run = builds.BuildRun(faiss_gpu, context.log.info)
        key = emb_set.model_key
        index, report = builds.build(paths, key, ids, vectors, config.build_settings(), run)
        built, metadata = report.record, _build_metadata(report)
    labels = current_labels(paths.catalog_db, ids)
    knn_settings = KnnSettings(config.knn_k, config.knn_max_queries)
    knn = builds.knn_report(index, built.search_params, vectors, ids, labels, knn_settings)
    return {**metadata, **_knn_metadata(knn)}, built


def _record_metadata(record: "IndexRecord") -> dict:
    return {
        "model_key": record.model_key,
        "version": record.version,
        "index_type": record.index_type,
        "search_params": dg.MetadataValue.json(record.search_params),
        "vectors": record.vectors,
        "dim": record.dim,
        "recall_at_5": dg.MetadataValue.float(round(record.recall_at_5, 4)),
        "index_path": dg.MetadataValue.path(str(record.path)),
    }


def _build_metadata(report: "BuildReport") -> dict:
    n = report.record.vectors
    return {
        **_record_metadata(report.record),
        "build": report.how,
        "bytes": report.nbytes,
        "bytes_per_vector": dg.MetadataValue.float(round(report.nbytes / n, 1)),
        "build_seconds": dg.MetadataValue.float(round(report.build_seconds, 3)),
        "train_seconds": dg.MetadataValue.float(round(report.train_seconds, 3)),
        "device": report.device,
        "recall_queries": report.recall_queries,
        "query_p50_ms": dg.MetadataValue.float(round(report.latency.p50_ms, 4)),
        "query_p99_ms": dg.MetadataValue.float(round(report.latency.p99_ms, 4)),
        "batched_ms_per_query": dg.MetadataValue.float(
            round(report.latency.batched_ms_per_query, 4)
        ),
    }


def _knn_metadata(report: "KnnReport") -> dict:
    knn = report.accuracy
    return {
        "knn_top1_accuracy_loo": dg.MetadataValue.float(
            round(knn.accuracy, 4) if knn.accuracy is not None else float("nan")
        ),
        "knn_evaluated": knn.evaluated,
        "knn_k": knn.k,
        "knn_accuracy_per_label": dg.MetadataValue.json(
            {k: round(v, 4) for k, v in knn.per_label.items()}
        ),
        "knn_seconds": dg.MetadataValue.float(round(report.seconds, 3)),
    }


@dg.asset_check(
    asset=similarity_index,
    name=RECALL_CHECK,
    blocking=True,
    description=f"recall@5 >= {MIN_RECALL_AT_5} against exact search on a fresh query sample "
    "(as many queries as the index was tuned with, `recall_queries`); a failure stops "
    "`published_index`, so search keeps the previous version.",
)
def similarity_index_recall(storage: StorageResource) -> dg.AssetCheckResult:
    from embedding_assets.search import builds, versions

    db = storage.paths.catalog_db
    emb_set, ids, vectors = load_current(db)
    record = versions.current_build(db, emb_set.model_key)
    if record is None:
        return dg.AssetCheckResult(
            passed=False, description=f"No index was built for {emb_set.model_key}."
        )
    checked = builds.check_recall(record, ids, vectors)
    passed = checked.recall >= MIN_RECALL_AT_5
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "recall_at_5": dg.MetadataValue.float(round(checked.recall, 4)),
            "threshold": MIN_RECALL_AT_5,
            "queries": checked.queries,
            "version": record.version,
            "index_type": record.index_type,
            "search_params": dg.MetadataValue.json(record.search_params),
        },
        description=None
        if passed
        else f"recall@5 {checked.recall:.3f} < {MIN_RECALL_AT_5}: version {record.version} is "
        f"not published (search keeps the previous one). To fix, {builds.recall_hint(record)}.",
    )


@dg.asset(
    deps=[similarity_index],
    group_name=GROUP,
    kinds={"duckdb"},
    owners=OWNERS,
    tags={"stage": "search"},
)
def published_index(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    """The index version that search uses (`emb similar`, `emb serve`, `Searcher`): the build
    of `similarity_index` whose recall check passed. A failed check stops this asset in the
    same run, so search keeps the previous version."""
    from embedding_assets.search import versions

    db = storage.paths.catalog_db
    key = current_set(db).model_key
    record = versions.current_build(db, key)
    if record is None:
        raise dg.Failure(f"No similarity index for {key}: materialize `similarity_index` first.")
    live = versions.latest_index(db, key, published_only=True)
    base = {"model_key": key, "version": record.version, "index_type": record.index_type}

    def kept(_: Stored) -> Report | None:
        if live is None or live.version != record.version:
            return None
        note = f"{SKIPPED}: version {record.version} is already the one search uses"
        return Report(base, record.version, note=note)

    def compute() -> Report:
        recall = _checked_recall(context, record)
        versions.publish(db, key, record.version, recall)
        context.log.info(f"Search now uses index {record.version} of {key}")
        return Report(
            {
                **base,
                "check_recall_at_5": dg.MetadataValue.float(round(recall, 4)),
                "replaces": live.version if live else "none",
                "search_in_browser": dg.MetadataValue.url(page_url("search/page")),
                "index_path": dg.MetadataValue.path(str(record.path)),
            },
            record.version,
        )

    inputs = Inputs("published_index", (record.version,), scope=key, versioned=True)
    return materialize(context, db, inputs, compute, kept)


def _checked_recall(context: dg.AssetExecutionContext, record: "IndexRecord") -> float:
    """The recall the check measured on this version; a Failure unless it passed (e.g. when
    `published_index` is materialized alone after a failed or missing check)."""
    check = dg.AssetCheckKey(similarity_index.key, RECALL_CHECK)
    entry = context.instance.get_latest_asset_check_evaluation_record(check)
    evaluation = entry.event.asset_check_evaluation if entry and entry.event else None
    checked = evaluation.metadata.get("version") if evaluation else None
    if evaluation is None or checked is None or checked.value != record.version:
        raise dg.Failure(
            f"Index {record.version} has no recall check yet: materialize `similarity_index` "
            f"with its check {RECALL_CHECK} (emb run does both)."
        )
    if not evaluation.passed:
        raise dg.Failure(f"Index {record.version} failed {RECALL_CHECK}: {evaluation.description}")
    return float(evaluation.metadata["recall_at_5"].value)


@dg.asset(
    deps=["embeddings"],
    group_name=GROUP,
    kinds={"faiss", "duckdb"},
    owners=OWNERS,
    tags={"stage": "search"},
)
def near_duplicates(
    context: dg.AssetExecutionContext, config: NearDuplicatesConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Pairs of near-duplicate images in the DuckDB table `near_duplicates`, each with its
    reason (`same_bytes`; `same_hash`: perceptual hashes within a few bits, which survive
    resizing and recompression; `embedding`: cosine >= `threshold`) and its group (connected
    pairs; the group id is its smallest image id). Features are judged mean-centred, of the
    plain backbone when the embeddings use a trained head: a metric-learning head pulls a
    whole class together, which says nothing about duplicated content."""

    def compute(emb_set: EmbeddingSet) -> Scores:
        from embedding_assets.curation import duplicates

        settings = duplicates.DuplicateSettings(
            config.threshold,
            config.k,
            config.memory_budget_gb,
            config.max_phash_bits,
            config.max_dhash_bits,
        )
        found = duplicates.find_near_duplicates(storage.paths, emb_set, settings)
        return Scores(
            rows={
                "image_id_a": found.a,
                "image_id_b": found.b,
                "similarity": found.similarity.astype(np.float32),
                "group_id": found.group,
                "reason": found.reason,
                "hash_distance": found.hash_distance,
            },
            metadata={
                "images": emb_set.count,
                "threshold": config.threshold,
                "judged_on": found.judged_on,
                "pairs_by_reason": dg.MetadataValue.md(
                    markdown.table(
                        ["reason", "pairs"],
                        [
                            [r, found.reason.count(r)]
                            for r in duplicates.REASONS
                            if r in found.reason
                        ],
                    )
                ),
            },
            log=f"{len(found.a)} near-duplicate pairs in {len(set(found.group.tolist()))} groups",
        )

    return score_table(
        context,
        storage,
        tables.NEAR_DUPLICATES,
        config,
        Scorer(compute, lambda emb_set: _duplicate_counts(storage, emb_set.model_key)),
    )


def _duplicate_counts(storage: StorageResource, model_key: str) -> dict[str, int]:
    with storage.connect(read_only=True) as con:
        pairs, groups = con.execute(
            f"SELECT count(*), count(DISTINCT group_id) FROM {tables.NEAR_DUPLICATES} "
            "WHERE model_key = ?",
            [model_key],
        ).fetchall()[0]
    return {"pairs": pairs, "groups": groups}


class ImageTagsConfig(BackboneConfig):
    """The tagging backbone: the same settings as `embeddings`' (emb run --model sets both), so
    the plain features the embeddings computed serve the tags with no second backbone pass."""

    top_k: int = Field(
        default=20,
        ge=1,
        le=50,
        description="Classes kept per image (20: mAP by class name 0.612 on CIFAR-10's 10,000 "
        "test photos against 0.606 at 5 and 0.614 at 50, 0.582 on 200-photo draws against "
        "0.570 at 5, for 4x the rows of 5; benchmarks/text_search.py).",
    )
    allow_download: bool = Field(
        default=True, description="Fetch missing pretrained weights into the torch cache."
    )


@dg.asset(
    deps=["embeddings"],
    group_name=GROUP,
    kinds={"pytorch", "duckdb"},
    owners=OWNERS,
    pool=GPU_POOL,
    tags={"stage": "search"},
)
def image_tags(
    context: dg.AssetExecutionContext,
    config: ImageTagsConfig,
    storage: StorageResource,
    gpu: GPUResource,
) -> dg.MaterializeResult:
    """Every usable image's top ImageNet classes with their probabilities, from the backbone's
    own class head over its cached features (table `image_tags`; with WordNet's terms for each
    class and the synsets above it in the view `image_tags_expanded`), and a copy for serving
    text search (`emb search --text`, `/search?text=`). A backbone without an ImageNet-1k head
    (random weights, another label set) is skipped with the reason; a trained head or a
    fine-tune changes the embeddings, not the tags."""
    from embedding_assets.catalog.scan import usable_version

    db = storage.paths.catalog_db
    key = config.backbone().model_key()

    def compute() -> Report:
        from embedding_assets.search import tags

        tagged = _tag(context, config, storage, gpu)
        if isinstance(tagged, str):
            context.log.warning(f"image_tags skipped for {key}: {tagged}")
            metadata = {"status": "skipped", "reason": tagged, "model_key": key}
            return Report(metadata, f"skipped:{key}", keep=False)
        images = len(tagged.image_ids)
        context.log.info(f"tagged {images} images with their top {config.top_k} classes")
        mean_top1 = round(float(tagged.probs[:, 0].mean()), 4) if images else 0.0
        common = markdown.table(["images (top 1)", "class"], tags.most_common(tagged))
        return Report(
            {
                "model_key": key,
                "images": images,
                "top_k": config.top_k,
                "neighbours": tags.NEIGHBOURS,
                "mean_top1_probability": dg.MetadataValue.float(mean_top1),
                "most_common_tags": dg.MetadataValue.md(common),
                "search": 'emb search --text "cat"   ·   emb sql "select path, score from '
                "image_tags_expanded where term = 'cat' order by score desc\"",
            }
        )

    parts = (key, usable_version(db), config.model_dump(mode="json"), TAG_GRAPH)
    inputs = Inputs(tables.IMAGE_TAGS, parts, scope=key)

    def kept(_: Stored) -> Report | None:
        from embedding_assets.search import tags

        return Report({"model_key": key}) if tags.readable(storage.paths, key) else None

    return materialize(context, db, inputs, compute, kept)


def _tag(
    context: dg.AssetExecutionContext,
    config: ImageTagsConfig,
    storage: StorageResource,
    gpu: GPUResource,
) -> "Tagged | str":
    """Tag every usable image and write the tags (DuckDB and the served copy); why not, for a
    backbone without an ImageNet-1k head."""
    from embedding_assets.catalog.images import usable_files
    from embedding_assets.embedding.backbones import imagenet_head
    from embedding_assets.embedding.run import cached_features_and_norms
    from embedding_assets.search import tags

    params = config.backbone()
    head = imagenet_head(params.spec(), config.allow_download)
    if isinstance(head, str):
        return head
    usable = usable_files(storage.paths.catalog_db)
    with gpu.acquire(context.log) as device:
        X, norms, keep = cached_features_and_norms(
            storage.paths,
            params,
            usable.fs_paths,
            usable.hashes,
            config.inference(device.torch_device),
        )
    tagged = tags.Tagged.of(usable.ids[keep], X, norms, head, config.top_k)
    tags.write_tags(storage.paths, params.model_key(), tagged, usable.subset(keep).paths)
    return tagged


class ClipEmbeddingsConfig(dg.Config):
    text_model: str = Field(
        default="",
        description="An open_clip model for text search at CLIP quality, as ARCH:PRETRAINED "
        "(ViT-B-32:laion2b_s34b_b79k, or ViT-B-32:/path/to/checkpoint.bin; ARCH may be a "
        "model-config JSON file). Empty: off, text search uses `image_tags`. Needs the [clip] "
        "extra.",
    )


@dg.asset(
    deps=["image_catalog"],
    group_name=GROUP,
    kinds={"pytorch", "faiss"},
    owners=OWNERS,
    pool=GPU_POOL,
    tags={"stage": "search"},
)
def clip_embeddings(
    context: dg.AssetExecutionContext, config: ClipEmbeddingsConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Every usable image through the image tower of `text_model` (cached in the LMDB by its own
    model key), and a FAISS index that text queries search through the text tower (`emb search
    --text`, `/search?text=` use it instead of the tags when it exists). Off unless
    `text_model` is set; without its weights this asset fails in one line and nothing else."""
    from embedding_assets.search import clip

    if not config.text_model:  # text search goes back to the tags; the cached vectors stay
        clip.stop_pointing(storage.paths)
        return dg.MaterializeResult(
            metadata={"status": "disabled", "reason": "text_model is not set"},
            data_version=dg.DataVersion("disabled"),
        )
    from embedding_assets.catalog.scan import usable_version

    paths = storage.paths
    try:
        spec = clip.ClipSpec.parse(config.text_model)
    except (clip.ClipUnavailable, OSError) as exc:
        raise dg.Failure(str(exc)) from None
    key = spec.model_key

    def compute() -> Report:
        try:
            built = clip.build_index(paths, spec, config.text_model)
        except clip.ClipUnavailable as exc:
            raise dg.Failure(str(exc)) from None
        context.log.info(f"CLIP index of {built.images} images ({key})")
        metadata = {"model_key": key, "images": built.images, "dimension": built.dimension}
        return Report({**metadata, "search": 'emb search --text "a red truck"'})

    def kept(_: Stored) -> Report | None:
        if not clip.index_dir(paths, key).is_dir():
            return None
        clip.point_at(paths, key, config.text_model)
        return Report({"model_key": key})

    inputs = Inputs("clip_embeddings", (key, usable_version(paths.catalog_db)), scope=key)
    return materialize(context, paths.catalog_db, inputs, compute, kept)
