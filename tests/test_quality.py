"""The default answers on real photos (issue 27): a fine-tuned backbone served without a centre
crop, trained within its time budget, calibrated classifier probabilities, a k that does not
settle below the label classes, and the hyper-parameter search, on real digits in real runs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch

from embedding_assets.analytics.clustering import ClusterParams, cluster, purity
from embedding_assets.assets.embedding import GATE, embedding_model, embeddings
from embedding_assets.assets.learning import classifier
from embedding_assets.configs.embedding import EmbeddingModelConfig
from embedding_assets.embedding import finetune
from embedding_assets.embedding.backbones import resolve_spec
from embedding_assets.embedding.embedder import EmbedParams
from embedding_assets.embedding.finetune import finetune_classifier
from embedding_assets.embedding.metric_learning import FitSettings
from embedding_assets.embedding.train_config import TrainConfig
from embedding_assets.embedding.trunk_split import split_at_stride
from embedding_assets.learning import calibration, tuning
from embedding_assets.learning.calibration import Calibrated
from resources.duckdb_store import connect
from resources.storage import DataPaths
from tests.helpers import resources
from tests.test_embedding_model import BACKBONE, digits_catalog  # noqa: F401 - the fixture


def test_the_crop_choice_keeps_the_whole_of_a_small_photo():
    own = resolve_spec("efficientnet_lite0", "DEFAULT", 160).preprocess
    whole = resolve_spec("efficientnet_lite0", "DEFAULT", 160, center_crop=False).preprocess
    assert (own.resize, own.crop) == (182, 160)  # the weights' crop_pct 0.875 cuts 12 %
    assert (whole.resize, whole.crop) == (160, 160)
    uncut = EmbedParams(image_size=160, center_crop=False)
    assert uncut.model_key() != EmbedParams(image_size=160).model_key()
    assert EmbedParams().model_key() == EmbedParams(center_crop=True).model_key()


def test_the_time_budget_stops_training_before_an_epoch_that_would_not_fit():
    images = torch.randint(0, 255, (24, 3, 32, 32), dtype=torch.uint8)
    labels = np.array(["a", "b", "c"] * 8)
    trunk = EmbedParams("resnet18", None, 32).build(allow_download=False)

    def train(budget: float):
        backbone = EmbedParams("resnet18", None, 32).build(allow_download=False)
        cfg = TrainConfig(loss="cosface", epochs=3, batch_size=8, time_budget_s=budget)
        return finetune_classifier(backbone, images, labels, FitSettings(cfg))

    cut = train(1e-6)
    assert len(cut.history) == 1 and cut.stopped_early and cut.history[0]["epochs"] == 1
    whole = train(0.0)
    assert len(whole.history) == 3 and not whole.stopped_early
    assert whole.classes == ["a", "b", "c"] and whole.head is None
    assert trunk.dim == whole.classifier.weight.shape[1]


def test_the_backbone_batchnorm_statistics_stay_frozen():
    images = torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8)
    backbone = EmbedParams("resnet18", None, 32).build(allow_download=False)
    bn = backbone.model.layer4[1].bn2  # in the trained stages
    before = bn.running_mean.clone()
    cfg = TrainConfig(loss="cosface", epochs=1, batch_size=8)
    labels = np.array(["a", "b"] * 8)
    out = finetune_classifier(backbone, images, labels, FitSettings(cfg))
    trained = out.backbone.layer4[1].bn2
    assert torch.equal(trained.running_mean, before)
    assert not torch.equal(trained.weight, torch.ones_like(before)), "affine trains"


@pytest.mark.parametrize(
    ("params", "stride", "frozen"),
    [
        (EmbedParams(), 8, "blocks.2"),  # EfficientNet-Lite0, its packaged weights
        (EmbedParams("resnet18", None, 32), 8, "layer2"),
        (EmbedParams("resnet18", None, 32), 16, "layer3"),
    ],
)
def test_the_split_trunk_computes_the_same_features(params, stride, frozen):
    trunk = params.build(allow_download=False).model
    split = split_at_stride(trunk, stride)
    assert split is not None and split.stride == stride
    names = {id(m): n for n, m in trunk.named_modules()}
    assert frozen in {names.get(id(m)) for m in split.prefix}, "cut after that stage"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(split.tail(split.prefix(x)), trunk(x), atol=1e-5)
    assert split_at_stride(trunk, 0) is None
    assert split_at_stride(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), 8) is None


@pytest.mark.parametrize("stored", [True, False], ids=["stored outputs", "every step"])
def test_the_frozen_stages_stay_pretrained_and_the_rest_trains(stored, monkeypatch):
    """With the frozen stages' outputs stored once (flips, shifts) or, when they would not fit
    in memory, run on every step (random-resized crops): the same split."""
    if not stored:
        monkeypatch.setattr(finetune, "FROZEN_CACHE_BYTES", 0)
    images = torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8)
    labels = np.array(["a", "b"] * 8)
    backbone = EmbedParams("resnet18", None, 32).build(allow_download=False)
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    cfg = TrainConfig(loss="cosface", epochs=2, batch_size=8)
    out = finetune_classifier(backbone, images, labels, FitSettings(cfg))
    after = out.backbone.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert out.frozen_stride == 8
    assert changed == {"layer3", "layer4"}, changed
    whole = TrainConfig(loss="cosface", epochs=1, batch_size=8, frozen_stride=0)
    fresh = EmbedParams("resnet18", None, 32).build(allow_download=False)
    out = finetune_classifier(fresh, images, labels, FitSettings(whole))
    assert out.frozen_stride == 0 and not torch.equal(
        out.backbone.conv1.weight, before["conv1.weight"]
    )


def test_the_served_training_starts_from_the_average_of_the_half_trainings():
    """Trunks averaged weight by weight, each class's unit weights over the trainings that had
    it; a warm start with no epochs returns exactly that start."""
    images = torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8)
    cfg = TrainConfig(loss="cosface", epochs=1, batch_size=8)

    def half(labels: list[str]):
        backbone = EmbedParams("resnet18", None, 32).build(allow_download=False)
        return finetune_classifier(backbone, images, np.array(labels * 8), FitSettings(cfg))

    one, two = half(["a", "b"]), half(["c", "b"])  # other targets: another training
    start = finetune.averaged([one, two])
    w1, w2 = one.backbone.layer4[1].conv2.weight, two.backbone.layer4[1].conv2.weight
    assert not torch.equal(w1, w2)
    assert torch.allclose(start.trunk["layer4.1.conv2.weight"], (w1 + w2) / 2)
    unit = torch.nn.functional.normalize
    b = unit(unit(one.classifier.weight[1], dim=0) + unit(two.classifier.weight[0], dim=0), dim=0)
    assert torch.allclose(start.class_weights["b"], b, atol=1e-6)
    assert set(start.class_weights) == {"a", "b", "c"}
    fresh = EmbedParams("resnet18", None, 32).build(allow_download=False)
    labels = np.array(["a", "b", "c", "d"] * 4)
    none = replace(cfg, epochs=0)
    out = finetune_classifier(fresh, images, labels, FitSettings(none), start=start)
    assert torch.allclose(out.backbone.layer4[1].conv2.weight, (w1 + w2) / 2)
    assert torch.allclose(out.classifier.weight[1], b, atol=1e-6)
    assert out.classes == ["a", "b", "c", "d"]  # "d", in no half-training, keeps a random row


def test_temperature_scaling_makes_overconfident_probabilities_honest():
    rng = np.random.default_rng(0)
    n, c = 2000, 5
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += 1.0  # right about half the time...
    over = calibration.tempered(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 0.2)
    assert over.max(axis=1).mean() > 0.8  # ...but mostly sure
    found = calibration.calibrate(over, y)
    assert found.temperature > 2  # undoes the sharpening
    assert found.ece_before > 0.3 and found.ece_after < 0.05
    assert (found.cross_fitted.argmax(1) == over.argmax(1)).all(), "no prediction changes"

    class Over:
        classes_ = np.arange(c)

        def predict_proba(self, x):
            return over[x[:, 0].astype(int)]

    calibrated = Calibrated(Over(), found.temperature).predict_proba(np.arange(n)[:, None])
    assert calibration.ece(calibrated, y) < 0.05


def test_auto_k_does_not_settle_below_the_label_classes():
    rng = np.random.default_rng(0)
    # two far groups, each of three classes: the silhouette alone prefers 2
    centres = np.array([[10, 0], [10.6, 0], [10, 0.6], [-10, 0], [-10.6, 0], [-10, 0.6]])
    y = np.repeat(np.arange(6), 40)
    x = centres[y] + rng.normal(scale=0.15, size=(len(y), 2))
    coarse = cluster(x, ClusterParams(k="auto", k_min=2, k_max=8))
    assert coarse.k == 2
    guided = cluster(x, ClusterParams(k="auto", k_min=2, k_max=8, label_classes=6))
    assert guided.k >= 6 and min(guided.sweep) == 6
    labels = np.array([str(v) for v in y], dtype=object)
    assert purity(guided.labels, labels) > 0.9 > purity(coarse.labels, labels)
    labels[::2] = None
    assert purity(guided.labels, labels) > 0.9  # unlabeled images do not count


def test_the_search_keeps_its_trials_and_never_ends_below_the_defaults():
    rng = np.random.default_rng(1)
    y = np.repeat(np.array(["a", "b", "c"]), 60)
    x = rng.normal(size=(len(y), 8)) + (np.arange(3).repeat(60)[:, None] == np.arange(8)) * 1.5
    from embedding_assets.learning.classifiers import proba, timed_fit

    def scores(params, train, test):
        model, _ = timed_fit("logreg", x[train], y[train], **params)
        return proba(model, x[test], np.unique(y))

    # bounded by trials, not seconds: a loaded machine runs the same six
    found = tuning.search("logreg", x, y, scores, tuning.SearchSettings(600, max_trials=6))
    assert found is not None and len(found.trials) == 6
    assert found.trials[0].params == {"C": tuning.LOGREG_C}  # the default is the first trial
    assert min(t.log_loss for t in found.trials) == next(
        t.log_loss for t in found.trials if t.params == found.best
    )
    assert tuning.search("cosine_head", x, y, scores, tuning.SearchSettings(1)) is None


def _materialize(data_dir: Path, assets, ops: dict):
    return dg.materialize(
        assets,
        run_config={"ops": {name: {"config": cfg} for name, cfg in ops.items()}},
        resources=resources(data_dir),
        raise_on_error=False,
    )


def test_the_default_fine_tune_serves_its_trunk_and_the_classifier_weighs_its_head(
    data_dir: Path,
    digits_catalog: DataPaths,  # noqa: F811 - the fixture imported above
):
    """embedding_model's defaults (finetune, cosface) on 800 real digits: the trunk alone is
    the embedding, served at the training size without a crop; the classifier compares the
    trained cosine head with the fitted candidates on the same held-out images, calibrates,
    and records its search."""
    small = {"train_image_size": 32, "epochs": 3}
    run = _materialize(
        data_dir,
        [embedding_model, embeddings, classifier],
        {
            "embedding_model": {**BACKBONE, **small},
            "embeddings": {**BACKBONE, "workers": 0},
            "classifier": {"search_budget_s": 6, "search_min_labels": 200},
        },
    )
    assert run.success
    meta = run.asset_materializations_for_node("embedding_model")[0].metadata
    assert meta["status"].value == "trained" and meta["time_budget_s"].value == 120
    assert meta["train_image_size"].value == 32
    [gate] = [c for c in run.get_asset_check_evaluations() if c.check_name == GATE]
    with connect(digits_catalog.catalog_db, read_only=True) as con:
        row = con.execute(
            "SELECT head_path, trunk_path, classifier_path, params, promoted, model_key, "
            "gate_params, decision, epochs_run, n_train FROM embedding_models"
        ).fetchone()
        versions = con.execute("SELECT ece, temperature FROM model_versions").fetchall()
        candidates = dict(
            con.execute("SELECT candidate, ece FROM classifier_candidates").fetchall()
        )
        trials = con.execute("SELECT DISTINCT candidate FROM classifier_trials").fetchall()
    head, trunk, classifier_path, params, promoted, key, judged, decision, epochs, n_train = row
    assert head is None and trunk and classifier_path
    served = json.loads(params)
    assert served["center_crop"] is False and served["image_size"] == 32
    assert key.startswith("resnet18-file-32px-") and gate.passed is promoted
    emb_key = run.asset_materializations_for_node("embeddings")[0].metadata["model_key"].value
    assert (emb_key == key) is promoted
    compared_on = run.asset_materializations_for_node("classifier")[0].metadata["compared_on"]
    if promoted:  # judged without the held-out images, then trained again on every label
        assert "cosine_head" in candidates
        # from the average of the half-trainings, two thirds of the epochs of a cold start
        cfg = EmbeddingModelConfig(**BACKBONE, **small).train_config()
        warm = cfg.epochs_for(n_train, warm=True)
        assert epochs == warm >= 1
        assert f"every label ({epochs} epochs, from the average of the half-trainings)" in decision
        assert json.loads(judged)["weights"] != served["weights"]
        assert "blind to the held-out images" in compared_on.value
    else:
        assert json.loads(judged) == served
    assert all(0 <= e <= 1 for e in candidates.values())
    [(ece, temperature)] = versions
    assert 0 <= ece <= 1 and temperature > 0
    assert {c for (c,) in trials} >= {"logreg"}


def test_no_search_below_its_minimum_labels():
    from embedding_assets.learning.classifiers import TrainSettings, train

    rng = np.random.default_rng(2)
    y = np.repeat(np.array(["a", "b"]), 30)
    x = rng.normal(size=(60, 4)) + (y == "a")[:, None]
    settings = TrainSettings(holdout_min_labels=10, search_budget_s=5, search_min_labels=100)
    training = train(np.arange(60), x, y, settings)
    assert training.searches == [] and training.eval_method == "holdout"
    assert isinstance(training.model, Calibrated)


def test_a_clear_win_on_a_small_held_out_set_is_promoted_and_noise_is_not():
    """The paired exact sign test: on 37 held-out photos, 20 won and 7 lost (about the user
    trial's fine-tune at 20 labels per class) promote; 9 won and 7 lost do not; fewer than
    MIN_EVAL held-out images decide nothing whatever the split."""
    from embedding_assets.common.promotion import MIN_EVAL, decide, sign_test

    def hits(right: int, n: int) -> np.ndarray:
        return np.arange(n) < right

    challenger, current = hits(20, 37), np.zeros(37, bool)
    current[30:] = True  # right only where the challenger is wrong
    clear = decide(challenger, current)
    assert (clear.wins, clear.losses) == (20, 7) and clear.promoted, clear.reason
    noisy = decide(hits(9, 37), np.r_[np.zeros(9, bool), np.ones(7, bool), np.zeros(21, bool)])
    assert (noisy.wins, noisy.losses) == (9, 7) and not noisy.promoted
    assert "p = " in noisy.reason
    tiny = decide(hits(MIN_EVAL - 1, MIN_EVAL - 1), np.zeros(MIN_EVAL - 1, bool))
    assert not tiny.promoted and "need" in tiny.reason
    assert sign_test(5, 0) == 1 / 32 and sign_test(0, 0) == 1.0
    assert sign_test(3, 3) == 0.65625  # 42 of 64 outcomes have at least 3 wins
