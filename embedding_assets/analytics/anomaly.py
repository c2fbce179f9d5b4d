"""Isolation Forest anomaly scores: one score per row, the top fraction flagged.

The score is the negated `score_samples` of scikit-learn, i.e. the paper's s(x, n) in (0, 1]:
higher means easier to isolate, i.e. more unusual. Flagging takes exactly the top
ceil(fraction * n) rows rather than a score threshold, so the count is predictable.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AnomalyParams:
    n_estimators: int = 200
    max_samples: int = 256
    flag_fraction: float = 0.05
    n_jobs: int = -1
    seed: int = 0


@dataclass(frozen=True)
class Forest:
    """A fitted Isolation Forest: scores new rows as it scored the rows it was fitted on
    (analytics/placing.py places new images with it)."""

    model: Any  # sklearn.ensemble.IsolationForest

    def place(self, x: np.ndarray) -> np.ndarray:
        return (-self.model.score_samples(np.ascontiguousarray(x, np.float32))).astype(np.float32)


@dataclass
class AnomalyScores:
    scores: np.ndarray  # float32 (n,), higher = more unusual
    flagged: np.ndarray  # bool (n,)
    fit_seconds: float
    score_seconds: float
    forest: Forest | None = None

    @property
    def threshold(self) -> float:
        return float(self.scores[self.flagged].min()) if self.flagged.any() else math.inf


def score(vectors: np.ndarray, params: AnomalyParams) -> AnomalyScores:
    if not 0 <= params.flag_fraction <= 1:
        raise ValueError(
            f"flag_fraction={params.flag_fraction} must be between 0 and 1 (e.g. 0.05)"
        )
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    if n < 2:
        raise ValueError(f"Need at least 2 embedded images to score anomalies, got {n}.")
    from sklearn.ensemble import IsolationForest

    start = time.perf_counter()
    forest = IsolationForest(
        n_estimators=params.n_estimators,
        max_samples=min(params.max_samples, n),
        n_jobs=params.n_jobs,
        random_state=params.seed,
    ).fit(x)
    fitted = time.perf_counter()
    scores = Forest(forest).place(x)
    scored = time.perf_counter()
    flagged = top_fraction(scores, params.flag_fraction)
    return AnomalyScores(scores, flagged, fitted - start, scored - fitted, Forest(forest))


def placed_scores(scores: np.ndarray, fraction: float) -> AnomalyScores:
    """Scores kept or placed by a stored forest, with the top `fraction` flagged anew."""
    scores = np.asarray(scores, dtype=np.float32)
    return AnomalyScores(scores, top_fraction(scores, fraction), 0.0, 0.0)


def top_fraction(scores: np.ndarray, fraction: float) -> np.ndarray:
    """A mask of the ceil(fraction * n) highest scores (ties broken by position)."""
    count = math.ceil(fraction * len(scores))
    flagged = np.zeros(len(scores), dtype=bool)
    if count:
        flagged[np.argpartition(-scores, count - 1)[:count]] = True
    return flagged
