"""Metric learning: evaluation numbers, reproducible training, and the `embedding_model` asset
in real Dagster runs on real digit images (train, promote, reuse, refuse a worse model)."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from embedding_assets.assets.embedding import GATE, embedding_model, embeddings
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.embedding import evaluation as ev
from embedding_assets.embedding.embedder import EmbedParams
from embedding_assets.embedding.heads import embed_features
from embedding_assets.embedding.metric_learning import FitSettings, train_head
from embedding_assets.embedding.train_config import TrainConfig
from embedding_assets.embedding.training import trained_params
from resources.duckdb_store import connect
from resources.storage import DataPaths
from tests.helpers import resources

SIZE = 32
# A random backbone, which a trained head clearly beats: the gate's outcome is then known.
BACKBONE = {"model": "resnet18", "weights": "none", "image_size": SIZE}
HEAD = {"mode": "head", "loss": "supcon"}  # a projection head over the backbone
DIGITS = 800  # images in digits_catalog


def test_precision_at_5_does_not_penalize_small_classes():
    # class "b" has only 2 images: each b query has R = 1 relevant neighbour, scored over top 1
    X = np.array([[1, 0], [0.99, 0.1], [0.98, 0.2], [0.97, 0.25], [0, 1], [0.1, 0.99]], float)
    y = np.array(["a", "a", "a", "a", "b", "b"])
    assert ev.precision_at_k(X, y, 5) == pytest.approx(1.0)
    assert ev.knn_top1(X, y) == 1.0
    swapped = y[[0, 1, 2, 4, 3, 5]]  # one "a" sits among the b's now
    assert ev.knn_top1(X, swapped) < 1.0 and ev.precision_at_k(X, swapped, 5) < 1.0
    assert ev.knn_macro_f1(X, y, k=1) == 1.0
    assert ev.knn_macro_f1(X, y, k=5) < 1.0  # a 5-vote drowns the 2-image class: as it should
    assert ev.evaluate(X, y)["silhouette"] > 0.5


def _blobs(seed: int = 0, n: int = 400, d: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """4 classes told apart by 4 of 32 dimensions; the other 28 are louder noise, which a
    plain kNN suffers from and a learned projection can drop."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    X = rng.normal(size=(n, d))
    X[:, :4] += np.eye(4)[y] * 2.5
    return X.astype(np.float32), y.astype(str)


def test_head_training_is_reproducible_and_learns():
    X, y = _blobs()
    cfg = TrainConfig(
        loss="supcon", embedding_size=16, hidden=64, epochs=30, patience=30, batch_size=64, lr=1e-2
    )
    a = train_head(X[:240], y[:240], FitSettings(cfg), X_val=X[240:300], y_val=y[240:300])
    b = train_head(X[:240], y[:240], FitSettings(cfg), X_val=X[240:300], y_val=y[240:300])
    for (name, p), q in zip(a.head.state_dict().items(), b.head.state_dict().values(), strict=True):
        assert torch_equal(p, q), name
    raw = ev.knn_top1(X[300:], y[300:])
    trained = ev.knn_top1(embed_features(a.head, X[300:]), y[300:])
    assert trained > raw
    assert a.history and {"epoch", "loss", "val_knn_top1"} <= set(a.history[0])


def torch_equal(p, q) -> bool:
    return bool((p == q).all())


@pytest.mark.parametrize("loss", ["contrastive", "triplet", "arcface"])
def test_every_supervised_loss_trains(loss: str):
    X, y = _blobs(1)
    cfg = TrainConfig(loss=loss, embedding_size=8, hidden=32, epochs=2, batch_size=64)
    out = train_head(X, y, FitSettings(cfg))
    assert len(out.history) == 2 and np.isfinite(out.history[-1]["loss"])


@pytest.mark.parametrize(
    ("cfg", "mode", "match"),
    [
        (TrainConfig(loss="hinge"), "head", "loss='hinge'"),
        (TrainConfig(loss="ntxent", augmentation="randaugment"), "head", "finetune"),
        (TrainConfig(loss="ntxent"), "finetune", "augmentation"),
        (TrainConfig(augmentation="mixup"), "head", "augmentation='mixup'"),
        (TrainConfig(loss="cosface", min_steps=-1), "finetune", "min_steps"),
    ],
)
def test_bad_training_config_is_refused_clearly(cfg: TrainConfig, mode: str, match: str):
    with pytest.raises(ValueError, match=match):
        cfg.check(mode)


