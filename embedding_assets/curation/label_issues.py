"""Label issues: which labeled images' labels disagree with the evidence.

Method (documented here because the scores depend on it):

1. Out-of-fold predicted probabilities: a multinomial LogisticRegression on the embeddings
   (L2-normalised, PCA to `pca_dim`, standardised), `cross_val_predict(method="predict_proba")`
   over stratified folds, so every image is scored by a model that never saw its label.
2. Confident learning (Northcutt, Jiang & Chuang, JAIR 2021), implemented here rather than via
   cleanlab (AGPL): per-class thresholds t_j = mean self-confidence of the images labeled j;
   the confident joint counts images of given label i that are confidently class j (the
   highest-probability class among those with p_j >= t_j); calibrated to the label counts, its
   off-diagonal entries say how many images of each (given, true) pair to flag, and
   "prune by noise rate" flags that many with the largest margin p_j - p_i. That is `issue`.
3. kNN disagreement: the fraction of an image's k nearest labeled neighbours (cosine on
   L2-normalised vectors, exact faiss IndexFlatIP) whose label differs from its own. It is
   independent of the classifier, so it catches what a linear model cannot express.

The ranking `score` in [0, 1] (higher = more likely mislabeled) blends the two:
(1 - w) * (1 - self_confidence) + w * knn_disagreement, with w = `knn_weight`; self-confidence
is the out-of-fold probability of the given label (on CIFAR-10 it ranked the injected flips
better than the normalized margin p_given - max p_other; both are returned). The suggested
label is the argmax of the same blend of class probabilities and neighbour votes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from embedding_assets.common.neighbors import knn, normalize

COLUMNS = [
    "image_id",
    "given_label",
    "suggested_label",
    "score",
    "issue",
    "self_confidence",
    "normalized_margin",
    "knn_disagreement",
]


@dataclass(frozen=True)
class LabelIssueParams:
    """Defaults chosen on CIFAR-10 with 5 % injected label flips (benchmarks/curation.py).

    pca_dim: 64 keeps the logistic regression fast (seconds on 10k images) and, on 1280-d
        embeddings, generalises better than the raw dimension (which overfits out of fold).
    C: inverse regularisation of the logistic regression (on standardised PCA features).
    knn_weight: share of the kNN disagreement in the ranking score.
    """

    n_folds: int = 5
    pca_dim: int = 64
    C: float = 0.1
    max_iter: int = 300
    k: int = 20
    knn_weight: float = 0.25
    seed: int = 0


def out_of_fold_proba(
    vectors: np.ndarray, labels: np.ndarray, params: LabelIssueParams = LabelIssueParams()
) -> np.ndarray:
    """(n, n_classes) probabilities, columns in `np.unique(labels)` order; each row from a model
    trained on the other folds. Folds are stratified; their number is capped by the smallest
    class (which must have at least 2 images)."""
    labels = np.asarray(labels)
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2:
        raise ValueError("label issues need at least 2 classes")
    folds = min(params.n_folds, int(counts.min()))
    if folds < 2:
        raise ValueError("every class needs at least 2 labeled images for out-of-fold scores")
    x = normalize(vectors)
    dim = min(params.pca_dim, x.shape[1], len(x) - len(x) // folds - 1)
    steps = [PCA(dim, random_state=params.seed)] if 0 < dim < x.shape[1] else []
    model = make_pipeline(
        *steps, StandardScaler(), LogisticRegression(C=params.C, max_iter=params.max_iter)
    )
    cv = StratifiedKFold(folds, shuffle=True, random_state=params.seed)
    return cross_val_predict(model, x, labels, cv=cv, method="predict_proba")


def confident_learning(proba: np.ndarray, given: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(issue mask (n,), calibrated confident joint (c, c)) for integer labels `given`.

    Prune-by-noise-rate: for each off-diagonal (i, j) of the calibrated confident joint, flag
    round(C[i, j]) images labeled i with the largest margin p_j - p_i.
    """
    n, c = proba.shape
    given = np.asarray(given)
    rows = np.arange(n)
    counts = np.bincount(given, minlength=c)
    self_conf = proba[rows, given]
    thresholds = np.bincount(given, weights=self_conf, minlength=c) / np.maximum(counts, 1)
    above = proba >= thresholds[None, :] - 1e-12
    masked = np.where(above, proba, -np.inf)
    confident = above.any(axis=1)
    true_guess = masked.argmax(axis=1)
    joint = np.zeros((c, c))
    np.add.at(joint, (given[confident], true_guess[confident]), 1)
    # Calibrate: each row sums to the number of images with that given label.
    row_sums = joint.sum(axis=1, keepdims=True)
    joint = np.divide(
        joint * counts[:, None], row_sums, out=np.zeros_like(joint), where=row_sums > 0
    )
    issue = np.zeros(n, dtype=bool)
    for i in range(c):
        members = np.flatnonzero(given == i)
        for j in range(c):
            m = int(round(joint[i, j]))
            if i == j or m == 0 or len(members) == 0:
                continue
            margin = proba[members, j] - proba[members, i]
            order = np.argsort(-margin, kind="stable")[:m]
            issue[members[order]] = True
    # Never flag an image whose given label is already the most likely one.
    issue &= proba.argmax(axis=1) != given
    return issue, joint


