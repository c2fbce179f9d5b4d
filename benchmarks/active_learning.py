"""Active learning on CIFAR-10 test embeddings: uncertainty (with the diversity guard) vs
random batches, logistic regression vs LightGBM, measured side by side in one run.

Per seed the 10,000 images are split into a pool (80 %) and a fixed test set (20 %); 5 % of the
pool starts labeled and each of 10 rounds labels another 5 % of the pool, chosen by the same
functions the `label_queue` asset uses (margin uncertainty, k-means diversity guard) or at
random. Accuracy is on the test set.

    python -m benchmarks.active_learning [--seeds 5] [--rounds 10] [--pca 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split

from benchmarks.common import RESULTS, cifar_embeddings, write_results
from embedding_assets import active_learning as al

STRATEGIES = ("uncertainty", "random")
# Smaller than the asset's LightGBM so 220 trainings fit in ~10 minutes on 2 cores.
BENCH_LGBM = {"n_estimators": 25, "num_leaves": 7, "max_bin": 63}


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
    batch = al.default_batch_size(len(y_pool), fraction)
    labeled = np.zeros(len(y_pool), dtype=bool)
    labeled[rng.choice(len(y_pool), batch, replace=False)] = True
    accuracy = []
    for r in range(rounds + 1):
        params = BENCH_LGBM if algorithm == "lightgbm" else {}
        model = al.fit(algorithm, x_pool[labeled], y_pool[labeled], seed=seed, **params)
        accuracy.append(float((model.predict(x_test) == y_test).mean()))
        if r == rounds:
            break
        pool = np.flatnonzero(~labeled)
        if strategy == "random":
            pick = rng.choice(pool, batch, replace=False)
        else:
            classes = np.unique(y_pool[labeled])
            scores = al.uncertainty_score(al.proba(model, x_pool[pool], classes), "margin")
            top = np.argsort(-scores, kind="stable")[: batch * 10]
            clusters = al.kmeans_clusters(x_pool[pool[top]], 10, seed)
            pick = pool[top[al.select_batch(scores[top], clusters, batch, 0.3)]]
        labeled[pick] = True
    return accuracy


def plot(curves: dict, n_labels: list[int], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, algorithm in zip(axes, ("logreg", "lightgbm"), strict=True):
        for strategy in STRATEGIES:
            acc = np.array(curves[algorithm][strategy])
            mean, std = acc.mean(axis=0), acc.std(axis=0)
            ax.plot(n_labels, mean, marker="o", ms=3, label=strategy)
            ax.fill_between(n_labels, mean - std, mean + std, alpha=0.2)
        ax.set_title(algorithm)
        ax.set_xlabel("labeled images")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--pca", type=int, default=32, help="0 = use the raw embedding dimension")
    args = ap.parse_args()

    t0 = time.perf_counter()
    x, y = cifar_embeddings()
    embed_s = time.perf_counter() - t0
    dim = x.shape[1]
    if args.pca:  # unsupervised, on all images: no labels are used
        x = PCA(args.pca, random_state=0).fit_transform(x).astype(np.float32)
    curves: dict[str, dict[str, list[list[float]]]] = {
        a: {s: [] for s in STRATEGIES} for a in al.ALGORITHMS
    }
    seconds: dict[str, float] = {}
    n_labels: list[int] = []
    for seed in range(args.seeds):
        x_pool, x_test, y_pool, y_test = train_test_split(
            x, y, test_size=0.2, stratify=y, random_state=seed
        )
        batch = al.default_batch_size(len(y_pool), args.fraction)
        n_labels = [batch * (r + 1) for r in range(args.rounds + 1)]
        for algorithm in al.ALGORITHMS:
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

    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(curves, n_labels, RESULTS / "active_learning.png")
    header = (
        "| labels | " + " | ".join(f"{a} {s}" for a in al.ALGORITHMS for s in STRATEGIES) + " |"
    )
    lines = [
        "# Active learning on CIFAR-10 test embeddings",
        "",
        f"{len(y)} images, embeddings {dim}-d (resnet18, `benchmarks.common.cifar_embeddings`)"
        + (f", PCA to {args.pca}-d" if args.pca else "")
        + f"; pool 80 % / test 20 %; seed {args.fraction:.0%} of the pool, batches of "
        f"{args.fraction:.0%}, {args.rounds} rounds, {args.seeds} seeds. Uncertainty = margin "
        "with the k-means diversity guard (no cluster > 30 % of a batch). LightGBM "
        f"{BENCH_LGBM}. Test accuracy, "
        "mean ± std over seeds.",
        "",
        header,
        "|---" * (1 + 2 * len(al.ALGORITHMS)) + "|",
    ]
    summary = {}
    for r, n in enumerate(n_labels):
        cells = []
        for a in al.ALGORITHMS:
            for s in STRATEGIES:
                acc = np.array(curves[a][s])[:, r]
                cells.append(f"{acc.mean():.3f} ± {acc.std():.3f}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    for a in al.ALGORITHMS:
        final = {s: np.array(curves[a][s])[:, -1] for s in STRATEGIES}
        gain = final["uncertainty"].mean() - final["random"].mean()
        summary[a] = {"final_gain_uncertainty_minus_random": round(float(gain), 4)}
        lines.append("")
        lines.append(
            f"- {a}: after {n_labels[-1]} labels uncertainty − random = {gain:+.3f} accuracy"
        )
    lines += [
        "",
        "Seconds per configuration (all seeds): "
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
        + f"; embeddings {embed_s:.0f} s (cached after the first run).",
        "",
        "![learning curves](active_learning.png)",
    ]
    write_results(
        "active_learning",
        {
            "args": vars(args),
            "embedding_dim": dim,
            "n_labels": n_labels,
            "accuracy": curves,
            "summary": summary,
            "seconds": seconds,
        },
        "\n".join(lines),
    )


if __name__ == "__main__":
    main()
