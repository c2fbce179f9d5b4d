"""`similarity_index` → `published_index`, and `near_duplicates`: FAISS over the embeddings.

Thin wrappers over `similarity` (index choice, build, tuning, measurements) and `search`
(versioned files, the `faiss_indexes` table). The blocking check `similarity_index_recall` only
checks: it re-measures recall@5 of the index `similarity_index` materialized against exact
search on a fresh query sample. `published_index`, downstream, makes that version the one search
uses, so a failed check stops publication in the same run and search keeps the previous version.
Each asset fingerprints its inputs and reuses its stored result when they did not change.
"""

import time
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
from pydantic import Field

from embedding_assets import analytics_store as store
from embedding_assets.assets.reuse import previous_metadata, reused
from embedding_assets.fingerprints import REUSED, SKIPPED, fingerprint, labels_version, stored
from embedding_assets.settings import page_url
from embedding_assets.vectors import content_version, current_set, load_current, read_parquet
from resources.gpu import GPU_POOL, GPUResource
from resources.storage import StorageResource

if TYPE_CHECKING:
    from embedding_assets.search import IndexRecord

GROUP = "search"
OWNERS = ["team:ml-platform"]
MIN_RECALL_AT_5 = 0.95
K = 5
RECALL_CHECK = "similarity_index_recall"
KNN_FIELDS = ("knn_k", "knn_max_queries")  # the kNN evaluation, not the index
UPDATE_FIELDS = ("rebuild_fraction",)  # when to rebuild, not what an index is


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


def _search_params(config: SimilarityIndexConfig, factory: str) -> dict[str, int] | None:
    from embedding_assets import similarity

    kind = similarity.index_kind(factory)
    if kind == "ivf" and config.nprobe:
        return {"nprobe": config.nprobe}
    if kind == "hnsw" and config.ef_search:
        return {"efSearch": config.ef_search}
    return None


def _labels(storage: StorageResource, ids: np.ndarray) -> dict[int, str]:
    with storage.connect(read_only=True) as con:
        rows = con.execute(
            "SELECT image_id, label FROM current_labels WHERE image_id IN "
            "(SELECT unnest(?::BIGINT[]))",
            [ids.tolist()],
        ).fetchall()
    return {int(i): lab for i, lab in rows}


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
    from embedding_assets import index_snapshot, search

    db = storage.paths.catalog_db
    emb_set = current_set(db)
    key = emb_set.model_key
    settings = config.model_dump(mode="json")
    built_from = {k: v for k, v in settings.items() if k not in KNN_FIELDS}
    content = content_version(emb_set.parquet_path, key)
    index_fp = fingerprint("similarity_index", content, built_from)
    # the kNN accuracy in the metadata also depends on the labels
    version_fp = fingerprint(index_fp, labels_version(db), [settings[k] for k in KNN_FIELDS])
    found = stored(db, search.ASSET, key)
    record = search.current_build(db, key) if found and found.fingerprint == index_fp else None
    if record is not None and record.path.is_file():
        previous = previous_metadata(context, version_fp)
        if previous and index_snapshot.exists(record.path):
            return reused(context, version_fp, previous=previous)
        import faiss

        ids, vectors = read_parquet(emb_set.parquet_path)
        if not index_snapshot.exists(record.path):  # built before search snapshots existed
            _write_snapshot(db, record, ids, vectors, _settings_key(settings))
        index, params = faiss.read_index(str(record.path)), record.search_params
        metadata = {
            REUSED: "index reused (embeddings and settings unchanged); kNN accuracy measured "
            "again for the current labels",
            **_record_metadata(record),
        }
    else:
        ids, vectors = read_parquet(emb_set.parquet_path)
        previous = search.current_build(db, key)
        index, params, metadata = _build(
            context, config, key, ids, vectors, index_fp, storage, gpu, previous
        )
    metadata.update(_knn_metadata(index, params, vectors, ids, storage, config))
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version_fp))


