"""Classifier candidates on CIFAR-10 test embeddings, compared as the `classifier` asset does:
every candidate on one held-out split, here 50/50 and fixed by a seed.

Per candidate: held-out accuracy, macro-F1 and log-loss, fit seconds on the training half, and
fit seconds on all rows: the bar is 60 s on 10k labeled images of 1280-d features (2 cores).
Models are built and fitted by the asset's own functions (`active_learning.timed_fit`).

    python -m benchmarks.classifier_compare [--model efficientnet_lite0 --weights DEFAULT
        --image-size 0] [--candidates logreg,lightgbm,lightgbm_pca,mlp] [--seed 0]
    python -m benchmarks.classifier_compare --synthetic 10000   # the time bar, without CIFAR

LightGBM on the raw vectors (`lightgbm`) is by far the slowest; leave it out of --candidates for
a quick run.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.model_selection import train_test_split

from benchmarks.common import cifar_embeddings, write_results
from embedding_assets.learning import classifiers as al
from embedding_assets.learning.calibration import calibrate

BAR_S = 60.0


def synthetic(n: int, dim: int = 1280, classes: int = 10, seed: int = 0):
    """Unit-length vectors whose classes differ in a 64-d subspace, like embeddings: for
    timing only (fit time depends on the shape, not on what the vectors mean)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(classes, size=n)
    latent = rng.normal(size=(classes, 64))[y] + rng.normal(size=(n, 64)) * 5
    x = latent @ (rng.normal(size=(64, dim)) / 8) + rng.normal(size=(n, dim)) * 0.5 + 1.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), y.astype(str)


def evaluate(name: str, x: np.ndarray, y: np.ndarray, split, seed: int) -> tuple[dict, np.ndarray]:
    """Held-out metrics and probabilities after fitting on the training half, and the fit
    time on all rows."""
    train, test = split
    classes = np.unique(y)
    model, train_s = al.timed_fit(name, x[train], y[train], seed=seed)
    p = al.proba(model, x[test], classes)
    scores = al.metrics(y[test], p, classes)
    cal = calibrate(p, np.searchsorted(classes, y[test]), seed)  # the asset's calibration
    scores.update(ece_uncalibrated=cal.ece_before, ece=cal.ece_after, temperature=cal.temperature)
    all_s = al.timed_fit(name, x, y, seed=seed)[1]
    row = {"candidate": name, **scores, "fit_s_train": train_s, "fit_s_all": all_s}
    print(
        f"{name}: accuracy {scores['accuracy']:.4f}, macro-F1 {scores['macro_f1']:.4f}, "
        f"fit {train_s:.1f} s ({len(train)} rows) / {all_s:.1f} s ({len(y)} rows)",
        flush=True,
    )
    return row, p


def auto_pick(rows: list[dict], probas: dict, y_test: np.ndarray) -> str | None:
    """What the asset's `auto` would keep among these rows (its own rule)."""
    auto = tuple(a for a in al.DEFAULT_CANDIDATES if a in probas)
    if not auto:
        return None
    records = {r["candidate"]: r for r in rows}
    return al.pick_candidate(auto, records, probas, np.unique(y_test), y_test)


def markdown(
    rows: list[dict], pick: str | None, source: str, n_train: int, n_all: int, seed: int
) -> str:
    lines = [
        "# Classifier candidates: held-out quality and fit time",
        "",
        f"{n_all} images ({source}), split 50/50 stratified (seed {seed}). Held-out metrics "
        f"after fitting on {n_train} images; fit seconds on those and on all {n_all} "
        f"(bar: {BAR_S:.0f} s on 10k). `auto` = the `classifier` asset's default candidates "
        f"{', '.join(al.DEFAULT_CANDIDATES)}; it keeps the best macro-F1 where that beats "
        "logistic regression beyond noise (a paired test on the same held-out images)"
        + (f": **{pick}** here." if pick else "."),
        "",
        f"| candidate | in auto | accuracy | macro-F1 | log-loss | ECE raw | ECE calibrated | "
        f"fit s ({n_train}) | fit s ({n_all}) | under {BAR_S:.0f} s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['candidate']} | {'yes' if r['candidate'] in al.DEFAULT_CANDIDATES else 'no'} "
            f"| {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['log_loss']:.4f} "
            f"| {r['ece_uncalibrated']:.3f} | {r['ece']:.3f} "
            f"| {r['fit_s_train']:.1f} | {r['fit_s_all']:.1f} "
            f"| {'yes' if r['fit_s_all'] < BAR_S else 'NO'} |"
        )
    lines += [
        "",
        f"lightgbm_pca = PCA to {al.PCA_DIMS}-d inside the pipeline, then LightGBM; mlp = "
        f"standardized inputs, one hidden layer of 128, early stopping, at most "
        f"{al.MLP_MAX_EPOCHS} epochs. ECE: expected calibration error of the top class "
        "(15 bins) on the held-out half, raw and after the `classifier` asset's temperature "
        "scaling (cross-fitted: each half's temperature fitted on the other half).",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default="DEFAULT")
    ap.add_argument("--image-size", type=int, default=0, help="0 = the model's own")
    ap.add_argument("--candidates", default=",".join(al.ALGORITHMS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic", type=int, default=0, help="N random 1280-d rows, no CIFAR")
    args = ap.parse_args()
    candidates = args.candidates.split(",")
    unknown = set(candidates) - set(al.ALGORITHMS)
    if unknown:
        ap.error(f"unknown candidates {sorted(unknown)}; choose from {al.ALGORITHMS}")

    if args.synthetic:
        x, y = synthetic(args.synthetic, seed=args.seed)
        source = f"synthetic {x.shape[1]}-d, {len(np.unique(y))} classes"
    else:
        x, y = cifar_embeddings(args.model, args.weights, args.image_size)
        source = f"{args.model} / {args.weights} / image size {args.image_size}, {x.shape[1]}-d"
    train, test = train_test_split(
        np.arange(len(y)), test_size=0.5, stratify=y, random_state=args.seed
    )
    results = {name: evaluate(name, x, y, (train, test), args.seed) for name in candidates}
    rows = [row for row, _ in results.values()]
    pick = auto_pick(rows, {n: p for n, (_, p) in results.items()}, y[test])
    write_results(
        "classifier_compare_synthetic" if args.synthetic else "classifier_compare",
        {
            "args": vars(args),
            "source": source,
            "n_train": len(train),
            "candidates": rows,
            "auto_pick": pick,
        },
        markdown(rows, pick, source, len(train), len(y), args.seed),
    )


if __name__ == "__main__":
    main()
