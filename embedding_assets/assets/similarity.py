"""`similarity_index`: a FAISS index over the current embeddings, published only past its check.

Thin wrapper over `similarity` (index choice, build, tuning, measurements) and `search`
(versioned files, the `faiss_indexes` table). The blocking check re-measures recall@5 against
exact search on a fresh query sample and only then publishes the version for search.
"""

import time

import dagster as dg
import numpy as np
import pyarrow as pa
from pydantic import Field

from embedding_assets import search, similarity
from embedding_assets.embedding_run import content_vectors
from embedding_assets.vectors import load_current
from resources.gpu import GPU_POOL, GPUResource
from resources.storage import StorageResource

GROUP = "search"
OWNERS = ["team:ml-platform"]
MIN_RECALL_AT_5 = 0.95
K = 5


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
        default=20_000, description="Up to this many vectors the index is exact (Flat)."
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
    knn_k: int = Field(default=5, description="Neighbours voting in the kNN classification.")
    knn_max_queries: int = Field(
        default=20_000, description="Labeled images evaluated leave-one-out (a random sample)."
    )
    near_duplicate_threshold: float = Field(
        default=0.98,
        description="Pairs at cosine similarity >= this are near-duplicates; judged on "
        "mean-centred features (of the plain backbone when embeddings use a trained head).",
    )
    near_duplicate_k: int = Field(default=10, description="Neighbours examined per image.")


def _search_params(config: SimilarityIndexConfig, factory: str) -> dict[str, int] | None:
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


