"""The fine-tune trains again when the labels grew by `retrain_growth` or a class appeared; a
few new labels of known classes leave it (the classifier follows them)."""

from __future__ import annotations

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
