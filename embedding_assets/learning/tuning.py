"""A small hyper-parameter search for each classifier candidate (Optuna's TPE sampler), bounded
by a time budget: each trial is a stratified k-fold cross-validation on the training split, so
the held-out split that compares candidates stays unseen. The trials are recorded in DuckDB
(`classifier_trials`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Logistic regression's C without a search (below `search_min_labels`). The embeddings are unit
# length, so C = 1 regularized 1,280 small dimensions hard: on blood cells at 20 labels per class
# 0.671 against 0.777 for C = 30, on CIFAR photos no worse (benchmarks/results/
# classifier_defaults.md; 100 was better still on cells, a little worse on photos).
LOGREG_C = 30.0

# The space searched per candidate; the defaults of `classifiers.make_model` lie inside.
SPACES: dict[str, Callable] = {
    "logreg": lambda t: {"C": t.suggest_float("C", 1e-1, 1e3, log=True)},
    "lightgbm_pca": lambda t: {
        "num_leaves": t.suggest_int("num_leaves", 7, 63, log=True),
        "learning_rate": t.suggest_float("learning_rate", 0.03, 0.3, log=True),
        "n_estimators": t.suggest_int("n_estimators", 30, 200, log=True),
    },
    "mlp": lambda t: {
        "alpha": t.suggest_float("alpha", 1e-5, 1e-1, log=True),
        "hidden": t.suggest_categorical("hidden", [64, 128, 256]),
    },
}
FOLDS = 3


@dataclass(frozen=True)
class Trial:
    number: int
    params: dict
    log_loss: float
    accuracy: float
    seconds: float


@dataclass(frozen=True)
class Search:
    algorithm: str
    best: dict  # the parameters with the lowest cross-validated log-loss
    trials: list[Trial]


@dataclass(frozen=True)
class SearchSettings:
    """The bounds of one search, one record so a caller sets them once for all its candidates:
    seconds, trials (a test bounds by trials, so a loaded machine runs the same ones) and the
    seed of the folds and the sampler."""

    budget_s: float
    max_trials: int = 50
    seed: int = 0


def search(
    algorithm: str,
    x: np.ndarray,
    y: np.ndarray,
    scores: Callable[[dict, np.ndarray, np.ndarray], np.ndarray],
    settings: SearchSettings,
) -> Search | None:
    """The best parameters of `algorithm` on (x, y) found within `settings`' bounds (the
    defaults are the first trial, so the search never settles below them); None for a
    candidate without a search space. `scores(params, train_rows, test_rows)` fits the
    candidate with `params` on the first rows and returns its probabilities on the others
    (columns: sorted classes)."""
    if algorithm not in SPACES:
        return None
    import optuna
    from sklearn.model_selection import StratifiedKFold

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    classes = np.unique(y)
    folds = min(FOLDS, int(np.unique(y, return_counts=True)[1].min()))
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=settings.seed).split(x, y))
    trials: list[Trial] = []

    def objective(trial) -> float:
        params = SPACES[algorithm](trial)
        started = time.perf_counter()
        p = np.concatenate([scores(params, tr, te) for tr, te in splits])
        truth = np.searchsorted(classes, y[np.concatenate([te for _, te in splits])])
        loss = float(-np.log(np.clip(p[np.arange(len(truth)), truth], 1e-15, 1)).mean())
        accuracy = float((p.argmax(axis=1) == truth).mean())
        seconds = time.perf_counter() - started
        trials.append(Trial(trial.number, params, loss, accuracy, seconds))
        return loss

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=settings.seed))
    study.enqueue_trial(_defaults(algorithm))
    study.optimize(objective, n_trials=settings.max_trials, timeout=settings.budget_s)
    best = min(trials, key=lambda t: t.log_loss)
    return Search(algorithm, best.params, trials)


def _defaults(algorithm: str) -> dict:
    return {
        "logreg": {"C": LOGREG_C},
        "lightgbm_pca": {"num_leaves": 15, "learning_rate": 0.1, "n_estimators": 60},
        "mlp": {"alpha": 1e-4, "hidden": 128},
    }[algorithm]


def trial_rows(version_id: int, searches: list[Search]) -> list[list]:
    """`classifier_trials` rows of one training's searches."""
    return [
        [version_id, s.algorithm, t.number, json.dumps(t.params), t.log_loss, t.accuracy, t.seconds]
        for s in searches
        for t in s.trials
    ]