def knn_votes(
    vectors: np.ndarray, given: np.ndarray, n_classes: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(disagreement (n,), vote shares (n, n_classes)) over each image's k nearest other
    labeled images."""
    _, idx = knn(vectors, None, k)
    valid = idx >= 0
    neighbour_labels = np.where(valid, given[np.maximum(idx, 0)], -1)
    n_valid = np.maximum(valid.sum(axis=1), 1)
    disagree = ((neighbour_labels != given[:, None]) & valid).sum(axis=1) / n_valid
    votes = np.zeros((len(given), n_classes))
    rows = np.repeat(np.arange(len(given)), idx.shape[1])
    flat = neighbour_labels.ravel()
    ok = flat >= 0
    np.add.at(votes, (rows[ok], flat[ok]), 1)
    return disagree, votes / n_valid[:, None]


def find_label_issues(
    image_ids: Sequence,
    vectors: np.ndarray,
    labels: Sequence,
    params: LabelIssueParams = LabelIssueParams(),
) -> pd.DataFrame:
    """One row per labeled image, most suspicious first: image_id, given_label,
    suggested_label, score (0..1, higher = more likely wrong), issue (flagged by confident
    learning), self_confidence, normalized_margin, knn_disagreement.

    Rows whose label is None / NaN / "" are unlabeled and skipped, as are classes with fewer
    than 2 images (they cannot be scored out of fold).
    """
    ids = np.asarray(image_ids, dtype=object)
    lab = pd.Series(list(labels), dtype=object)
    x = np.asarray(vectors)
    if not len(ids) == len(lab) == len(x):
        raise ValueError(f"{len(ids)} ids, {len(lab)} labels and {len(x)} vectors differ")
    known = lab.notna().to_numpy() & (lab.astype(str) != "").to_numpy()
    counts = lab[known].value_counts()
    known &= lab.map(counts).fillna(0).to_numpy() >= 2
    if len(counts[counts >= 2]) < 2:
        return pd.DataFrame(columns=COLUMNS)
    ids, x = ids[known], x[known]
    given_names = lab[known].astype(str).to_numpy()
    classes, given = np.unique(given_names, return_inverse=True)
    proba = out_of_fold_proba(x, given, params)
    rows = np.arange(len(given))
    self_conf = proba[rows, given]
    others = proba.copy()
    others[rows, given] = -np.inf
    margin = self_conf - others.max(axis=1)
    issue, _ = confident_learning(proba, given)
    disagree, votes = knn_votes(x, given, len(classes), params.k)
    w = params.knn_weight
    score = (1 - w) * (1 - self_conf) + w * disagree
    suggested = classes[((1 - w) * proba + w * votes).argmax(axis=1)]
    out = pd.DataFrame(
        {
            "image_id": ids,
            "given_label": classes[given],
            "suggested_label": suggested,
            "score": score,
            "issue": issue,
            "self_confidence": self_conf,
            "normalized_margin": margin,
            "knn_disagreement": disagree,
        }
    )
    return out.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