def _build(
    context: dg.AssetExecutionContext,
    config: SimilarityIndexConfig,
    model_key: str,
    ids: np.ndarray,
    vectors: np.ndarray,
    fp: str,
    storage: StorageResource,
    gpu: GPUResource,
    previous: "IndexRecord | None",
) -> tuple:
    """Build (or update the previous build in place), tune, measure, save and register an
    index and its search snapshot: (index, search params, metadata)."""
    from embedding_assets import search, similarity

    paths = storage.paths
    n, d = vectors.shape
    factory = config.index_factory.strip() or similarity.choose_factory(
        n, d, int(config.memory_budget_gb * 2**30), exact_max=config.exact_max
    )
    settings_key = _settings_key(config.model_dump(mode="json"))
    built, how = _updated(previous, factory, settings_key, ids, vectors, config.rebuild_fraction)
    if built is None:
        context.log.info(f"Indexing {n} x {d} vectors of {model_key} as {factory!r}")
        with gpu.acquire(context.log) as choice:
            built = similarity.build_index(
                vectors, ids, factory, train_sample=config.train_sample, gpu_id=choice.faiss_gpu_id
            )
    context.log.info(f"{model_key}: {how}")
    queries = similarity.sample_queries(vectors, config.recall_queries, seed=0)
    truth = similarity.exact_topk(vectors, ids, queries, K)
    fixed = _search_params(config, factory)
    if fixed is None:
        similarity.tune(
            built,
            queries,
            truth,
            config.target_recall,
            max_nprobe=config.max_nprobe,
            max_ef_search=config.max_ef_search,
        )
    else:
        built.search_params = fixed
        similarity.apply_search_params(built.index, fixed)
    recall = similarity.recall_at_k(
        similarity.search(built.index, queries, K, built.search_params)[1], truth
    )
    latency = similarity.measure_latency(built.index, queries, K, built.search_params)

    version = search.new_version()
    path = search.index_path(paths.indexes_dir, model_key, version)
    nbytes = search.save_index(built.index, path)
    record = search.IndexRecord(
        model_key, version, path, factory, n, d, built.search_params, recall, False
    )
    _write_snapshot(paths.catalog_db, record, ids, vectors, settings_key)
    search.register_index(
        paths.catalog_db, record, nbytes=nbytes, build_seconds=built.build_seconds, fingerprint=fp
    )
    context.log.info(
        f"Index {version}: recall@5 {recall:.4f}, p50 {latency.p50_ms:.3f} ms ({factory})"
    )
    metadata = {
        **_record_metadata(record),
        "build": how,
        "bytes": nbytes,
        "bytes_per_vector": dg.MetadataValue.float(round(nbytes / n, 1)),
        "build_seconds": dg.MetadataValue.float(round(built.build_seconds, 3)),
        "train_seconds": dg.MetadataValue.float(round(built.train_seconds, 3)),
        "device": built.device,
        "recall_queries": len(queries),
        "query_p50_ms": dg.MetadataValue.float(round(latency.p50_ms, 4)),
        "query_p99_ms": dg.MetadataValue.float(round(latency.p99_ms, 4)),
        "batched_ms_per_query": dg.MetadataValue.float(round(latency.batched_ms_per_query, 4)),
    }
    return built.index, built.search_params, metadata


def _settings_key(settings: dict) -> str:
    """What makes two builds the same kind of index (the kNN evaluation and the rebuild
    threshold do not)."""
    from embedding_assets.fingerprints import fingerprint

    skip = KNN_FIELDS + UPDATE_FIELDS
    return fingerprint("index-settings", {k: v for k, v in settings.items() if k not in skip})


def _updated(
    previous: "IndexRecord | None",
    factory: str,
    settings_key: str,
    ids: np.ndarray,
    vectors: np.ndarray,
    rebuild_fraction: float,
) -> tuple:
    """(BuiltIndex, how) from the previous build with the changes applied in place, or (None,
    why a full build) when that build cannot be reused: other settings or index type, a
    change beyond `rebuild_fraction`, removals from a graph index, or no snapshot to diff."""
    import faiss

    from embedding_assets import index_snapshot, similarity

    if previous is None or not previous.path.is_file() or not index_snapshot.exists(previous.path):
        return None, "full build (no previous build to update)"
    info = index_snapshot.build_info(previous.path)
    if info.get("settings") != settings_key or previous.index_type != factory:
        return None, f"full build ({previous.index_type} with other settings or type before)"
    old_ids, old_vectors = index_snapshot.stored_vectors(previous.path)
    delta = similarity.changes(old_ids, old_vectors, ids, vectors)
    limit = rebuild_fraction * max(len(old_ids), 1)
    if delta.count > limit:
        return None, f"full build ({delta.count} changes > {rebuild_fraction:.0%} of the index)"
    if len(delta.remove_ids) and similarity.index_kind(factory) == "hnsw":
        return None, "full build (an HNSW graph cannot remove images)"
    index = faiss.read_index(str(previous.path))
    seconds = similarity.apply_changes(index, delta, ids, vectors)
    built = similarity.BuiltIndex(index, factory, dict(previous.search_params), 0.0, seconds)
    how = (
        f"updated {previous.version} in place: +{len(delta.add_rows)} "
        f"-{len(delta.remove_ids)} images"
    )
    return built, how


