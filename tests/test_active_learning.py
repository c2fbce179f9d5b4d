"""The classifier → predictions → label_queue loop in real Dagster runs, and its pure parts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedding_assets import active_learning as al
from embedding_assets.cli import app
from embedding_assets.labels import set_label
from resources.storage import DataPaths
from tests.al_helpers import catalog_with_vectors, materialize, query


def test_select_batch_spreads_over_clusters():
    scores = np.array([0.9, 0.89, 0.88, 0.87, 0.5, 0.4, 0.3, 0.2])
    clusters = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    chosen = al.select_batch(scores, clusters, batch_size=4, max_cluster_share=0.5)
    assert chosen.tolist() == [0, 1, 4, 5]  # pure uncertainty would take all of cluster 0
    # too few clusters to honour the guard: the rest is filled by uncertainty
    assert len(al.select_batch(scores, np.zeros(8, int), 4, 0.25)) == 4


def test_uncertainty_measures_and_plateau():
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.7, 0.3]])
    u = al.uncertainty(p)
    assert np.allclose(u["least_confident"], [0, 0.5, 0.3])
    assert np.allclose(u["margin"], [1, 0, 0.4])
    assert u["entropy"][1] == pytest.approx(np.log(2)) and u["entropy"][0] == pytest.approx(0)
    assert al.uncertainty_score(p, "margin").argmax() == 1
    assert not al.plateaued([0.5, 0.6, 0.7, 0.8], patience=2, min_delta=0.01)
    assert al.plateaued([0.5, 0.8, 0.801, 0.8], patience=2, min_delta=0.01)


def test_train_handles_few_and_degenerate_labels():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (6, 4)), rng.normal(5, 1, (6, 4)), [[9, 9, 9, 9]]])
    y = np.array(["a"] * 6 + ["b"] * 6 + ["lonely"])
    t = al.train(np.arange(13), x, y, algorithms=("logreg",))
    assert t.eval_method == "cv5" and t.dropped_classes == {"lonely": 1}
    assert t.metrics["accuracy"] == 1.0 and t.confusion().sum() == 12
    with pytest.raises(al.NotTrainable, match="at least 2 classes"):
        al.train(np.arange(6), x[:6], y[:6])


def test_loop_trains_promotes_predicts_and_queues(data_dir: Path, labeled_folder: Path, tmp_path):
    catalog_with_vectors(data_dir, labeled_folder)
    first = materialize(data_dir, {"ops": {"label_queue": {"config": {"batch_size": 2}}}})
    assert first.success
    meta = first.asset_materializations_for_node("classifier")[0].metadata
    assert meta["status"].value == "trained" and meta["promoted"].value is True
    assert meta["eval_method"].value.startswith("cv") and meta["accuracy"].value >= 0.9
    assert "data:image/png;base64," in meta["confusion_matrix"].value
    assert [c.passed for c in first.get_asset_check_evaluations()] == [True]
    versions = query(data_dir, "SELECT version_id, champion, metrics FROM model_versions")
    assert len(versions) == 1 and versions[0][1] is True
    assert set(json.loads(versions[0][2])) >= {"logreg", "lightgbm", "chosen"}
    assert query(data_dir, "SELECT count(*), min(least_confident) >= 0 FROM predictions") == [
        (28, True)
    ]
    queue = query(data_dir, "SELECT round, image_id FROM label_requests ORDER BY rank")
    unlabeled = {
        r[0] for r in query(data_dir, "SELECT image_id FROM images WHERE path LIKE '%/unlabeled/%'")
    }
    assert len(queue) == 2 and {q[0] for q in queue} == {1} and {q[1] for q in queue} <= unlabeled

    out = tmp_path / "queue.csv"
    res = CliRunner().invoke(app, ["queue", "--export", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 and Path(rows[0]["path"]).exists() and rows[0]["label"] == ""

    # No new labels: the retrained version cannot beat the champion on unseen images.
    second = materialize(data_dir)
    meta2 = second.asset_materializations_for_node("classifier")[0].metadata
    assert meta2["promoted"].value is False and "champion stays" in meta2["decision"].value
    gate = second.get_asset_check_evaluations()[0]
    assert not gate.passed and gate.severity.value == "WARN"
    assert second.success, "a kept champion must not block predictions and the queue"
    assert query(data_dir, "SELECT version_id FROM model_versions WHERE champion") == [(1,)]
    assert query(data_dir, "SELECT max(round), count(*) FROM learning_curve") == [(2, 2)]

    # New labels for the unlabeled images: compared on exactly those images.
    db = DataPaths(data_dir).catalog_db
    for image_id, _ in query(
        data_dir, "SELECT image_id, 0 FROM images WHERE path LIKE '%/unlabeled/%'"
    ):
        label = query(data_dir, f"SELECT predicted FROM predictions WHERE image_id = {image_id}")
        assert set_label(db, str(image_id), label[0][0]).inserted == 1
    third = materialize(data_dir)
    decision = third.asset_materializations_for_node("classifier")[0].metadata["decision"].value
    assert "on 4 shared held-out images" in decision


def test_single_class_skips_training_and_blocks_downstream(data_dir: Path, labeled_folder: Path):
    for c in ("class_1", "class_2"):
        for f in (labeled_folder / c).iterdir():
            f.rename(labeled_folder / "unlabeled" / f"{c}_{f.name}")
    catalog_with_vectors(data_dir, labeled_folder)
    result = materialize(data_dir)
    meta = result.asset_materializations_for_node("classifier")[0].metadata
    assert meta["status"].value == "skipped"
    assert "need at least 2 classes" in meta["reason"].value
    gate = result.get_asset_check_evaluations()[0]
    assert not gate.passed and gate.severity.value == "ERROR"
    assert not result.asset_materializations_for_node("predictions")
    assert query(data_dir, "SELECT count(*) FROM model_versions") == [(0,)]