def _write_near_duplicates(
    storage: StorageResource, model_key: str, a: np.ndarray, b: np.ndarray, s: np.ndarray
) -> int:
    groups = similarity.group_pairs(a, b)
    table = pa.table(
        {
            "image_id_a": pa.array(a, pa.int64()),
            "image_id_b": pa.array(b, pa.int64()),
            "similarity": pa.array(s, pa.float32()),
            "model_key": pa.array([model_key] * len(a), pa.string()),
            "group_id": pa.array([groups[int(x)] for x in a], pa.int64()),
        }
    )
    with storage.connect() as con:
        con.begin()  # first: it also settles the schema check's pending result (DuckDB 2)
        try:
            con.register("new_pairs", table)
            con.execute("DELETE FROM near_duplicates WHERE model_key = ?", [model_key])
            con.execute("INSERT INTO near_duplicates SELECT * FROM new_pairs")
            con.commit()
        except BaseException:
            con.rollback()
            raise
        finally:
            con.unregister("new_pairs")
    return len(set(groups.values()))


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
    recall@5 against exact search reaches the target. The file is versioned under
    `indexes/<model_key>/`; the blocking recall check publishes it. Also writes near-duplicate
    pairs to `near_duplicates` and reports leave-one-out kNN accuracy on labeled images.
    """
    paths = storage.paths
    emb_set, ids, vectors = load_current(paths.catalog_db)
    n, d = vectors.shape
    factory = config.index_factory.strip() or similarity.choose_factory(
        n, d, int(config.memory_budget_gb * 2**30), exact_max=config.exact_max
    )
    context.log.info(f"Indexing {n} x {d} vectors of {emb_set.model_key} as {factory!r}")
    with gpu.acquire(context.log) as choice:
        built = similarity.build_index(
            vectors, ids, factory, train_sample=config.train_sample, gpu_id=choice.faiss_gpu_id
        )
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
    path = search.index_path(paths.indexes_dir, emb_set.model_key, version)
    nbytes = search.save_index(built.index, path)
    record = search.IndexRecord(
        emb_set.model_key, version, path, factory, n, d, built.search_params, recall, False
    )
    search.register_index(
        paths.catalog_db, record, nbytes=nbytes, build_seconds=built.build_seconds
    )

    t0 = time.perf_counter()
    knn = similarity.knn_loo_accuracy(
        built.index,
        vectors,
        ids,
        _labels(storage, ids),
        built.search_params,
        k=config.knn_k,
        max_queries=config.knn_max_queries,
    )
    knn_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    content = content_vectors(paths, emb_set.model_key, ids)  # plain backbone behind a head
    dup_ids, dup_vectors = content if content is not None else (ids, vectors)
    dup_vectors = similarity.centred(dup_vectors)
    dup_factory = similarity.choose_factory(
        len(dup_ids), dup_vectors.shape[1], int(config.memory_budget_gb * 2**30)
    )
    dup_built = similarity.build_index(
        dup_vectors, dup_ids, dup_factory, train_sample=config.train_sample
    )
    dup_index, dup_params = dup_built.index, dup_built.search_params
    a, b, s = similarity.near_duplicate_pairs(
        dup_index,
        dup_vectors,
        dup_ids,
        config.near_duplicate_threshold,
        dup_params,
        k=config.near_duplicate_k,
    )
    groups = _write_near_duplicates(storage, emb_set.model_key, a, b, s)
    dup_seconds = time.perf_counter() - t0
    context.log.info(
        f"Index {version}: recall@5 {recall:.4f}, p50 {latency.p50_ms:.3f} ms, "
        f"kNN LOO accuracy {knn.accuracy}, {len(a)} near-duplicate pairs"
    )
    return dg.MaterializeResult(
        metadata={
            "model_key": emb_set.model_key,
            "version": version,
            "index_type": factory,
            "search_params": dg.MetadataValue.json(built.search_params),
            "vectors": n,
            "dim": d,
            "bytes": nbytes,
            "bytes_per_vector": dg.MetadataValue.float(round(nbytes / n, 1)),
            "build_seconds": dg.MetadataValue.float(round(built.build_seconds, 3)),
            "train_seconds": dg.MetadataValue.float(round(built.train_seconds, 3)),
            "device": built.device,
            f"recall_at_{K}": dg.MetadataValue.float(round(recall, 4)),
            "recall_queries": len(queries),
            "query_p50_ms": dg.MetadataValue.float(round(latency.p50_ms, 4)),
            "query_p99_ms": dg.MetadataValue.float(round(latency.p99_ms, 4)),
            "batched_ms_per_query": dg.MetadataValue.float(round(latency.batched_ms_per_query, 4)),
            "knn_top1_accuracy_loo": dg.MetadataValue.float(
                round(knn.accuracy, 4) if knn.accuracy is not None else float("nan")
            ),
            "knn_evaluated": knn.evaluated,
            "knn_k": knn.k,
            "knn_accuracy_per_label": dg.MetadataValue.json(
                {k: round(v, 4) for k, v in knn.per_label.items()}
            ),
            "knn_seconds": dg.MetadataValue.float(round(knn_seconds, 3)),
            "near_duplicate_pairs": len(a),
            "near_duplicate_groups": groups,
            "near_duplicate_seconds": dg.MetadataValue.float(round(dup_seconds, 3)),
            "index_path": dg.MetadataValue.path(str(path)),
            "published": False,
        },
        data_version=dg.DataVersion(version),
    )


def _raise_hint(record: search.IndexRecord) -> str:
    """Which knob buys recall for this index type."""
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
    blocking=True,
    description=f"recall@{K} >= {MIN_RECALL_AT_5} against exact search on a fresh query "
    "sample; only then is the new index version published for search.",
)
def similarity_index_recall(storage: StorageResource) -> dg.AssetCheckResult:
    import faiss

    db = storage.paths.catalog_db
    emb_set, ids, vectors = load_current(db)
    record = search.latest_index(db, emb_set.model_key, published_only=False)
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
    if passed:
        search.publish(db, record.model_key, record.version, recall)
    else:
        search.record_check(db, record.model_key, record.version, recall)
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            f"recall_at_{K}": dg.MetadataValue.float(round(recall, 4)),
            "threshold": MIN_RECALL_AT_5,
            "version": record.version,
            "index_type": record.index_type,
            "search_params": dg.MetadataValue.json(record.search_params),
            "published": passed,
        },
        description=None
        if passed
        else f"recall@{K} {recall:.3f} < {MIN_RECALL_AT_5}: version {record.version} is not "
        f"published (search keeps the previous one). To fix, {_raise_hint(record)}.",
    )
