"""How a new embedding model is judged against the current one: on every labeled image.

The labeled images fall into two halves by content hash (`halves`). A challenger is trained
twice, each time on one half, and each training judges the half it left out; the current model
is judged on the same halves by the models of it that left them out (a champion keeps the two
half-trainings it was judged with; the plain backbone trained on nothing). So every labeled
image is judged once, by models that never trained on it, and the paired exact test
(`common.promotion`) decides over all of them: on a 20 % held-out split a 240-label folder gave
48 images, where 4 wins and no loss (a fine-tune at 1.000 against 0.917) could never pass.

An image keeps its half as labels grow, so a champion's half-trainings stay blind to the half
they judge, whatever was labeled since. With many labels (`training.held_out`) the judged
images are a held-out split inside half 0 (`within`), and one training judges it for both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from embedding_assets.embedding.embedder import EmbedParams
    from embedding_assets.embedding.run_options import RunOptions
    from resources.paths import DataPaths

HALVES = 2


@dataclass
class LabeledImages:
    """The labeled usable images in one order: what a training learns from and the gate
    judges."""

    image_ids: list[int]
    fs_paths: list[str | bytes]
    hashes: list[str]
    labels: np.ndarray
    keys: np.ndarray  # content-hash fraction in [0, 1): the image's half (`judging.halves`)

    def subset(self, mask: np.ndarray) -> tuple[list, list, np.ndarray]:
        idx = np.flatnonzero(mask)
        return [self.fs_paths[i] for i in idx], [self.hashes[i] for i in idx], self.labels[idx]


def halves(keys: np.ndarray) -> np.ndarray:
    """The half of each labeled image (0 or 1) from its content-hash fraction in [0, 1): half
    0 holds every image of a held-out split of at most 0.5 by key (`learning.classifiers.
    holdout_mask`, except the one image it adds to a class with none below the fraction)."""
    return (np.asarray(keys) >= 0.5).astype(np.int8)


@dataclass(frozen=True)
class Judgement:
    """Per judged image (labeled order, only those in `judged`): does its nearest judged
    neighbour in its half share its label; and the metrics, weighted over the halves."""

    hits: np.ndarray  # bool, one per judged image
    judged: np.ndarray  # bool mask over the labeled images
    metrics: dict[str, float]


# A model's vectors of the labeled images of a mask: (vectors of those that decoded, their
# positions among the mask's images).
Features = Callable[[np.ndarray], tuple[np.ndarray, list[int]]]


def served(
    paths: DataPaths, params: EmbedParams, data: LabeledImages, options: RunOptions
) -> Features:
    """The model of `params` through the real inference path and the LMDB cache."""
    from embedding_assets.embedding.run import cached_features

    def of(mask: np.ndarray) -> tuple[np.ndarray, list[int]]:
        fs_paths, hashes, _ = data.subset(mask)
        return cached_features(paths, params, fs_paths, hashes, options)

    return of


def judge(
    data: LabeledImages, models: Sequence[Features], within: np.ndarray | None = None
) -> Judgement:
    """Score half h with `models[h]` (leave-one-out kNN among that half's images), restricted
    to `within` when given."""
    from embedding_assets.embedding import evaluation

    half = halves(data.keys)
    judged = np.ones(len(half), dtype=bool) if within is None else within.copy()
    hits = np.zeros(len(half), dtype=bool)
    sums: dict[str, float] = {}
    weight = 0
    for h, features in enumerate(models):
        mask = judged & (half == h)
        labels = data.labels[mask]
        if len(labels) < 2:
            judged &= half != h  # too few to judge: this half decides nothing
            continue
        X, keep = features(mask)
        found = np.zeros(len(labels), dtype=bool)
        found[keep] = evaluation.knn_hits(X, labels[keep])
        hits[mask] = found
        for name, value in evaluation.evaluate(X, labels[keep]).items():
            sums[name] = sums.get(name, 0.0) + float(value) * len(keep)
        weight += len(keep)
    metrics = {k: v / weight for k, v in sums.items()} if weight else {}
    if metrics:
        metrics["n_eval"] = float(weight)
    return Judgement(hits[judged], judged, metrics)


@dataclass(frozen=True)
class Paired:
    """The challenger's and the current model's hits on the same judged images, in the same
    order: what the promotion test decides on (kept for measuring the gate)."""

    challenger: np.ndarray
    current: np.ndarray
