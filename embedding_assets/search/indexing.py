"""What the similarity-index assets run, over `builds`: one materialization of the index (the
current build reused, or a build made) with its kNN accuracy on the current labels, and the
blocking check's verdict on a build's recall; each with the figures the assets report, as
plain values (Dagster stores a float, int, str, dict or path as such)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss

from embedding_assets.catalog.labels import current_labels
from embedding_assets.embedding.sets import current_set, load_current, read_parquet
from embedding_assets.search import builds, snapshot, versions
from embedding_assets.search.builds import BuildReport, BuildRun, BuildSettings, KnnReport
from embedding_assets.search.faiss_index import KnnSettings
from embedding_assets.search.versions import IndexRecord
from resources.paths import DataPaths

REUSED_NOTE = (
    "index reused (embeddings and settings unchanged); kNN accuracy measured again for the "
    "current labels"
)


def reusable_build(db: Path, model_key: str) -> IndexRecord | None:
    """The current build of `model_key` while its index file is still there."""
    record = versions.current_build(db, model_key)
    return record if record is not None and record.path.is_file() else None


@dataclass(frozen=True)
class IndexResult:
    """The build `similarity_index` materialized (`build` None: the current one, reused) and
    the kNN accuracy measured through it."""

    record: IndexRecord
    build: BuildReport | None
    knn: KnnReport

    def summary(self) -> dict:
        """The build's figures, then the kNN accuracy's."""
        figures = record_summary(self.record)
        if self.build is not None:
            figures |= build_summary(self.build)
        return figures | knn_summary(self.knn)


def index_and_knn(
    paths: DataPaths,
    record: IndexRecord | None,
    settings: BuildSettings,
    knn_settings: KnnSettings,
    run: BuildRun,
) -> IndexResult:
    """Reuse `record` (the current build, when the embeddings and settings are the same) or
    build an index, then measure kNN accuracy on the current labels."""
    emb_set = current_set(paths.catalog_db)
    ids, vectors = read_parquet(emb_set.parquet_path)
    report = None
    if record is not None:
        if not snapshot.exists(record.path):  # built before search snapshots existed
            builds.write_snapshot(paths.catalog_db, record, ids, vectors, settings)
        index = faiss.read_index(str(record.path))
    else:
        index, report = builds.build(paths, emb_set.model_key, ids, vectors, settings, run)
        record = report.record
    labels = current_labels(paths.catalog_db, ids)
    knn = builds.knn_report(index, record.search_params, vectors, ids, labels, knn_settings)
    return IndexResult(record, report, knn)


def record_summary(record: IndexRecord) -> dict:
    return {
        "model_key": record.model_key,
        "version": record.version,
        "index_type": record.index_type,
        "search_params": record.search_params,
        "vectors": record.vectors,
        "dim": record.dim,
        "recall_at_5": float(round(record.recall_at_5, 4)),
        "index_path": record.path,
    }


def build_summary(report: BuildReport) -> dict:
    latency = report.latency
    return {
        "build": report.how,
        "bytes": report.nbytes,
        "bytes_per_vector": float(round(report.nbytes / report.record.vectors, 1)),
        "build_seconds": float(round(report.build_seconds, 3)),
        "train_seconds": float(round(report.train_seconds, 3)),
        "device": report.device,
        "recall_queries": report.recall_queries,
        "query_p50_ms": float(round(latency.p50_ms, 4)),
        "query_p99_ms": float(round(latency.p99_ms, 4)),
        "batched_ms_per_query": float(round(latency.batched_ms_per_query, 4)),
    }


def knn_summary(report: KnnReport) -> dict:
    knn = report.accuracy
    return {
        "knn_top1_accuracy_loo": float(round(knn.accuracy, 4))
        if knn.accuracy is not None
        else float("nan"),
        "knn_evaluated": knn.evaluated,
        "knn_k": knn.k,
        "knn_accuracy_per_label": {k: round(v, 4) for k, v in knn.per_label.items()},
        "knn_seconds": float(round(report.seconds, 3)),
    }


@dataclass(frozen=True)
class RecallVerdict:
    """The blocking check's verdict on the current build: passed, its figures, and why not."""

    passed: bool
    figures: dict
    failure: str | None


def judge_recall(db: Path, minimum: float) -> RecallVerdict:
    """recall@5 of the current build against exact search on a fresh query sample, at least
    `minimum` or not (with the knob that buys recall for its index type)."""
    emb_set, ids, vectors = load_current(db)
    record = versions.current_build(db, emb_set.model_key)
    if record is None:
        return RecallVerdict(False, {}, f"No index was built for {emb_set.model_key}.")
    checked = builds.check_recall(record, ids, vectors)
    passed = checked.recall >= minimum
    figures = {
        "recall_at_5": float(round(checked.recall, 4)),
        "threshold": minimum,
        "queries": checked.queries,
        "version": record.version,
        "index_type": record.index_type,
        "search_params": record.search_params,
    }
    failure = (
        f"recall@5 {checked.recall:.3f} < {minimum}: version {record.version} is not published "
        f"(search keeps the previous one). To fix, {builds.recall_hint(record)}."
    )
    return RecallVerdict(passed, figures, None if passed else failure)
