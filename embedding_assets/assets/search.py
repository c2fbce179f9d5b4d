"""`similarity_index` → `published_index`, `near_duplicates`, `image_tags`, `clip_embeddings`:
FAISS over the embeddings, and what text search finds images by (the work: `search.indexing`,
`search.tagging`, `search.clip`, `curation.duplicate_table`). The blocking check only checks:
a failure stops `published_index` in the same run, so search keeps the previous version."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import dagster as dg

from embedding_assets.assets.reuse import Inputs, Report, materialize, previous_metadata
from embedding_assets.assets.score_tables import Scorer, score_table
from embedding_assets.common import tables
from embedding_assets.common.fingerprints import REUSED, SKIPPED, fingerprint, labels_version
from embedding_assets.common.results import Scores
from embedding_assets.common.settings import page_url
from embedding_assets.configs.search import (
    ClipEmbeddingsConfig,
    ImageTagsConfig,
    NearDuplicatesConfig,
    SimilarityIndexConfig,
)
from embedding_assets.embedding.sets import EmbeddingSet, current_set
from resources.gpu import GPU_POOL, GPUResource
from resources.storage import StorageResource

SEARCH = {"group_name": "search", "owners": ["team:ml-platform"], "tags": {"stage": "search"}}
MIN_RECALL_AT_5 = 0.95
RECALL_CHECK = "similarity_index_recall"


@contextmanager
def _held(context: dg.AssetExecutionContext, gpu: GPUResource, use: Callable) -> Iterator:
    """`use(device)` while the pool's device is held: a domain function enters this only for
    the part that needs the device."""
    with gpu.acquire(context.log) as device:
        yield use(device)


@dg.asset(deps=["embeddings"], kinds={"faiss", "duckdb"}, pool=GPU_POOL, **SEARCH)
def similarity_index(
    context: dg.AssetExecutionContext,
    config: SimilarityIndexConfig,
    storage: StorageResource,
    gpu: GPUResource,
) -> dg.MaterializeResult:
    """A FAISS index of the current embeddings, its type by collection size and memory, tuned
    to the target recall@5: a versioned file with its search snapshot, unpublished until
    `published_index`. An unchanged set and config reuse the build; a few changed images update
    it in place. Also reports leave-one-out kNN accuracy on the labeled images."""
    from embedding_assets.search import builds, indexing, snapshot, versions

    db = storage.paths.catalog_db
    emb_set = current_set(db)
    parts = (emb_set.content_version(), config.built_from())
    inputs = Inputs(versions.ASSET, parts, scope=emb_set.model_key, versioned=True)
    # the kNN accuracy in the metadata also depends on the labels
    version = fingerprint(inputs.fingerprint, labels_version(db), config.knn_part())
    record = indexing.reusable_build(db, emb_set.model_key) if inputs.unchanged(db) else None

    def kept(_) -> Report | None:
        whole = record and snapshot.exists(record.path) and previous_metadata(context, version)
        return Report(version=version) if whole else None

    def compute() -> Report:
        run = builds.BuildRun(
            partial(_held, context, gpu, lambda d: d.faiss_gpu_id), context.log.info
        )
        settings, knn = config.build_settings(), config.knn_settings()
        result = indexing.index_and_knn(storage.paths, record, settings, knn, run)
        reused = {REUSED: indexing.REUSED_NOTE} if result.build is None else {}
        return Report({**reused, **result.summary()}, version, result=result.record.version)

    return materialize(context, db, inputs, compute, kept)


@dg.asset_check(
    asset=similarity_index,
    name=RECALL_CHECK,
    blocking=True,
    description=f"recall@5 >= {MIN_RECALL_AT_5} against exact search on a fresh query sample "
    "(as many queries as the index was tuned with, `recall_queries`); a failure stops "
    "`published_index`, so search keeps the previous version.",
)
def similarity_index_recall(storage: StorageResource) -> dg.AssetCheckResult:
    from embedding_assets.search import indexing

    verdict = indexing.judge_recall(storage.paths.catalog_db, MIN_RECALL_AT_5)
    return dg.AssetCheckResult(
        passed=verdict.passed, metadata=verdict.figures, description=verdict.failure
    )


@dg.asset(deps=[similarity_index], kinds={"duckdb"}, **SEARCH)
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

    def kept(_) -> Report | None:
        if live is None or live.version != record.version:
            return None
        note = f"{SKIPPED}: version {record.version} is already the one search uses"
        return Report(base, record.version, note=note)

    def compute() -> Report:
        recall = _checked_recall(context, record.version)
        versions.publish(storage.paths, key, record.version, recall)
        context.log.info(f"Search now uses index {record.version} of {key}")
        replaces = live.version if live else "none"
        shown = {"check_recall_at_5": round(recall, 4), "replaces": replaces}
        browse = dg.MetadataValue.url(page_url("search/page"))
        metadata = {**base, **shown, "search_in_browser": browse, "index_path": record.path}
        return Report(metadata, record.version)

    inputs = Inputs("published_index", (record.version,), scope=key, versioned=True)
    return materialize(context, db, inputs, compute, kept)


def _checked_recall(context: dg.AssetExecutionContext, version: str) -> float:
    """The recall the check measured on this version; a Failure unless it passed (e.g. when
    `published_index` is materialized alone after a failed or missing check)."""
    check = dg.AssetCheckKey(similarity_index.key, RECALL_CHECK)
    entry = context.instance.get_latest_asset_check_evaluation_record(check)
    evaluation = entry.event.asset_check_evaluation if entry and entry.event else None
    checked = evaluation.metadata.get("version") if evaluation else None
    if evaluation is None or checked is None or checked.value != version:
        raise dg.Failure(
            f"Index {version} has no recall check yet: materialize `similarity_index` with its "
            f"check {RECALL_CHECK} (emb run does both)."
        )
    if not evaluation.passed:
        raise dg.Failure(f"Index {version} failed {RECALL_CHECK}: {evaluation.description}")
    return float(evaluation.metadata["recall_at_5"].value)


@dg.asset(deps=["embeddings"], kinds={"faiss", "duckdb"}, **SEARCH)
def near_duplicates(
    context: dg.AssetExecutionContext, config: NearDuplicatesConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Pairs of near-duplicate images (table `near_duplicates`), each with its reason
    (`same_bytes`; `same_hash`: perceptual hashes within a few bits; `embedding`: cosine >=
    `threshold`) and its group (connected pairs, named by their smallest image id). Features
    are judged mean-centred, of the plain backbone when the embeddings use a trained head."""
    from embedding_assets.curation import duplicate_table

    def compute(emb_set: EmbeddingSet) -> Scores:
        settings = config.duplicate_settings()
        found = duplicate_table.duplicate_table(storage.paths, emb_set, settings)
        metadata = {"images": emb_set.count, "threshold": config.threshold}
        by_reason = dg.MetadataValue.md(found.by_reason)
        metadata |= {"judged_on": found.judged_on, "pairs_by_reason": by_reason}
        return Scores(found.rows, metadata, found.log)

    def shown(emb_set: EmbeddingSet) -> dict[str, int]:
        return duplicate_table.stored_counts(storage.paths.catalog_db, emb_set.model_key)

    return score_table(context, storage, tables.NEAR_DUPLICATES, config, Scorer(compute, shown))


