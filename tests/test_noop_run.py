"""No-op runs are free: a second run of every asset with nothing new reuses every result
downstream of the embeddings (same data versions, no table row changed), a new label computes
again what depends on labels, and a new image what depends on the embeddings. Real Dagster runs
of the whole job, as `emb run` makes them, on small images with a small random-init backbone."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np

from embedding_assets import definitions
from embedding_assets.catalog.labels import set_label
from embedding_assets.cli.runner import run_everything
from embedding_assets.cli.runs import Runs
from embedding_assets.cli.summary import Pointers, summary_lines
from embedding_assets.common.fingerprints import REUSED, SKIPPED
from embedding_assets.embedding import sets as vectors
from resources.duckdb_store import connect
from resources.paths import DataPaths
from tests.helpers import write_image

SMALL = {"model": "resnet18", "weights": "none", "image_size": 32}
HEAD = {"mode": "head", "loss": "supcon"}  # a projection head over the backbone: seconds
DOWNSTREAM = (
    "clusters",
    "anomaly_scores",
    "projections",
    "similarity_index",
    "published_index",
    "near_duplicates",
    "classifier",
    "predictions",
    "label_queue",
    "map_export",
)
TABLES = (  # every result table; embedding_sets.updated_at marks the current set on each run
    "clusters",
    "anomaly_scores",
    "projections",
    "near_duplicates",
    "faiss_indexes",
    "embedding_models",
    "model_versions",
    "classifier_candidates",
    "predictions",
    "label_requests",
    "learning_curve",
    "asset_fingerprints",
)


def test_embeddings_data_version_is_their_content_not_the_file_time(tmp_path: Path):
    path = tmp_path / "set.parquet"
    x = np.eye(3, dtype=np.float32)
    vectors.write_parquet(path, np.array([3, 1, 2]), ["c", "a", "b"], "key", x)
    version = vectors.content_version(path, "key")
    os.utime(path, ns=(0, 0))
    assert vectors.content_version(path, "key") == version
    vectors.write_parquet(path, np.array([1, 2, 3]), ["a", "b", "c"], "key", x[[1, 2, 0]])
    assert vectors.content_version(path, "key") == version, "rewritten in another order"
    assert vectors.content_version(path, "other-key") != version
    vectors.write_parquet(path, np.array([1, 2, 3]), ["a", "b", "changed"], "key", x)
    assert vectors.content_version(path, "key") != version


def small_config(folder: Path) -> dict:
    return {
        "ops": {
            "image_catalog": {"config": {"image_dir": str(folder)}},
            "embeddings": {"config": SMALL},
            "embedding_model": {"config": {**SMALL, **HEAD, "epochs": 2}},
            "projections": {"config": {"methods": ["pca"]}},
            "classifier": {"config": {"algorithm": "logreg"}},
        }
    }


def _run(folder: Path) -> Runs:
    """One run of every asset (`--full`: a plain `emb run` with nothing new stops after the
    catalog, tests/test_run_state.py): what each asset reuses inside it."""
    result = run_everything(small_config(folder), verbose=False, full=True)
    assert result.success
    return result


def _metadata(result: Runs) -> dict[str, dict]:
    return {
        e.asset_key.to_user_string(): {
            k: v.value for k, v in e.step_materialization_data.materialization.metadata.items()
        }
        for e in result.get_asset_materialization_events()
    }


def _data_versions(result: Runs) -> dict[str, str]:
    return {
        e.asset_key.to_user_string(): e.step_materialization_data.materialization.tags[
            "dagster/data_version"
        ]
        for e in result.get_asset_materialization_events()
    }


def _tables(db: Path) -> dict[str, list[tuple]]:
    with connect(db, read_only=True) as con:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}


def test_nothing_new_reuses_everything_and_new_inputs_recompute_what_depends_on_them(
    data_dir: Path, labeled_folder: Path
):
    importlib.reload(definitions)  # the definitions bind the data directory when imported
    db = DataPaths(data_dir).catalog_db
    first = _run(labeled_folder)
    cold = _metadata(first)
    assert not any(REUSED in cold[a] for a in DOWNSTREAM)
    before = _tables(db)

    second = _run(labeled_folder)
    meta = _metadata(second)
    for asset in DOWNSTREAM:
        assert meta[asset][REUSED].startswith(SKIPPED), (asset, meta[asset][REUSED])
    assert meta["embeddings"]["embedded_now"] == 0 and REUSED in meta["embeddings"]
    assert meta["embedding_model"]["status"] == "unchanged"
    assert _tables(db) == before, "a no-op run changes no result row"
    assert _data_versions(second) == _data_versions(first)
    # a reused result still shows what was measured when it was computed
    assert meta["clusters"]["silhouette"] == cold["clusters"]["silhouette"]
    assert meta["projections"]["pca_map"] == cold["projections"]["pca_map"]
    assert meta["classifier"]["accuracy"] == cold["classifier"]["accuracy"]
    checks = {c.check_name: c.passed for c in second.get_asset_check_evaluations()}
    assert checks["promotion_gate"] is cold["classifier"]["promoted"], "the gate as it was"
    assert checks["similarity_index_recall"] and checks["clusters_cover_all_images"]
    summary = "\n".join(summary_lines(second, 1.0, Pointers(str(db), "home")))
    assert "Reused      " in summary and "(inputs unchanged)" in summary
    assert "Map         emb map" in summary, "the summary says how to open the map"

    # a new label: the classifier, the queue, the kNN figure and the pictures follow it
    unlabeled = sorted((labeled_folder / "unlabeled").glob("*.png"))
    assert set_label(db, str(unlabeled[0]), "class_0").inserted == 1
    third = _run(labeled_folder)
    meta = _metadata(third)
    for asset in ("classifier", "label_queue"):
        assert REUSED not in meta[asset], asset
    assert meta["classifier"]["labeled_images"] == cold["classifier"]["labeled_images"] + 1
    assert meta["similarity_index"][REUSED].startswith("index reused")
    assert meta["similarity_index"]["version"] == cold["similarity_index"]["version"]
    assert (
        meta["similarity_index"]["knn_evaluated"] == cold["similarity_index"]["knn_evaluated"] + 1
    )
    assert meta["projections"][REUSED].startswith("maps reused")
    for asset in ("clusters", "anomaly_scores", "near_duplicates", "published_index"):
        assert meta[asset][REUSED].startswith(SKIPPED), asset
    assert (REUSED in meta["predictions"]) is not meta["classifier"]["promoted"]
    assert meta["embeddings"]["embedded_now"] == 0

    # a new unlabeled image: everything downstream of the embeddings is computed again but the
    # classifier, which the labeled images' features decide
    write_image(labeled_folder / "unlabeled" / "new.png", size=(24, 24), seed=4242)
    fourth = _run(labeled_folder)
    meta = _metadata(fourth)
    assert meta["embeddings"]["embedded_now"] == 1
    for asset in DOWNSTREAM:
        assert (REUSED in meta[asset]) is (asset == "classifier"), asset
    assert REUSED in meta["label_issues"], "the labeled images did not change"
    assert "grown" in meta["neighbor_graph"]["how"], "the graph grew by the new image"
    assert meta["predictions"]["images"] == meta["embeddings"]["usable_images"], "new one predicted"
    assert meta["published_index"]["replaces"] == cold["similarity_index"]["version"]
