"""A corrected label reaches the classifier (issue 40): a champion trained on a label that was
corrected since learned something now known to be wrong, and a held-out comparison cannot see
it (the correction changes no image the champion has not trained on), so the new version that
learned the correction is promoted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from embedding_assets.learning.classifiers import Champion, Training, compare_with_champion
from embedding_assets.learning.registry import corrected_since
from resources.duckdb_store import connect


def _label(db: Path, image_id: int, label: str) -> int:
    with connect(db) as con:
        return con.execute(
            "INSERT INTO labels (image_id, label, source) VALUES (?, ?, 'cli') RETURNING label_id",
            [image_id, label],
        ).fetchone()[0]


def test_corrections_since_a_model_are_counted(tmp_path: Path):
    db = tmp_path / "catalog.duckdb"
    for i, label in enumerate(["cat", "cat", "dog", "dog"]):
        seen = _label(db, i, label)
    assert corrected_since(db, np.arange(4), seen) == 0
    _label(db, 4, "dog")  # a new image: not a correction of what the model saw
    _label(db, 1, "dog")  # corrected
    _label(db, 2, "dog")  # the same label again
    assert corrected_since(db, np.arange(4), seen) == 1
    assert corrected_since(db, np.array([0, 2]), seen) == 0  # not among its training images
    assert corrected_since(db, np.arange(4), None) == 0  # recorded before labels were counted


def _training(x: np.ndarray, y: np.ndarray) -> Training:
    model = LogisticRegression().fit(x[:6], y[:6])
    return Training(
        algorithm="logreg",
        model=model,
        classes=np.array(["cat", "dog"]),
        eval_method="holdout",
        candidates={"logreg": {}},
        eval_ids=np.arange(6, 8),
        eval_x=x[6:],
        eval_y=y[6:],
        eval_proba=model.predict_proba(x[6:]),
        train_ids=np.arange(6),
    )


def test_a_champion_that_learned_a_corrected_label_gives_way():
    x = np.array([[0.0], [0.1], [0.2], [1.0], [1.1], [1.2], [0.05], [1.05]])
    y = np.array(["cat", "cat", "cat", "dog", "dog", "dog", "cat", "dog"])
    new = _training(x, y)

    def champion(corrected: int) -> Champion:
        return Champion(
            1,
            "logreg",
            "f",
            Path("m"),
            {},
            new.model,
            ["cat", "dog"],
            np.arange(6),
            corrected=corrected,
        )

    # as good on the shared held-out images: the champion stays ...
    assert not compare_with_champion(new, champion(0), "f").promoted
    # ... unless it trained on a label corrected since
    decision = compare_with_champion(new, champion(1), "f")
    assert (
        decision.promoted and "1 label(s) the champion trained on were corrected" in decision.reason
    )
