"""Active learning on CIFAR-10 test embeddings: uncertainty (with the diversity guard) vs
random batches, per classifier, measured side by side in one run.

Per seed the 10,000 images are split into a pool (80 %) and a fixed test set (20 %); 5 % of the
pool starts labeled and each of 10 rounds labels another 5 % of the pool, chosen by the same
functions the `label_queue` asset uses (margin uncertainty, k-means diversity guard) or at
random. Each round trains the classifier as the `classifier` asset does (held-out split,
temperature scaling, refit on every label), so the queue ranks by calibrated uncertainty.
Accuracy is on the test set. The goal (issues 11, 27): uncertainty + diversity reaches
random sampling's final accuracy with at most 70 % of its labels.

    python -m benchmarks.active_learning [--seeds 5] [--rounds 10] [--pca 32]
        [--model efficientnet_lite0 --weights DEFAULT --image-size 0] [--algorithms logreg,lightgbm]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split

from benchmarks.common import RESULTS, cifar_embeddings, write_results
from embedding_assets.learning import classifiers as al
from embedding_assets.learning import selection

STRATEGIES = ("uncertainty", "random")
GOAL_SHARE = 0.7


def run_loop(
    x_pool: np.ndarray,
    y_pool: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    algorithm: str,
    strategy: str,
    rounds: int,
    fraction: float,
    seed: int,
) -> list[float]:
    """Test accuracy after the seed set and after each round of labeling."""
    rng = np.random.default_rng(seed)
    batch = selection.default_batch_size(len(y_pool), fraction)
    labeled = np.zeros(len(y_pool), dtype=bool)
    labeled[rng.choice(len(y_pool), batch, replace=False)] = True
    accuracy = []
    for r in range(rounds + 1):
        # what the `classifier` asset trains: held out by stable keys from 200 labels on,
        # calibrated by temperature scaling, refit on every label (no search: 220 trainings)
        ids = np.flatnonzero(labeled)
        model = al.train(
            ids, x_pool[labeled], y_pool[labeled], algorithms=(algorithm,), seed=seed
        ).model
        accuracy.append(float((model.predict(x_test) == y_test).mean()))
        if r == rounds:
            break
        pool = np.flatnonzero(~labeled)
        if strategy == "random":
            pick = rng.choice(pool, batch, replace=False)
        else:
            classes = np.unique(y_pool[labeled])
            scores = selection.uncertainty_score(al.proba(model, x_pool[pool], classes), "margin")
            top = np.argsort(-scores, kind="stable")[: batch * 10]
            clusters = selection.kmeans_clusters(x_pool[pool[top]], 10, seed)
            pick = pool[top[selection.select_batch(scores[top], clusters, batch, 0.3)]]
        labeled[pick] = True
    return accuracy


def first_reach(curve: np.ndarray, target: float, n_labels: list[int]) -> float | None:
    """Labels at which `curve` first reaches `target`, as a share of the final label count
    (None if it never does)."""
    hits = np.flatnonzero(curve >= target)
    return n_labels[hits[0]] / n_labels[-1] if len(hits) else None


def goal(curves: dict[str, list[list[float]]], n_labels: list[int]) -> dict:
    """Does uncertainty reach random's final mean accuracy with <= GOAL_SHARE of its labels?
    Answered on the mean curve, with the per-seed shares as the spread."""
    uncertain = np.array(curves["uncertainty"])
    target = float(np.array(curves["random"])[:, -1].mean())
    per_seed = [first_reach(c, target, n_labels) for c in uncertain]
    reached = [s for s in per_seed if s is not None]
    share = first_reach(uncertain.mean(axis=0), target, n_labels)
    return {
        "random_final_accuracy": round(target, 4),
        "share_mean_curve": share,
        "share_per_seed": per_seed,
        "share_seed_mean": float(np.mean(reached)) if reached else None,
        "share_seed_std": float(np.std(reached)) if reached else None,
        "seeds_reached": len(reached),
        "seeds_within_goal": sum(s <= GOAL_SHARE for s in reached),
        "goal_met": share is not None and share <= GOAL_SHARE,
    }


def goal_line(algorithm: str, g: dict, n_seeds: int, final_labels: int) -> str:
    if g["share_mean_curve"] is None:
        reach = f"never reaches random's final accuracy {g['random_final_accuracy']:.3f}"
    else:
        reach = (
            f"reaches random's final accuracy {g['random_final_accuracy']:.3f} at "
            f"{g['share_mean_curve']:.0%} of its {final_labels} labels (mean curve)"
        )
    spread = (
        f"per seed {g['share_seed_mean']:.0%} ± {g['share_seed_std']:.0%}"
        if g["seeds_reached"]
        else "no seed reaches it"
    )
    verdict = "met" if g["goal_met"] else "not met"
    return (
        f"- {algorithm}: uncertainty + diversity {reach}; {spread} ({g['seeds_reached']}/"
        f"{n_seeds} seeds reach it, {g['seeds_within_goal']} within {GOAL_SHARE:.0%}). "
        f"Goal (≤ {GOAL_SHARE:.0%} of the labels): **{verdict}**."
    )


def plot(curves: dict, n_labels: list[int], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(curves), figsize=(5 * len(curves), 3.8), sharey=True, squeeze=False
    )
    for ax, (algorithm, by_strategy) in zip(axes[0], curves.items(), strict=True):
        for strategy in STRATEGIES:
            acc = np.array(by_strategy[strategy])
            mean, std = acc.mean(axis=0), acc.std(axis=0)
            ax.plot(n_labels, mean, marker="o", ms=3, label=strategy)
            ax.fill_between(n_labels, mean - std, mean + std, alpha=0.2)
        ax.set_title(algorithm)
        ax.set_xlabel("labeled images")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--pca", type=int, default=32, help="0 = use the raw embedding dimension")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default="DEFAULT")
    ap.add_argument("--image-size", type=int, default=0, help="0 = the model's own")
    ap.add_argument("--algorithms", default="logreg", help=f"of {al.ALGORITHMS}")
    args = ap.parse_args()
    args.algorithms = args.algorithms.split(",")
    unknown = set(args.algorithms) - set(al.ALGORITHMS)
    if unknown:
        ap.error(f"unknown algorithms {sorted(unknown)}; choose from {al.ALGORITHMS}")
    return args


def run_all(x: np.ndarray, y: np.ndarray, args: argparse.Namespace):
    """(curves[algorithm][strategy] = one accuracy list per seed, seconds, n_labels)."""
    curves = {a: {s: [] for s in STRATEGIES} for a in args.algorithms}
    seconds: dict[str, float] = {}
    n_labels: list[int] = []
    for seed in range(args.seeds):
        x_pool, x_test, y_pool, y_test = train_test_split(
            x, y, test_size=0.2, stratify=y, random_state=seed
        )
        batch = selection.default_batch_size(len(y_pool), args.fraction)
        n_labels = [batch * (r + 1) for r in range(args.rounds + 1)]
        for algorithm in args.algorithms:
            for strategy in STRATEGIES:
                t = time.perf_counter()
                acc = run_loop(
                    x_pool,
                    y_pool,
                    x_test,
                    y_test,
                    algorithm,
                    strategy,
                    args.rounds,
                    args.fraction,
                    seed,
                )
                key = f"{algorithm}/{strategy}"
                seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t
                curves[algorithm][strategy].append(acc)
                print(f"seed {seed} {key}: {acc[0]:.3f} -> {acc[-1]:.3f}", flush=True)
    return curves, seconds, n_labels


def report(args, n_images: int, dim: int, curves, goals, seconds, n_labels, embed_s) -> str:
    """The results page: the goal first, then the learning curves behind it."""
    cols = [(a, s) for a in args.algorithms for s in STRATEGIES]
    lines = [
        "# Active learning on CIFAR-10 test embeddings",
        "",
        f"{n_images} images, embeddings {dim}-d ({args.model} / {args.weights} / image size "
        f"{args.image_size}, `benchmarks.common.cifar_embeddings`)"
        + (f", PCA to {args.pca}-d" if args.pca else "")
        + f"; pool 80 % / test 20 %; seed {args.fraction:.0%} of the pool, batches of "
        f"{args.fraction:.0%}, {args.rounds} rounds, {args.seeds} seeds. Uncertainty = margin "
        "of the calibrated probabilities (temperature scaling on the held-out split, as the "
        "`classifier` asset does) with the k-means diversity guard (no cluster > 30 % of a "
        "batch). Test accuracy, mean ± std over seeds.",
        "",
        "## Goal: random's final accuracy with ≤ 70 % of its labels",
        "",
        *(goal_line(a, goals[a], args.seeds, n_labels[-1]) for a in args.algorithms),
        "",
        "| labels | " + " | ".join(f"{a} {s}" for a, s in cols) + " |",
        "|---" * (1 + len(cols)) + "|",
    ]
    for r, n in enumerate(n_labels):
        cells = [np.array(curves[a][s])[:, r] for a, s in cols]
        row = " | ".join(f"{c.mean():.3f} ± {c.std():.3f}" for c in cells)
        lines.append(f"| {n} | {row} |")
    lines.append("")
    for a in args.algorithms:
        final = {s: np.array(curves[a][s])[:, -1].mean() for s in STRATEGIES}
        gain = final["uncertainty"] - final["random"]
        lines.append(f"- {a}: after {n_labels[-1]} labels uncertainty − random = {gain:+.3f}")
    lines += [
        "",
        "Seconds per configuration (all seeds): "
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
        + f"; embeddings {embed_s:.0f} s (cached after the first run).",
        "",
        "![learning curves](active_learning.png)",
    ]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    x, y = cifar_embeddings(args.model, args.weights, args.image_size)
    embed_s = time.perf_counter() - t0
    dim = x.shape[1]
    if args.pca:  # unsupervised, on all images: no labels are used
        x = PCA(args.pca, random_state=0).fit_transform(x).astype(np.float32)
    curves, seconds, n_labels = run_all(x, y, args)
    goals = {a: goal(curves[a], n_labels) for a in args.algorithms}
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(curves, n_labels, RESULTS / "active_learning.png")
    write_results(
        "active_learning",
        {
            "args": vars(args),
            "embedding_dim": dim,
            "n_labels": n_labels,
            "accuracy": curves,
            "goal": goals,
            "seconds": seconds,
        },
        report(args, len(y), dim, curves, goals, seconds, n_labels, embed_s),
    )


if __name__ == "__main__":
    main()