@dg.asset(deps=["embeddings"], kinds={"pytorch", "duckdb"}, pool=GPU_POOL, **SEARCH)
def image_tags(
    context: dg.AssetExecutionContext,
    config: ImageTagsConfig,
    storage: StorageResource,
    gpu: GPUResource,
) -> dg.MaterializeResult:
    """Every usable image's top ImageNet classes with their probabilities, from the backbone's
    own class head (table `image_tags`, by WordNet term in the view `image_tags_expanded`), and
    a copy serving text search. A backbone without an ImageNet-1k head is skipped, saying why."""
    from embedding_assets.catalog.scan import usable_version
    from embedding_assets.search import tagging, tags

    db = storage.paths.catalog_db
    key = config.backbone().model_key()

    def compute() -> Report:
        inference = partial(_held, context, gpu, lambda d: config.inference(d.torch_device))
        tagged = tagging.tag_images(storage.paths, config.tag_settings(), inference)
        if isinstance(tagged, str):
            context.log.warning(f"image_tags skipped for {key}: {tagged}")
            metadata = {"status": "skipped", "reason": tagged, "model_key": key}
            return Report(metadata, f"skipped:{key}", keep=False)
        found = tagging.summary(tagged)
        context.log.info(f"tagged {found.images} images with their top {config.top_k} classes")
        metadata = {"model_key": key, "images": found.images, "top_k": config.top_k}
        metadata |= {"neighbours": tags.NEIGHBOURS, "mean_top1_probability": found.mean_top1}
        common = dg.MetadataValue.md(found.most_common)
        return Report({**metadata, "most_common_tags": common, "search": tagging.SEARCH_HINT})

    def kept(_) -> Report | None:
        return Report({"model_key": key}) if tags.readable(storage.paths, key) else None

    parts = (key, usable_version(db), config.model_dump(mode="json"), tagging.GRAPH)
    return materialize(context, db, Inputs(tables.IMAGE_TAGS, parts, scope=key), compute, kept)


@dg.asset(deps=["image_catalog"], kinds={"pytorch", "faiss"}, pool=GPU_POOL, **SEARCH)
def clip_embeddings(
    context: dg.AssetExecutionContext, config: ClipEmbeddingsConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Every usable image through the image tower of `text_model` (cached by its own model
    key), and a FAISS index that text search queries through the text tower instead of the
    tags. Off unless `text_model` is set; without its weights it fails in one line."""
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

    def kept(_) -> Report | None:
        found = clip.point_at_stored(paths, key, config.text_model)
        return Report({"model_key": key}) if found else None

    inputs = Inputs("clip_embeddings", (key, usable_version(paths.catalog_db)), scope=key)
    return materialize(context, paths.catalog_db, inputs, compute, kept)
