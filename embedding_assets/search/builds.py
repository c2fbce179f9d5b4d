"""One build of the similarity index per run: reuse the previous build when nothing changed,
update it in place when a few images did, else build anew; then tune, measure, save, register
and write the search snapshot. Plain code over FAISS and the catalog; the `similarity_index`
asset reports what happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from embedding_assets.common.hashing import stable_hash
from embedding_assets.embedding import sets
from embedding_assets.search import faiss_index, snapshot, versions
from embedding_assets.search.versions import IndexRecord
from resources.paths import DataPaths

RECALL_K = 5  # recall@5: the `recall_at_5` columns and the check's threshold are about it
DEFAULT_CHECK_QUERIES = 500  # for builds whose snapshot predates `recall_queries` in it


@dataclass(frozen=True)
class BuildSettings:
    """What decides an index (the similarity_index config without its kNN evaluation)."""

    index_factory: str = ""
    memory_budget_gb: float = 4.0
    exact_max: int = 20_000
    train_sample: int = 100_000
    target_recall: float = 0.97
    nprobe: int = 0
    ef_search: int = 0
    max_nprobe: int = 1024
    max_ef_search: int = 1024
    recall_queries: int = 500
    rebuild_fraction: float = 0.2  # when to rebuild, not what an index is

    def key(self) -> str:
        """What makes two builds the same kind of index: every setting but the rebuild
        threshold (the key stored in each snapshot, compared before an in-place update)."""
        kind = {k: v for k, v in asdict(self).items() if k != "rebuild_fraction"}
        return stable_hash("index-settings", kind)

    def factory_for(self, n: int, d: int) -> str:
        return self.index_factory.strip() or faiss_index.choose_factory(
            n, d, int(self.memory_budget_gb * 2**30), exact_max=self.exact_max
        )

    def fixed_params(self, factory: str) -> dict[str, int] | None:
        """nprobe / efSearch set by hand for this index type, or None to tune."""
        kind = faiss_index.index_kind(factory)
        if kind == "ivf" and self.nprobe:
            return {"nprobe": self.nprobe}
        if kind == "hnsw" and self.ef_search:
            return {"efSearch": self.ef_search}
        return None


@dataclass(frozen=True)
class BuildReport:
    """What a build did and measured, for the asset's metadata."""

    record: IndexRecord
    how: str  # full build (why), or which version was updated in place
    nbytes: int
    build_seconds: float
    train_seconds: float
    device: str
    recall_queries: int
    latency: faiss_index.Latency


GpuChoice = Callable[[], AbstractContextManager[int | None]]  # yields FAISS's GPU id or None


@dataclass(frozen=True)
class BuildRun:
    """What a build may use of the run that asked for it: a GPU (taken only for the FAISS
    build itself) and the run's log."""

    gpu: GpuChoice
    log: Callable[[str], None]


def build(
    paths: DataPaths,
    model_key: str,
    ids: np.ndarray,
    vectors: np.ndarray,
    settings: BuildSettings,
    run: BuildRun,
) -> tuple[faiss.Index, BuildReport]:
    """Build (or update the current build in place), tune, measure, save and register an index
    and its search snapshot (the asset then records it as the current build of `model_key`)."""
    n, d = vectors.shape
    log = run.log
    factory = settings.factory_for(n, d)
    previous = versions.current_build(paths.catalog_db, model_key)
    built, how = updated(previous, factory, settings, ids, vectors)
    if built is None:
        log(f"Indexing {n} x {d} vectors of {model_key} as {factory!r}")
        with run.gpu() as gpu_id:
            built = faiss_index.build_index(
                vectors, ids, factory, train_sample=settings.train_sample, gpu_id=gpu_id
            )
    log(f"{model_key}: {how}")
    queries = faiss_index.sample_queries(vectors, settings.recall_queries, seed=0)
    truth = faiss_index.exact_topk(vectors, ids, queries, RECALL_K)
    fixed = settings.fixed_params(factory)
    if fixed is None:
        faiss_index.tune(
            built,
            queries,
            truth,
            settings.target_recall,
            max_nprobe=settings.max_nprobe,
            max_ef_search=settings.max_ef_search,
        )
    else:
        built.search_params = fixed
        faiss_index.apply_search_params(built.index, fixed)
    found = faiss_index.search(built.index, queries, RECALL_K, built.search_params)[1]
    recall = faiss_index.recall_at_k(found, truth)
    latency = faiss_index.measure_latency(built.index, queries, RECALL_K, built.search_params)

    version = versions.new_version()
    record = IndexRecord(
        model_key=model_key,
        version=version,
        path=versions.index_path(paths.indexes_dir, model_key, version),
        index_type=factory,
        vectors=n,
        dim=d,
        search_params=built.search_params,
        recall_at_5=recall,
    )
    nbytes = versions.save_index(built.index, record.path)
    write_snapshot(paths.catalog_db, record, ids, vectors, settings)
    versions.register_index(paths, record, nbytes=nbytes, build_seconds=built.build_seconds)
    log(f"Index {version}: recall@5 {recall:.4f}, p50 {latency.p50_ms:.3f} ms ({factory})")
    report = BuildReport(
        record=record,
        how=how,
        nbytes=nbytes,
        build_seconds=built.build_seconds,
        train_seconds=built.train_seconds,
        device=built.device,
        recall_queries=len(queries),
        latency=latency,
    )
    return built.index, report