def test_few_labels_train_a_fine_tune_for_at_least_its_minimum_steps():
    cfg = TrainConfig(loss="cosface", epochs=5, batch_size=32, min_steps=100)
    # 320 labels: 10 steps an epoch; a half of them 5; 500: 16; 10,000 labels keep `epochs`
    assert [cfg.epochs_for(n) for n in (320, 160, 500, 10_000)] == [10, 20, 7, 5]
    assert cfg.epochs_for(30) == 20  # 100 one-batch epochs capped at 4 x epochs
    assert TrainConfig(loss="cosface", epochs=0, min_steps=100).epochs_for(20) == 0
    assert TrainConfig(loss="supcon", epochs=5, min_steps=100).epochs_for(20) == 5
    assert TrainConfig(loss="cosface", epochs=5).epochs_for(20) == 5
    # from the average of the half-trainings: two thirds as many, at least one
    assert [cfg.epochs_for(n, warm=True) for n in (320, 500, 10_000)] == [7, 5, 4]
    assert TrainConfig(loss="cosface", epochs=1).epochs_for(10_000, warm=True) == 1


@pytest.fixture
def digits_catalog(data_dir: Path, tmp_path: Path, one_thread: None) -> DataPaths:
    """DIGITS real handwritten digits (10 classes), labeled by folder, in a real catalog, each
    over one of four loud textures (40 % of the pixel): the random backbone's neighbours follow
    the texture, a trained head learns to look past it, a gain the gate can tell over all 800
    judged images (plain, the random backbone's kNN top-1 is already 0.96 and no head beats
    it). Torch on one thread: see `one_thread`."""
    digits = load_digits()
    folder = tmp_path / "digits"
    textures = np.random.default_rng(0).uniform(0, 255, size=(4, SIZE, SIZE))
    for i in range(DIGITS):
        path = folder / str(digits.target[i]) / f"d{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grey = (digits.images[i] * (255 / 16)).astype(np.uint8)
        digit = np.asarray(Image.fromarray(grey).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
        textured = 0.6 * digit + 0.4 * textures[i % len(textures)]
        Image.fromarray(np.clip(textured, 0, 255).astype(np.uint8)).save(path)
    paths = DataPaths(data_dir)
    scan_catalog(paths.catalog_db, folder)
    return paths


def _run(data_dir: Path, model_config: dict, with_embeddings: bool = True):
    config = {"ops": {"embedding_model": {"config": {**BACKBONE, **model_config}}}}
    assets = [embedding_model]
    if with_embeddings:
        config["ops"]["embeddings"] = {"config": {**BACKBONE, "workers": 0}}
        assets.append(embeddings)
    return dg.materialize(
        assets,
        run_config=config,
        resources=resources(data_dir),
        raise_on_error=False,
    )


def _models(paths: DataPaths) -> list[tuple]:
    with connect(paths.catalog_db, read_only=True) as con:
        return con.execute(
            "SELECT model_id, promoted, metrics, current_metrics, n_eval FROM embedding_models "
            "ORDER BY model_id"
        ).fetchall()


def test_train_promote_reuse_and_refuse_a_worse_model(data_dir: Path, digits_catalog: DataPaths):
    settings = {**HEAD, "epochs": 25, "embedding_size": 32, "hidden": 128}
    good = _run(data_dir, settings)
    assert good.success
    meta = good.asset_materializations_for_node("embedding_model")[0].metadata
    assert meta["status"].value == "trained", meta["decision"].value
    assert meta["held_out_knn_top1"].value >= meta["current_knn_top1"].value
    assert {"held_out_precision_at_5", "held_out_knn_macro_f1", "held_out_silhouette"} <= set(meta)
    assert [c.passed for c in good.get_asset_check_evaluations() if c.check_name == GATE] == [True]
    (model_id, promoted, metrics, current, n_eval) = _models(digits_catalog)[0]
    assert promoted and n_eval >= 20
    assert json.loads(current)["name"] == "the plain backbone"
    emb_meta = good.asset_materializations_for_node("embeddings")[0].metadata
    assert "-head-" in emb_meta["model_key"].value and emb_meta["dimension"].value == 32
    base = EmbedParams("resnet18", None, SIZE)
    champion_params = trained_params(digits_catalog, base)
    assert champion_params.head and champion_params.model_key() == emb_meta["model_key"].value

    again = _run(data_dir, settings, False)
    assert again.success
    assert (
        again.asset_materializations_for_node("embedding_model")[0].metadata["status"].value
        == "unchanged"
    )
    assert len(_models(digits_catalog)) == 1  # same labels and settings: nothing retrained

    # An untrained (random) head is deliberately worse: not promoted, the check warns, and the
    # run goes on: embeddings keep using the champion.
    worse = _run(data_dir, {**settings, "epochs": 0, "seed": 7})
    assert worse.success
    gate = [c for c in worse.get_asset_check_evaluations() if c.check_name == GATE]
    assert [(c.passed, c.severity) for c in gate] == [(False, dg.AssetCheckSeverity.WARN)]
    assert "not promoted, keeping model" in gate[0].metadata["decision"].value
    rows = _models(digits_catalog)
    assert len(rows) == 2 and rows[1][1] is False
    assert json.loads(rows[1][3])["name"] == f"model {model_id}"
    worse_emb = worse.asset_materializations_for_node("embeddings")[0].metadata
    assert worse_emb["model_key"].value == emb_meta["model_key"].value
    assert worse_emb["embedded_now"].value == 0  # the champion's vectors, all from the cache
    assert trained_params(digits_catalog, base) == champion_params


def test_finetune_mode_serves_its_own_trunk(data_dir: Path, digits_catalog: DataPaths):
    run = _run(
        data_dir,
        {
            "mode": "finetune",
            "loss": "supcon",
            "epochs": 1,
            "embedding_size": 16,
            "hidden": 64,
            "batch_size": 64,
        },
    )
    assert run.success  # promoted or not, the run goes on
    with connect(digits_catalog.catalog_db, read_only=True) as con:
        trunk, key, promoted = con.execute(
            "SELECT trunk_path, model_key, promoted FROM embedding_models"
        ).fetchall()[0]
    assert digits_catalog.resolve(trunk).is_file() and key.startswith("resnet18-file-head-")
    [gate] = [c for c in run.get_asset_check_evaluations() if c.check_name == GATE]
    assert gate.passed is promoted
    used = run.asset_materializations_for_node("embeddings")[0].metadata["model_key"].value
    assert (used == key) is promoted


def test_too_few_labels_skips_and_keeps_the_plain_backbone(data_dir: Path, tmp_path: Path):
    folder = tmp_path / "few"
    for i in range(6):
        path = folder / ("a" if i % 2 else "b") / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (SIZE, SIZE), 40 * i).save(path)
    paths = DataPaths(data_dir)
    scan_catalog(paths.catalog_db, folder)
    run = _run(data_dir, {}, True)
    assert run.success
    meta = run.asset_materializations_for_node("embedding_model")[0].metadata
    assert meta["status"].value == "skipped" and "label more" in meta["decision"].value
    assert (
        "-head-"
        not in run.asset_materializations_for_node("embeddings")[0].metadata["model_key"].value
    )