def _write_snapshot(
    db, record: "IndexRecord", ids: np.ndarray, vectors: np.ndarray, settings_key: str
) -> None:
    """What serving needs of this version, next to its index file (see index_snapshot)."""
    from embedding_assets import index_snapshot
    from embedding_assets.vectors import stored_set_params

    rows = index_snapshot.catalog_rows(db, record.model_key, ids)
    info = {
        "record": {
            "index_type": record.index_type,
            "vectors": record.vectors,
            "dim": record.dim,
            "search_params": record.search_params,
            "recall_at_5": record.recall_at_5,
        },
        "params": stored_set_params(db, record.model_key),
        "settings": settings_key,
    }
    index_snapshot.write(record.path, info, ids, vectors, rows)


def _record_metadata(record: "IndexRecord") -> dict:
    return {
        "model_key": record.model_key,
        "version": record.version,
        "index_type": record.index_type,
        "search_params": dg.MetadataValue.json(record.search_params),
        "vectors": record.vectors,
        "dim": record.dim,
        f"recall_at_{K}": dg.MetadataValue.float(round(record.recall_at_5, 4)),
        "index_path": dg.MetadataValue.path(str(record.path)),
    }


def _knn_metadata(
    index,
    params: dict[str, int],
    vectors: np.ndarray,
    ids: np.ndarray,
    storage: StorageResource,
    config: SimilarityIndexConfig,
) -> dict:
    """Leave-one-out kNN accuracy of the labeled images through the index."""
    from embedding_assets import similarity

    t0 = time.perf_counter()
    knn = similarity.knn_loo_accuracy(
        index,
        vectors,
        ids,
        _labels(storage, ids),
        params,
        k=config.knn_k,
        max_queries=config.knn_max_queries,
    )
    return {
        "knn_top1_accuracy_loo": dg.MetadataValue.float(
            round(knn.accuracy, 4) if knn.accuracy is not None else float("nan")
        ),
        "knn_evaluated": knn.evaluated,
        "knn_k": knn.k,
        "knn_accuracy_per_label": dg.MetadataValue.json(
            {k: round(v, 4) for k, v in knn.per_label.items()}
        ),
        "knn_seconds": dg.MetadataValue.float(round(time.perf_counter() - t0, 3)),
    }


def _raise_hint(record: "IndexRecord") -> str:
    """Which knob buys recall for this index type."""
    from embedding_assets import similarity

    kind = similarity.index_kind(record.index_type)
    if "PQ" in record.index_type:
        return (
            "raise the PQ code size (more sub-quantisers, e.g. PQ32 instead of PQ16), or the "
            "memory_budget_gb so an IVF-Flat or HNSW index fits, or set a larger nprobe"
        )
    if kind == "ivf":
        now = record.search_params.get("nprobe")
        return f"raise nprobe (now {now}; config `nprobe`, or `max_nprobe` for tuning)"
    if kind == "hnsw":
        now = record.search_params.get("efSearch")
        return f"raise efSearch (now {now}; config `ef_search` / `max_ef_search`) or HNSW M"
    return "exact search missed neighbours: look for duplicate vectors (ties at the cut-off)"


