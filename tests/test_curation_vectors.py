"""Uniqueness, leakage and drift on generated vectors, and the shared kNN helper."""

from __future__ import annotations

import numpy as np
import pytest

from embedding_assets.common.neighbors import knn
from embedding_assets.curation.drift import (
    drift_report,
    drift_test,
    fit_reference,
    holm,
    ood_scores,
)
from embedding_assets.curation.uniqueness import uniqueness_scores


def gaussian(n, dim=32, seed=0, centre=None):
    rng = np.random.default_rng(seed)
    base = np.ones(dim) * 2 if centre is None else centre
    return (base + rng.normal(0, 1, (n, dim))).astype(np.float32)


def test_knn_self_search_excludes_self_even_with_duplicates():
    x = gaussian(50)
    x[1] = x[0]
    sims, idx = knn(x, None, 3)
    assert (idx != np.arange(50)[:, None]).all()
    assert idx[0, 0] == 1 and idx[1, 0] == 0 and sims[0, 0] == pytest.approx(1.0, abs=1e-5)
    sims, idx = knn(x[:3], None, 5)
    assert (idx[:, 2:] == -1).all() and np.isnan(sims[:, 2:]).all()


def test_uniqueness_duplicates_low_outlier_high():
    x = gaussian(200)
    x[1] = x[0]
    x[2] = -x[3]  # opposite of everything: an outlier
    u, rep = uniqueness_scores(knn(x, None, 10)[0])
    assert u[0] < 1e-5 and u[1] < 1e-5
    assert u.argmax() == 2 and rep.argmin() == 2


def test_drift_quiet_on_same_distribution_and_fires_on_new_cluster():
    ref = fit_reference(gaussian(2000, seed=1), k=10, dims=16)
    clean = [drift_test(ref, gaussian(300, seed=10 + s), n_permutations=200) for s in range(5)]
    assert sum(r.drifted for r in clean) <= 1
    assert all(0 < r.p_value <= 1 for r in clean)
    new = gaussian(30, seed=3, centre=np.r_[np.ones(16) * 2, -np.ones(16) * 2])
    mixed = np.concatenate([gaussian(270, seed=4), new])
    r = drift_test(ref, mixed, n_permutations=200)
    assert r.drifted and r.p_value < 0.01
    assert r.ood_score[-30:].mean() > 0.95 > r.ood_score[:270].mean()
    assert 0.3 < ood_scores(ref, gaussian(300, seed=5)).mean() < 0.7
    table = drift_report(ref, {"clean": gaussian(300, seed=6), "mixed": mixed}, n_permutations=200)
    assert table["drifted"].tolist() == [False, True]
    assert table["effect_size"].iloc[0] < 0.05 < table["effect_size"].iloc[1]


def test_a_significant_but_negligible_shift_is_not_called_drift():
    """A big batch moved by a hair: the permutation test sees it, the effect floor does not
    call it drift (and a floor of 0 does)."""
    ref = fit_reference(gaussian(4000, seed=1), k=10, dims=16)
    nudged = gaussian(4000, seed=2, centre=np.r_[np.ones(16) * 2.03, np.ones(16) * 1.97])
    r = drift_test(ref, nudged, n_permutations=200)
    assert r.p_value < 0.01 and 0 < r.effect_size < 0.05 and not r.drifted
    assert drift_test(ref, nudged, n_permutations=200, min_effect=0.0).drifted


def test_holm_adjusts_in_the_given_order():
    assert holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])