def test_many_labels_judge_one_training_on_a_held_out_split(
    data_dir: Path, digits_catalog: DataPaths, monkeypatch: pytest.MonkeyPatch
):
    """With enough held-out images (`training.JUDGED_ENOUGH`, lowered here for 800 digits) one
    training on the rest is judged on the held-out split and served as it was judged, with no
    second training; the next challenger is judged on the same images, which neither saw."""
    from embedding_assets.embedding import training

    monkeypatch.setattr(training, "JUDGED_ENOUGH", 100)
    settings = {**HEAD, "epochs": 25, "embedding_size": 32, "hidden": 128}
    assert _run(data_dir, settings, False).success
    query = (
        "SELECT n_train, n_eval, half_params, params, gate_params, decision, promoted "
        "FROM embedding_models ORDER BY model_id"
    )
    with connect(digits_catalog.catalog_db, read_only=True) as con:
        [(n_train, n_eval, halves, served, judged, decision, promoted)] = con.execute(
            query
        ).fetchall()
    assert promoted, decision
    assert n_train + n_eval == DIGITS and 100 <= n_eval <= 0.3 * DIGITS
    assert halves is None and served == judged  # the judged training is the served one
    assert "held out by content hash (20%)" in decision and "served as trained" in decision

    worse = _run(data_dir, {**settings, "epochs": 0, "seed": 7}, False)
    assert worse.success
    with connect(digits_catalog.catalog_db, read_only=True) as con:
        rows = con.execute(query).fetchall()
    assert rows[1][6] is False and rows[1][1] == n_eval, rows[1][5]
    assert "not promoted, keeping model 1" in rows[1][5]
