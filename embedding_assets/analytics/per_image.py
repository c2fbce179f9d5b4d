"""The per-image results of an embedding set, a cluster id and an anomaly score, as the rows of
their tables with what their assets report: placed by the stored models while the set only
gained a few images (`placing`), else fitted again. Also the summaries read back from the
stored rows, shown whether the rows were computed or reused."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedding_assets.analytics import store
from embedding_assets.analytics.anomaly import AnomalyParams, placed_scores
from embedding_assets.analytics.anomaly import score as score_anomalies
from embedding_assets.analytics.clustering import ClusterParams, cluster, faiss_gpu_id, purity
from embedding_assets.analytics.placing import ModelFile, Placeable, Placed
from embedding_assets.catalog.images import image_info
from embedding_assets.common import markdown, tables
from embedding_assets.common.figures import histogram_markdown
from embedding_assets.common.markdown import Markdown
from embedding_assets.common.results import Scores
from embedding_assets.embedding.sets import EmbeddingSet, read_parquet
from resources.paths import DataPaths

if TYPE_CHECKING:
    from resources.gpu import DeviceChoice  # its module loads Dagster


@dataclass(frozen=True)
class _Kept:
    """Where one per-image result of a set is kept: its rows (`table`, value `column`) and its
    fitted model, made with the settings `made_with` names."""

    paths: DataPaths
    table: str
    column: str
    model_key: str
    made_with: str

    @property
    def models(self) -> ModelFile:
        return ModelFile.under(self.paths.models_dir, self.table, self.model_key, self.made_with)

    def placed(self, ids: np.ndarray, vectors: np.ndarray) -> Placed | None:
        """The stored results with the new images placed; None: fit again."""
        db = self.paths.catalog_db
        read = partial(store.stored_column, db, self.table, self.model_key, self.column)
        return self.models.placed(ids, vectors, read)

    def keeping(self, placed: Placed) -> Callable[[], None]:
        """Keep the record of `placed` (once its rows are written)."""
        return partial(self.models.save, placed.fitted)

    def keeping_fit(
        self, ids: np.ndarray, vectors: np.ndarray, model: Placeable
    ) -> Callable[[], None]:
        """Keep the model of a full fit over `ids` (once its rows are written)."""
        return partial(self.models.save, self.models.fitted(ids, vectors, {self.column: model}))


def clusters_of(
    emb_set: EmbeddingSet,
    paths: DataPaths,
    params: ClusterParams,
    made_with: str,
    device: Callable[[], AbstractContextManager[DeviceChoice]],
) -> Scores:
    """k-means clusters of the set (`device`: the device to fit on, acquired only to fit)."""
    ids, vectors = read_parquet(emb_set.parquet_path)
    known = image_info(paths.catalog_db, ids)["label"].to_numpy(dtype=object)
    labels = np.array([lab if isinstance(lab, str) else None for lab in known], dtype=object)
    kept = _Kept(paths, tables.CLUSTERS, "cluster", emb_set.model_key, made_with)
    placed = kept.placed(ids, vectors)
    if placed is not None:
        found = placed.maps["cluster"]
        metadata = {
            "images": len(ids),
            **_placed(placed),
            "purity": _rounded(purity(found, labels)),
        }
        rows = {"image_id": ids, "cluster": found.astype(np.int32)}
        return Scores(rows, metadata, placed.note, after_write=kept.keeping(placed))
    with device() as choice:
        result = cluster(vectors, params, faiss_gpu_id(choice.faiss_gpu_id))
    metadata = {
        "images": len(ids),
        "k": result.k,
        "k_from": "silhouette sweep" if result.sweep else "config",
        "label_classes": params.label_classes,
        "purity": _rounded(purity(result.labels, labels)),
        "backend": result.backend,
        "device": choice.describe(),
        "silhouette": _rounded(result.silhouette),
        "sizes": {str(k): v for k, v in result.sizes.items()},
        "cluster_seconds": round(result.seconds, 3),
    }
    if result.sweep:
        sweep = [[k, s] for k, s in result.sweep.items()]
        metadata["silhouette_sweep"] = Markdown(markdown.table(["k", "silhouette"], sweep))
    return Scores(
        {"image_id": ids, "cluster": result.labels.astype(np.int32)},
        metadata,
        f"{len(ids)} images in {result.k} clusters ({result.backend}, "
        f"silhouette {result.silhouette}) in {result.seconds:.2f} s",
        after_write=kept.keeping_fit(ids, vectors, result.centres),
    )


def anomaly_scores_of(
    emb_set: EmbeddingSet, paths: DataPaths, params: AnomalyParams, made_with: str
) -> Scores:
    """Isolation Forest scores of the set, the top `flag_fraction` flagged."""
    ids, vectors = read_parquet(emb_set.parquet_path)
    kept = _Kept(paths, tables.ANOMALY_SCORES, "score", emb_set.model_key, made_with)
    placed = kept.placed(ids, vectors)
    if placed is None:
        result = score_anomalies(vectors, params)
        keep = kept.keeping_fit(ids, vectors, result.forest)
    else:  # the new images scored by the stored forest; the top fraction taken again
        result = placed_scores(placed.maps["score"], params.flag_fraction)
        keep = kept.keeping(placed)
    flagged = int(result.flagged.sum())
    histogram = histogram_markdown(
        result.scores, "scores", result.threshold, "anomaly score (higher = more unusual)"
    )
    metadata = {
        "images": len(ids),
        "flagged": flagged,
        "flag_fraction": params.flag_fraction,
        "threshold": _rounded(result.threshold),
        "score_mean": round(float(result.scores.mean()), 4),
        "score_max": round(float(result.scores.max()), 4),
        "score_histogram": Markdown(histogram),
        "fit_seconds": round(result.fit_seconds, 3),
        "score_seconds": round(result.score_seconds, 3),
        **(_placed(placed) if placed else {}),
    }
    log = (
        f"Scored {len(ids)} images (fit {result.fit_seconds:.2f} s, "
        f"score {result.score_seconds:.2f} s); flagged {flagged}"
    )
    return Scores(
        {"image_id": ids, "score": result.scores, "flagged": result.flagged},
        metadata,
        log if placed is None else f"{placed.note}\n{log}",
        after_write=keep,
    )


def cluster_table(db_path: Path, model_key: str) -> Markdown:
    """Per stored cluster: size, labeled images, most common current label and its share."""
    df = store.rows_with_labels(db_path, tables.CLUSTERS, model_key, ["cluster"])
    rows = []
    for cid, group in df.groupby("cluster", sort=True):
        known = group["label"].dropna()
        top = known.value_counts()
        top_label, share = (top.index[0], top.iloc[0] / len(known)) if len(top) else ("", math.nan)
        rows.append(
            [cid, len(group), len(known), top_label, "" if math.isnan(share) else f"{share:.0%}"]
        )
    header = ["cluster", "size", "labeled", "top label", "top label share"]
    return Markdown(markdown.table(header, rows))


def flagged_table(db_path: Path, model_key: str, list_max: int) -> Markdown:
    """The stored flagged images, highest score first, with their current labels."""
    import pandas as pd

    df = store.rows_with_labels(db_path, tables.ANOMALY_SCORES, model_key, ["score", "flagged"])
    flagged = df[df["flagged"]].sort_values("score", ascending=False, kind="stable")
    listed = [
        [r.image_id, r.path, "" if pd.isna(r.label) else r.label, f"{r.score:.4f}"]
        for r in flagged.head(list_max).itertuples()
    ]
    table = markdown.table(["image_id", "path", "label", "score"], listed)
    if len(flagged) > len(listed):
        more = len(flagged) - len(listed)
        table += f"\n\n…and {more} more: `select * from image_overview where anomaly_flag`"
    return Markdown(table)


def _placed(placed: Placed) -> dict[str, Any]:
    return {"placed": placed.note, "placed_images": placed.images}


def _rounded(value: float | None) -> float | None:
    """Rounded for the metadata; None for a missing or infinite value."""
    return None if value is None or not math.isfinite(value) else round(float(value), 4)
