"""Label issues (confident learning + kNN disagreement) on generated clusters with flips."""

from __future__ import annotations

import numpy as np
import pytest

from embedding_assets.curation.label_issues import (
    COLUMNS,
    LabelIssueParams,
    confident_learning,
    find_label_issues,
)


def clusters(n_per=60, n_classes=3, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (n_classes, dim)) * 3
    x = np.concatenate([c + rng.normal(0, 1, (n_per, dim)) for c in centres])
    y = np.repeat(np.array([f"c{i}" for i in range(n_classes)], dtype=object), n_per)
    return x.astype(np.float32), y


def test_flipped_labels_rank_first_with_the_true_label_suggested():
    x, y = clusters()
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(y), 9, replace=False)
    noisy = y.copy()
    for i in flipped:
        noisy[i] = "c0" if y[i] != "c0" else "c1"
    ids = [f"img{i}" for i in range(len(y))]
    rows = find_label_issues(ids, x, noisy, LabelIssueParams(k=10))
    assert list(rows.columns) == COLUMNS and len(rows) == len(y)
    top = rows.head(9)
    flipped_ids = {f"img{i}" for i in flipped}
    assert len(flipped_ids & set(top["image_id"])) >= 8
    found = top[top["image_id"].isin(flipped_ids)]
    truth = {f"img{i}": y[i] for i in flipped}
    assert (found["suggested_label"] == found["image_id"].map(truth)).all()
    assert rows["score"].is_monotonic_decreasing
    assert rows["score"].between(0, 1).all()
    flagged = set(rows.loc[rows["issue"], "image_id"])
    assert len(flagged & flipped_ids) >= 7 and len(flagged) <= 15


def test_unlabeled_and_singleton_classes_are_skipped():
    x, y = clusters(n_per=20)
    labels = list(y)
    labels[0], labels[1], labels[2] = None, "", "lonely"
    rows = find_label_issues(list(range(len(y))), x, labels)
    assert len(rows) == len(y) - 3
    assert not set(rows["image_id"]) & {0, 1, 2}
    assert find_label_issues([0, 1], x[:2], ["a", "a"]).empty


def test_confident_learning_flags_confident_off_diagonal():
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8], [0.95, 0.05]])
    given = np.array([0, 0, 1, 1, 1])  # the last one looks like class 0
    issue, joint = confident_learning(proba, given)
    assert issue.tolist() == [False, False, False, False, True]
    assert joint.sum(axis=1) == pytest.approx([2, 3])
