"""The per-image score tables of curation (`label_issues`, `uniqueness`, `outliers`,
`batch_drift` with `ood_scores`), each computed from what it reads into the columns its table
stores and the metadata its asset reports, so the asset only names its inputs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedding_assets.common import markdown, tables
from embedding_assets.common.figures import histogram_markdown, png_markdown
from embedding_assets.common.markdown import Markdown
from embedding_assets.common.results import Scores
from embedding_assets.curation.reports import top_table

if TYPE_CHECKING:
    from embedding_assets.common.neighbor_graph import NeighborGraph
    from embedding_assets.curation.drift import DriftSettings
    from embedding_assets.curation.label_issues import LabelIssueParams
    from embedding_assets.embedding.sets import EmbeddingSet
    from resources.paths import DataPaths


def label_issue_table(paths: DataPaths, params: LabelIssueParams) -> Scores:
    """The labeled images whose label disagrees with the evidence, on the plain backbone
    features the classifier reads."""
    from embedding_assets.catalog.images import image_info
    from embedding_assets.curation.label_issues import find_label_issues
    from embedding_assets.embedding.features import classifier_features

    features = classifier_features(paths)
    info = image_info(paths.catalog_db, features.ids)  # path and label, in the order of ids
    found = find_label_issues(features.ids, features.matrix, info["label"].tolist(), params)
    issues = found[found["issue"].astype(bool)]
    shown = issues.merge(info[["image_id", "path"]], on="image_id", how="left")
    return Scores(
        rows={
            "image_id": issues["image_id"].to_numpy(np.int64),
            "given_label": issues["given_label"].astype(str).tolist(),
            "suggested_label": issues["suggested_label"].astype(str).tolist(),
            "score": issues["score"].to_numpy(np.float64),
        },
        metadata={
            "labeled_images": len(found),
            "flagged": len(issues),
            "top_issues": top_table(
                shown, ["image_id", "given_label", "suggested_label", "score", "path"]
            ),
            "score_histogram": Markdown(
                histogram_markdown(found["score"].to_numpy(float), "label-issue score")
            ),
            "review": "emb queue --label-issues 50 --export review.csv",
        },
        log=f"{len(issues)} of {len(found)} labeled images flagged",
    )


def uniqueness_table(graph: NeighborGraph, k: int) -> Scores:
    """Uniqueness and representativeness of every image over its `k` nearest neighbours."""
    from embedding_assets.curation.uniqueness import uniqueness_scores

    unique, typical = uniqueness_scores(graph.first(k)[0])
    return Scores(
        rows={
            "image_id": graph.ids,
            "uniqueness": unique.astype(np.float64),
            "representativeness": typical.astype(np.float64),
        },
        metadata={
            "images": len(graph.ids),
            "uniqueness_histogram": Markdown(histogram_markdown(unique, "uniqueness")),
        },
    )


def outlier_table(graph: NeighborGraph, k: int, z: float) -> Scores:
    """Every image's distance to its `k` nearest neighbours, flagged over median + z SDs."""
    from embedding_assets.curation.outliers import find_outliers

    ids = graph.ids
    found = find_outliers(graph.first(k)[0], z)
    flagged = int(found.flagged.sum())
    return Scores(
        rows={
            "image_id": ids,
            "distance": found.distance,
            "threshold": np.full(len(ids), found.threshold),
            "flagged": found.flagged,
        },
        metadata={
            "images": len(ids),
            "flagged": flagged,
            "threshold": round(found.threshold, 4),
            "distance_histogram": Markdown(histogram_markdown(found.distance, "kNN distance")),
        },
        log=f"{flagged} of {len(ids)} images are outliers",
    )


def drift_table(db: Path, emb_set: EmbeddingSet, settings: DriftSettings) -> Scores:
    """One verdict per tested batch (`batch_drift`) and the OOD score of each of its images
    (`ood_scores`), with a map of the newest batch against its reference."""
    from embedding_assets.curation import drift
    from embedding_assets.embedding.sets import read_parquet

    ids, vectors = read_parquet(emb_set.parquet_path)
    batch_of = drift.first_seen(db, ids)
    found = drift.batch_drift(ids, vectors, batch_of, settings)
    drifted = sum(v.drifted for v in found.verdicts)
    table = [
        [
            v.batch_id,
            v.images,
            round(v.p_value, 4),
            round(v.p_holm, 4),
            round(v.effect_size, 3),
            v.drifted,
        ]
        for v in found.verdicts
    ]
    columns = ["batch", "images", "p_value", "p_holm", "effect", "drifted"]
    metadata = {
        "batches": len(set(batch_of.tolist())),
        "tested": len(found.verdicts),
        "drifted": drifted,
        "verdicts": Markdown(markdown.table(columns, table)),
    }
    if found.newest is not None:
        figure = png_markdown(drift.drift_map(vectors, *found.newest), "newest batch vs reference")
        metadata["newest_batch_map"] = Markdown(figure)
    return Scores(
        rows=found.verdict_rows(),
        metadata=metadata,
        log=f"{len(found.verdicts)} batches tested, {drifted} drifted",
        more_tables={tables.OOD_SCORES: found.ood_rows()},
    )
