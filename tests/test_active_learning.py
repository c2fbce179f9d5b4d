"""The classifier → predictions → label_queue loop in real Dagster runs, and its pure parts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks import al_strategies
from embedding_assets.catalog.labels import set_label
from embedding_assets.cli.app import app
from embedding_assets.cli.console import emb_command
from embedding_assets.learning import classifiers as al
from embedding_assets.learning import selection
from resources.storage import DataPaths
from tests.al_helpers import catalog_with_vectors, materialize, query


def test_select_batch_spreads_over_clusters():
    scores = np.array([0.9, 0.89, 0.88, 0.87, 0.5, 0.4, 0.3, 0.2])
    clusters = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    chosen = selection.select_batch(scores, clusters, batch_size=4, max_cluster_share=0.5)
    assert chosen.tolist() == [0, 1, 4, 5]  # pure uncertainty would take all of cluster 0
    # too few clusters to honour the guard: the rest is filled by uncertainty
    assert len(selection.select_batch(scores, np.zeros(8, int), 4, 0.25)) == 4


def test_cluster_margin_covers_clusters_and_prefers_uncertain_items():
    # cluster 0 holds the 4 most uncertain items; clusters 1 and 2 the rest
    scores = np.array([0.99, 0.98, 0.97, 0.96, 0.5, 0.6, 0.3, 0.2, 0.1])
    clusters = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    chosen = al_strategies.cluster_margin(scores, clusters, batch_size=3, candidate_factor=3)
    # one per cluster, smallest cluster first, the most uncertain of each (item 5 over 4):
    # margin alone would take 0, 1, 2
    assert chosen.tolist() == [5, 6, 0]
    # round robin: a second round goes back to the clusters in the same order
    chosen = al_strategies.cluster_margin(scores, clusters, batch_size=5, candidate_factor=3)
    assert chosen.tolist() == [5, 6, 0, 4, 7]
    # only the batch x candidate_factor most uncertain items take part
    assert set(al_strategies.cluster_margin(scores, clusters, 2, 1).tolist()) == {0, 1}
    assert len(al_strategies.cluster_margin(scores, clusters, 20)) == 9


def test_badge_and_kmeanspp_are_diverse_and_deterministic():
    rng = np.random.default_rng(0)
    # two tight groups of near-identical points: a diverse batch of 2 takes one from each
    x = np.concatenate([rng.normal(0, 0.01, (20, 4)) + 5, rng.normal(0, 0.01, (20, 4)) - 5])
    p = np.tile([0.5, 0.5], (40, 1))
    p[:20] = [0.55, 0.45]  # the first group is less uncertain (a smaller gradient)
    picked = al_strategies.badge(p, x, 2, seed=0)
    assert picked[0] >= 20  # the largest gradient first: the most uncertain group
    assert {int(i) >= 20 for i in picked} == {True, False}
    assert picked.tolist() == al_strategies.badge(p, x, 2, seed=0).tolist()
    assert len(set(al_strategies.badge(p, x, 10, seed=1).tolist())) == 10
    scores = selection.uncertainty_score(p, "margin")
    picked = al_strategies.margin_kmeanspp(scores, x, 2, candidate_factor=20, seed=0)
    assert picked[0] == 20 and picked[1] < 20  # most uncertain first, then the other group


def test_random_share_keeps_the_head_and_fills_at_random():
    ranked = np.array([7, 3, 9, 1])
    mixed = al_strategies.with_random_share(ranked, n_pool=100, batch_size=4, share=0.5, seed=0)
    assert mixed[:2].tolist() == [7, 3] and len(set(mixed.tolist())) == 4
    assert mixed.tolist() == al_strategies.with_random_share(ranked, 100, 4, 0.5, seed=0).tolist()


def test_uncertainty_measures_and_plateau():
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.7, 0.3]])
    u = selection.uncertainty(p)
    assert np.allclose(u["least_confident"], [0, 0.5, 0.3])
    assert np.allclose(u["margin"], [1, 0, 0.4])
    assert u["entropy"][1] == pytest.approx(np.log(2)) and u["entropy"][0] == pytest.approx(0)
    assert selection.uncertainty_score(p, "margin").argmax() == 1
    assert not selection.plateaued([0.5, 0.6, 0.7, 0.8], patience=2, min_delta=0.01)
    assert selection.plateaued([0.5, 0.8, 0.801, 0.8], patience=2, min_delta=0.01)


def test_train_handles_few_and_degenerate_labels():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (6, 4)), rng.normal(5, 1, (6, 4)), [[9, 9, 9, 9]]])
    y = np.array(["a"] * 6 + ["b"] * 6 + ["lonely"])
    t = al.train(np.arange(13), x, y, al.TrainSettings(algorithms=("logreg",)))
    assert t.eval_method == "cv5" and t.dropped_classes == {"lonely": 1}
    assert t.metrics["accuracy"] == 1.0 and t.confusion().sum() == 12
    with pytest.raises(al.NotTrainable, match="at least 2 classes"):
        al.train(np.arange(6), x[:6], y[:6])


@pytest.mark.parametrize("per_class", [5, 100])  # cross-validation, held-out split
def test_every_candidate_trains_and_is_timed(per_class: int):
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], per_class)
    x = (rng.normal(size=(3, 16)) * 3)[np.repeat([0, 1, 2], per_class)]
    x = (x + rng.normal(size=x.shape)).astype(np.float32)
    t = al.train(np.arange(len(y)), x, y, al.TrainSettings(algorithms=al.ALGORITHMS))
    assert t.eval_method == ("holdout" if per_class == 100 else "cv5")
    assert set(t.candidates) == set(al.ALGORITHMS)
    assert all(c["fit_seconds"] > 0 and c["accuracy"] > 0.6 for c in t.candidates.values())
    assert t.metrics["macro_f1"] == max(c["macro_f1"] for c in t.candidates.values())
    # PCA never asks for more components than the data has; the MLP stops early only where
    # its stratified 10 % validation share can hold every class
    assert al.make_model("lightgbm_pca", x[:10], y[:10])[0].n_components == 10
    assert al.make_model("mlp", x, y)[-1].early_stopping is (per_class == 100)


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
    assert set(json.loads(versions[0][2])) >= {*al.DEFAULT_CANDIDATES, "chosen"}
    candidates = query(
        data_dir,
        "SELECT candidate, fit_seconds > 0, challenger, promoted FROM classifier_candidates "
        "WHERE version_id = 1 ORDER BY candidate",
    )
    chosen = meta["algorithm"].value
    assert candidates == [
        (c, True, c == chosen, c == chosen) for c in sorted(al.DEFAULT_CANDIDATES)
    ]
    assert "| fit s |" in meta["candidates"].value
    assert "challenger, promoted" in meta["candidates"].value
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

    # No new labels, another seed (the same inputs would reuse v1): the retrained version
    # cannot beat the champion on unseen images.
    second = materialize(data_dir, {"ops": {"classifier": {"config": {"seed": 1}}}})
    meta2 = second.asset_materializations_for_node("classifier")[0].metadata
    assert meta2["promoted"].value is False and "champion stays" in meta2["decision"].value
    gate = second.get_asset_check_evaluations()[0]
    assert not gate.passed and gate.severity.value == "WARN"
    assert second.success, "a kept champion must not block predictions and the queue"
    assert query(data_dir, "SELECT version_id FROM model_versions WHERE champion") == [(1,)]
    assert query(data_dir, "SELECT max(round), count(*) FROM learning_curve") == [(1, 1)]
    assert query(data_dir, "SELECT DISTINCT round FROM label_requests") == [(1,)]

    # New labels for the unlabeled images: compared on exactly those images.
    db = DataPaths(data_dir).catalog_db
    for image_id, _ in query(
        data_dir, "SELECT image_id, 0 FROM images WHERE path LIKE '%/unlabeled/%'"
    ):
        label = query(data_dir, f"SELECT predicted FROM predictions WHERE image_id = {image_id}")
        assert set_label(db, str(image_id), label[0][0]).inserted == 1
    third = materialize(data_dir, {"ops": {"classifier": {"config": {"algorithm": "logreg"}}}})
    decision = third.asset_materializations_for_node("classifier")[0].metadata["decision"].value
    assert "on 4 shared held-out images" in decision
    assert query(data_dir, "SELECT candidate FROM classifier_candidates WHERE version_id = 3") == [
        ("logreg",)
    ]
    assert query(data_dir, "SELECT max(round), count(*) FROM learning_curve") == [(2, 2)]


def test_reruns_without_new_labels_keep_one_round(data_dir: Path, labeled_folder: Path):
    """Reruns with the same labels once added a round each and so tripped the plateau stop.
    (Each run sets another classifier seed: the same inputs would reuse the first version.)"""
    catalog_with_vectors(data_dir, labeled_folder)
    runs = [
        materialize(
            data_dir,
            {
                "ops": {
                    "classifier": {"config": {"seed": seed}},
                    "label_queue": {"config": {"plateau_rounds": 2}},
                }
            },
        )
        for seed in range(3)
    ]
    assert all(r.success for r in runs)
    queue = [r.asset_materializations_for_node("label_queue")[0].metadata for r in runs]
    assert [m["round"].value for m in queue] == [1, 1, 1]
    assert [m["new_round"].value for m in queue] == [True, False, False]
    assert queue[-1]["stop_signal"].value is False
    assert query(data_dir, "SELECT round, version_id FROM learning_curve") == [(1, 3)]
    assert query(data_dir, "SELECT DISTINCT round FROM label_requests") == [(1,)]


def test_no_labels_starts_the_loop_with_a_cold_start_round(data_dir: Path, labeled_folder: Path):
    """Most users start with no labels: the run succeeds, the classifier waits, and the first
    round asks about images that cover the data (one per k-means cluster, not the first few)."""
    for f in (labeled_folder / "unlabeled").iterdir():
        f.unlink()  # of no known class
    for c in ("class_0", "class_1", "class_2"):
        for f in (labeled_folder / c).iterdir():
            f.rename(labeled_folder / "unlabeled" / f"{c}_{f.name}")
    catalog_with_vectors(data_dir, labeled_folder)
    config = {"ops": {"label_queue": {"config": {"batch_size": 3}}}}
    result = materialize(data_dir, config)
    assert result.success
    meta = result.asset_materializations_for_node("classifier")[0].metadata
    assert meta["status"].value == "waiting for labels"
    assert "labels per class: none" in meta["reason"].value and "emb queue" in meta["reason"].value
    gate = result.get_asset_check_evaluations()[0]
    assert not gate.passed and gate.severity.value == "WARN"
    assert result.asset_materializations_for_node("predictions")[0].metadata["images"].value == 0
    queue = result.asset_materializations_for_node("label_queue")[0].metadata
    assert queue["round"].value == 1 and queue["unlabeled_pool"].value == 24
    assert queue["strategy"].value.startswith("cold_start")
    asked = query(
        data_dir,
        "SELECT i.path, r.strategy, r.version_id FROM label_requests r JOIN images i "
        "USING (image_id) ORDER BY rank",
    )
    assert {s for _, s, _ in asked} == {"cold_start"} and {v for *_, v in asked} == {None}
    classes = {Path(p).name[:7] for p, *_ in asked}
    assert classes == {"class_0", "class_1", "class_2"}, asked  # one of each, not 3 of one
    shown = CliRunner().invoke(app, ["queue"]).output.splitlines()
    assert shown[0].split() == ["round", "rank", "image_id", "predicted", "uncertainty", "path"]
    assert [line.split()[-1] for line in shown[1:4]] == [p for p, *_ in asked]
    assert shown[4].startswith("Cold start: no classifier yet, so no prediction or uncertainty")
    assert [line.split()[4] for line in shown[1:4]] == ["-"] * 3, "no uncertainty to show"
    assert shown[5].startswith(f"3 open request(s): label them with `{emb_command()} label import")
    listed = json.loads(CliRunner().invoke(app, ["queue", "--format", "json"]).output)
    assert [(r["rank"], r["predicted"], r["path"]) for r in listed] == [
        (rank, None, p) for rank, (p, *_) in enumerate(asked, start=1)
    ]
    as_csv = CliRunner().invoke(app, ["queue", "-f", "csv"]).output.splitlines()
    assert as_csv[0] == "round,rank,image_id,predicted,uncertainty,path" and len(as_csv) == 4

    # one class labeled: still waiting, and the cold start replaces its round
    db = DataPaths(data_dir).catalog_db
    for (path,) in query(data_dir, "SELECT path FROM images WHERE path LIKE '%class_0_%'")[:2]:
        set_label(db, path, "class_0")
    result = materialize(data_dir, config)
    assert result.success
    assert "'class_0': 2" in result.get_asset_check_evaluations()[0].description
    queue = result.asset_materializations_for_node("label_queue")[0].metadata
    assert queue["round"].value == 1 and queue["unlabeled_pool"].value == 22
    assert query(data_dir, "SELECT count(*) FROM model_versions") == [(0,)]

    # two classes: the first classifier, and the first round chosen by its doubts
    for (path,) in query(data_dir, "SELECT path FROM images WHERE path LIKE '%class_1_%'")[:2]:
        set_label(db, path, "class_1")
    result = materialize(data_dir, config)
    assert result.success
    assert result.asset_materializations_for_node("predictions")[0].metadata["images"].value == 24
    queue = result.asset_materializations_for_node("label_queue")[0].metadata
    assert queue["round"].value == 2 and queue["strategy"].value == "uncertainty (margin)"
    assert query(data_dir, "SELECT round, version_id, n_labels FROM learning_curve") == [
        (1, None, 0),
        (2, 1, 4),
    ]
