"""The champion classifier's predictions for every image with an embedding: what the
`predictions` asset writes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedding_assets.learning import classifiers, registry
from resources.paths import DataPaths

CHUNK = 65_536  # images per probability batch


@dataclass(frozen=True)
class Predicted:
    version_id: int
    images: int
    per_class: dict[str, int]  # images predicted as each class
    means: dict[str, float]  # mean uncertainty per measure

    def figures(self) -> dict:
        """What the `predictions` asset reports, as plain values."""
        means = {f"mean_{k}": round(v, 4) for k, v in self.means.items()}
        per_class = {"predicted_per_class": self.per_class}
        return {"images": self.images, "version_id": self.version_id, **per_class, **means}


def predict_all(paths: DataPaths) -> Predicted:
    """Predict every image with the champion on the features it was trained on and replace the
    `predictions` rows; LookupError saying what to materialize when that is impossible."""
    from embedding_assets.embedding.features import classifier_features

    db = paths.catalog_db
    champ = registry.champion(paths)
    if champ is None:
        raise LookupError("The champion's model file is missing: materialize `classifier` again.")
    found = classifier_features(paths)
    features, ids, vectors = found.key, found.ids, found.matrix
    if champ.embedding_key != features:
        raise LookupError(
            f"The champion v{champ.version_id} was trained on features {champ.embedding_key}, "
            f"the current ones are {features}: materialize `classifier` again."
        )
    classes = np.asarray(champ.classes)
    batches = [
        classifiers.proba(champ.model, vectors[s : s + CHUNK], classes)
        for s in range(0, len(ids), CHUNK)
    ]
    p = np.concatenate(batches) if batches else np.zeros((0, len(classes)))
    means = registry.write_predictions(db, champ.version_id, ids, classes, p)
    found, counts = np.unique(classes[p.argmax(axis=1)], return_counts=True)
    per_class = {str(k): int(v) for k, v in zip(found, counts, strict=True)}
    return Predicted(champ.version_id, len(ids), per_class, means)
