"""The fine-tune trains again when the labels grew by `retrain_growth` or a class appeared; a
few new labels of known classes leave it (the classifier follows them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedding_assets.embedding.training import LastTraining, why_wait


def labels(counts: dict[str, int]) -> np.ndarray:
    return np.array([name for name, n in counts.items() for _ in range(n)])


def test_a_few_new_labels_of_known_classes_wait():
    last = LastTraining(3, 100, {"cat", "dog"})
    reason = why_wait(last, labels({"cat": 60, "dog": 60}), growth=0.5)
    assert reason is not None
    assert "120 labels, +20 since model 3 was trained on 100" in reason
    assert "grow 50%" in reason and "classifier follows every label" in reason


def test_growth_a_new_class_or_no_training_yet_train():
    last = LastTraining(3, 100, {"cat", "dog"})
    assert why_wait(last, labels({"cat": 75, "dog": 75}), growth=0.5) is None  # grew 50 %
    assert why_wait(last, labels({"cat": 50, "dog": 50, "fox": 1}), growth=0.5) is None
    assert why_wait(None, labels({"cat": 5, "dog": 5}), growth=0.5) is None
    assert why_wait(last, labels({"cat": 50, "dog": 51}), growth=0.0) is None  # on request
    # trainings recorded before classes were kept: growth alone decides
    older = LastTraining(2, 100, None)
    assert why_wait(older, labels({"cat": 50, "dog": 51, "fox": 1}), growth=0.5) is not None


def test_a_champion_trained_on_every_label_is_judged_as_it_was_judged(tmp_path):
    """Its served model saw every labeled image; the comparison uses the trainings it was
    judged with: its two half-trainings, or (recorded before halves) its held-out training on
    the held-out images only. The plain backbone is its own judge, on every image."""
    import json
    from dataclasses import asdict, replace

    import numpy as np

    from embedding_assets.embedding.embedder import EmbedParams
    from embedding_assets.embedding.training import LabeledImages, rival
    from resources.duckdb_store import connect
    from resources.paths import DataPaths

    paths = DataPaths(tmp_path)
    db = paths.catalog_db
    base = EmbedParams("resnet18", None, 32)
    models = {
        name: replace(base, weights=str(tmp_path / f"{name}.pt"), image_size=40 + i)
        for i, name in enumerate(["served", "judged", "new_served", "half0", "half1"])
    }
    for model in models.values():
        Path(model.weights).write_bytes(b"weights")
    keys = np.array([0.1, 0.3, 0.6, 0.9])
    data = LabeledImages([1, 2, 3, 4], ["a"] * 4, ["h"] * 4, np.array(list("aabb")), keys)

    def record(model_id: int, served: str, halves: list[str] | None) -> None:
        with connect(db) as con:
            con.execute(
                "INSERT INTO embedding_models (model_id, fingerprint, base_key, model_key, mode, "
                "loss, config, head_path, n_train, n_eval, epochs_run, best_epoch, "
                "stopped_early, train_seconds, metrics, current_metrics, promoted, decision, "
                "created_at, params, gate_params, half_params) VALUES (?, 'f', ?, ?, "
                "'finetune', 'cosface', '{}', '', 80, 20, 5, 5, false, 1.0, '{}', '{}', true, "
                "'promoted', now(), ?, ?, ?)",
                [
                    model_id,
                    base.model_key(),
                    models[served].model_key(),
                    json.dumps(asdict(models[served])),
                    json.dumps(asdict(models["judged" if halves is None else halves[0]])),
                    None if halves is None else json.dumps([asdict(models[h]) for h in halves]),
                ],
            )

    record(1, "served", None)
    old = rival(paths, models["served"], data, holdout=0.2)
    assert [m.model_key() for m in old.halves] == [models["judged"].model_key()] * 2
    assert old.within.tolist() == [True, False, False, False]

    record(2, "new_served", ["half0", "half1"])
    new = rival(paths, models["new_served"], data, holdout=0.2)
    assert [m.model_key() for m in new.halves] == [
        models["half0"].model_key(),
        models["half1"].model_key(),
    ]
    assert new.within is None

    plain = rival(paths, base, data, holdout=0.2)
    assert plain.halves == (base, base) and plain.within is None


def test_many_labels_are_judged_on_the_held_out_split_few_by_halves():
    """From JUDGED_ENOUGH images below `holdout` by key, one held-out split judges (and the
    training on the rest is served); with fewer, every label is judged by halves."""
    from embedding_assets.embedding.training import JUDGED_ENOUGH, LabeledImages, held_out

    def data(n: int) -> LabeledImages:
        keys = (np.arange(n) + 0.5) / n  # evenly spread content-hash fractions
        return LabeledImages(list(range(n)), ["p"] * n, ["h"] * n, labels({"a": n}), keys)

    assert held_out(data(4 * JUDGED_ENOUGH), holdout=0.2) is None  # 800 held out
    mask = held_out(data(5 * JUDGED_ENOUGH), holdout=0.2)
    assert mask is not None and mask.sum() == JUDGED_ENOUGH and mask[:JUDGED_ENOUGH].all()