@dg.asset_check(
    asset=similarity_index,
    name=RECALL_CHECK,
    blocking=True,
    description=f"recall@{K} >= {MIN_RECALL_AT_5} against exact search on a fresh query "
    "sample; a failure stops `published_index`, so search keeps the previous version.",
)
def similarity_index_recall(storage: StorageResource) -> dg.AssetCheckResult:
    import faiss

    from embedding_assets import search, similarity

    db = storage.paths.catalog_db
    emb_set, ids, vectors = load_current(db)
    record = search.current_build(db, emb_set.model_key)
    if record is None:
        return dg.AssetCheckResult(
            passed=False, description=f"No index was built for {emb_set.model_key}."
        )
    index = faiss.read_index(str(record.path))
    queries = similarity.sample_queries(vectors, 500, seed=1)
    truth = similarity.exact_topk(vectors, ids, queries, K)
    found = similarity.search(index, queries, K, record.search_params)[1]
    recall = similarity.recall_at_k(found, truth)
    passed = recall >= MIN_RECALL_AT_5
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            f"recall_at_{K}": dg.MetadataValue.float(round(recall, 4)),
            "threshold": MIN_RECALL_AT_5,
            "version": record.version,
            "index_type": record.index_type,
            "search_params": dg.MetadataValue.json(record.search_params),
        },
        description=None
        if passed
        else f"recall@{K} {recall:.3f} < {MIN_RECALL_AT_5}: version {record.version} is not "
        f"published (search keeps the previous one). To fix, {_raise_hint(record)}.",
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
    from embedding_assets import search

    db = storage.paths.catalog_db
    key = current_set(db).model_key
    record = search.current_build(db, key)
    if record is None:
        raise dg.Failure(f"No similarity index for {key}: materialize `similarity_index` first.")
    live = search.latest_index(db, key, published_only=True)
    base = {"model_key": key, "version": record.version, "index_type": record.index_type}
    if live is not None and live.version == record.version:
        note = f"{SKIPPED}: version {record.version} is already the one search uses"
        return reused(context, record.version, base, note=note)
    recall = _checked_recall(context, record)
    search.publish(db, key, record.version, recall)
    context.log.info(f"Search now uses index {record.version} of {key}")
    return dg.MaterializeResult(
        metadata={
            **base,
            f"check_recall_at_{K}": dg.MetadataValue.float(round(recall, 4)),
            "replaces": live.version if live else "none",
            "search_in_browser": dg.MetadataValue.url(page_url("search/page")),
            "index_path": dg.MetadataValue.path(str(record.path)),
        },
        data_version=dg.DataVersion(record.version),
    )


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
    return float(evaluation.metadata[f"recall_at_{K}"].value)


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
    """Pairs of images at cosine similarity >= `threshold` in the DuckDB table
    `near_duplicates`, each with its group (connected pairs; the group id is its smallest image
    id). Judged on mean-centred features, of the plain backbone when the embeddings use a
    trained head: a metric-learning head pulls a whole class together, which says nothing
    about duplicated content."""
    db = storage.paths.catalog_db
    emb_set = current_set(db)
    key = emb_set.model_key
    content = content_version(emb_set.parquet_path, key)
    fp = fingerprint("near_duplicates", content, config.model_dump(mode="json"))
    found = stored(db, "near_duplicates", key)
    if found is not None and found.fingerprint == fp:
        return reused(context, fp, _duplicate_counts(storage, key))
    t0 = time.perf_counter()
    ids, vectors = read_parquet(emb_set.parquet_path)
    a, b, s, judged_on = _pairs(storage, key, ids, vectors, config)
    store.replace_rows(db, "near_duplicates", key, _pair_rows(key, a, b, s), fp)
    counts = _duplicate_counts(storage, key)
    context.log.info(f"{counts['pairs']} near-duplicate pairs in {counts['groups']} groups")
    return dg.MaterializeResult(
        metadata={
            **counts,
            "model_key": key,
            "images": len(ids),
            "threshold": config.threshold,
            "judged_on": judged_on,
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - t0, 3)),
        },
        data_version=dg.DataVersion(fp),
    )


def _pairs(
    storage: StorageResource,
    model_key: str,
    ids: np.ndarray,
    vectors: np.ndarray,
    config: NearDuplicatesConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    from embedding_assets import similarity
    from embedding_assets.embedding_run import content_vectors

    content = content_vectors(storage.paths, model_key, ids)  # plain backbone behind a head
    dup_ids, dup_vectors = content if content is not None else (ids, vectors)
    judged_on = "plain backbone features" if content is not None else "the embeddings"
    dup_vectors = similarity.centred(dup_vectors)
    factory = similarity.choose_factory(
        len(dup_ids), dup_vectors.shape[1], int(config.memory_budget_gb * 2**30)
    )
    built = similarity.build_index(dup_vectors, dup_ids, factory)
    a, b, s = similarity.near_duplicate_pairs(
        built.index, dup_vectors, dup_ids, config.threshold, built.search_params, k=config.k
    )
    return a, b, s, f"{judged_on}, mean-centred ({factory})"


def _pair_rows(model_key: str, a: np.ndarray, b: np.ndarray, s: np.ndarray):
    import pyarrow as pa

    from embedding_assets import similarity

    groups = similarity.group_pairs(a, b)
    return pa.table(
        {
            "image_id_a": pa.array(a, pa.int64()),
            "image_id_b": pa.array(b, pa.int64()),
            "similarity": pa.array(s, pa.float32()),
            "model_key": pa.array([model_key] * len(a), pa.string()),
            "group_id": pa.array([groups[int(x)] for x in a], pa.int64()),
        }
    )


def _duplicate_counts(storage: StorageResource, model_key: str) -> dict[str, int]:
    with storage.connect(read_only=True) as con:
        pairs, groups = con.execute(
            "SELECT count(*), count(DISTINCT group_id) FROM near_duplicates WHERE model_key = ?",
            [model_key],
        ).fetchall()[0]
    return {"pairs": pairs, "groups": groups}
