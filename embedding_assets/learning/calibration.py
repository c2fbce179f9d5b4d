"""Probabilities that mean what they say: temperature scaling (Guo et al. 2017) fitted on
held-out predictions, and the expected calibration error that says how far off they are.

A model's probabilities p become softmax(log p / T): T > 1 softens an overconfident model,
T < 1 sharpens a timid one, and the predicted class never changes. The ECE reported for a
model is cross-fitted: T is fitted on one half of the held-out images and measured on the
other, and the other way round, so the report is not flattered by the fit; the model keeps the
T fitted on all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 15
T_BOUNDS = (0.05, 20.0)


def tempered(p: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row-wise; T = 1 returns p (renormalized)."""
    logits = np.log(np.clip(p, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    """The T minimizing the negative log-likelihood of the labels `y` (column indexes of p)."""
    from scipy.optimize import minimize_scalar

    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        return float(-np.log(np.clip(tempered(p, np.exp(log_t))[rows, y], 1e-12, 1)).mean())

    found = minimize_scalar(nll, bounds=np.log(T_BOUNDS), method="bounded")
    return float(np.exp(found.x))


def ece(p: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error of the top class: the confidence-weighted gap between
    confidence and accuracy over `bins` equal-width confidence bins."""
    if len(y) == 0:
        return float("nan")
    confidence = p.max(axis=1)
    right = p.argmax(axis=1) == y
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(right[inside].mean() - confidence[inside].mean())
    return float(total)


@dataclass(frozen=True)
class Calibration:
    temperature: float  # fitted on every held-out image: what the model keeps
    cross_fitted: np.ndarray  # held-out probabilities, each calibrated by the other half's T
    ece_before: float
    ece_after: float  # of `cross_fitted`


def calibrate(p: np.ndarray, y: np.ndarray, seed: int = 0) -> Calibration:
    """Temperature scaling on held-out probabilities `p` with labels `y` (column indexes)."""
    rng = np.random.default_rng(seed)
    half = rng.permutation(len(y)) < len(y) // 2
    crossed = p.copy()
    if half.any() and (~half).any():
        for fit_on in (half, ~half):
            t = fit_temperature(p[fit_on], y[fit_on])
            crossed[~fit_on] = tempered(p[~fit_on], t)
    return Calibration(fit_temperature(p, y), crossed, ece(p, y), ece(crossed, y))


class Calibrated:
    """A fitted classifier whose probabilities are tempered: what the champion is, so that its
    predictions, the label queue's uncertainties and later comparisons see calibrated ones."""

    def __init__(self, model: object, temperature: float) -> None:
        self.model = model
        self.temperature = temperature

    @property
    def classes_(self) -> np.ndarray:
        return self.model.classes_

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return tempered(self.model.predict_proba(x), self.temperature)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The most likely classes: a temperature does not change which one that is."""
        return self.model.predict(x)