def updated(
    previous: IndexRecord | None,
    factory: str,
    settings: BuildSettings,
    ids: np.ndarray,
    vectors: np.ndarray,
) -> tuple[faiss_index.BuiltIndex | None, str]:
    """(BuiltIndex, how) from the previous build with the changes applied in place, or (None,
    why a full build) when that build cannot be reused: other settings or index type, a
    change beyond `rebuild_fraction`, removals from a graph index, or no snapshot to diff."""
    if previous is None or not previous.path.is_file() or not snapshot.exists(previous.path):
        return None, "full build (no previous build to update)"
    info = snapshot.build_info(previous.path)
    if info.get("settings") != settings.key() or previous.index_type != factory:
        return None, f"full build ({previous.index_type} with other settings or type before)"
    old_ids, old_vectors = snapshot.stored_vectors(previous.path)
    delta = faiss_index.changes(old_ids, old_vectors, ids, vectors)
    fraction = settings.rebuild_fraction
    if delta.count > fraction * max(len(old_ids), 1):
        return None, f"full build ({delta.count} changes > {fraction:.0%} of the index)"
    if len(delta.remove_ids) and faiss_index.index_kind(factory) == "hnsw":
        return None, "full build (an HNSW graph cannot remove images)"
    index = faiss.read_index(str(previous.path))
    seconds = faiss_index.apply_changes(index, delta, ids, vectors)
    built = faiss_index.BuiltIndex(index, factory, dict(previous.search_params), 0.0, seconds)
    how = (
        f"updated {previous.version} in place: +{len(delta.add_rows)} "
        f"-{len(delta.remove_ids)} images"
    )
    return built, how


def write_snapshot(
    db: Path, record: IndexRecord, ids: np.ndarray, vectors: np.ndarray, settings: BuildSettings
) -> None:
    """What serving needs of this version, next to its index file (see `snapshot`)."""
    info = {
        "record": record.as_snapshot_info(),
        "params": sets.stored_set_params(db, record.model_key),
        "settings": settings.key(),
        "recall_queries": settings.recall_queries,
    }
    rows = snapshot.catalog_rows(db, record.model_key, ids)
    snapshot.write(record.path, info, ids, vectors, rows)


@dataclass(frozen=True)
class RecallCheck:
    """recall@5 of a build against exact search on a fresh query sample (another seed than
    tuning used), with as many queries as the build was tuned with."""

    recall: float
    queries: int


def check_recall(record: IndexRecord, ids: np.ndarray, vectors: np.ndarray) -> RecallCheck:
    info = snapshot.build_info(record.path) if snapshot.exists(record.path) else {}
    n_queries = int(info.get("recall_queries", DEFAULT_CHECK_QUERIES))
    index = faiss.read_index(str(record.path))
    queries = faiss_index.sample_queries(vectors, n_queries, seed=1)
    truth = faiss_index.exact_topk(vectors, ids, queries, RECALL_K)
    found = faiss_index.search(index, queries, RECALL_K, record.search_params)[1]
    return RecallCheck(faiss_index.recall_at_k(found, truth), len(queries))


def recall_hint(record: IndexRecord) -> str:
    """Which knob buys recall for this index type."""
    kind = faiss_index.index_kind(record.index_type)
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


@dataclass(frozen=True)
class KnnReport:
    accuracy: faiss_index.KnnAccuracy
    seconds: float


def knn_report(
    index: faiss.Index,
    params: dict[str, int],
    vectors: np.ndarray,
    ids: np.ndarray,
    labels: dict[int, str],
    knn_settings: faiss_index.KnnSettings,
) -> KnnReport:
    """Leave-one-out kNN accuracy of the labeled images through the index, timed."""
    t0 = time.perf_counter()
    knn = faiss_index.knn_loo_accuracy(index, vectors, ids, labels, params, settings=knn_settings)
    return KnnReport(knn, time.perf_counter() - t0)
