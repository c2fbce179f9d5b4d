"""Active learning on CIFAR-10 test embeddings: selection strategies vs random batches, per
classifier, measured side by side in one run.

Per seed the 10,000 images are split into a pool (80 %) and a fixed test set (20 %); 5 % of the
pool starts labeled and each of 10 rounds labels another 5 % of the pool, chosen by the
functions of `embedding_assets.learning.selection`: `uncertainty` is what the `label_queue`
asset does by default (margin uncertainty, k-means diversity guard); the others
(cluster-margin, k-means++ over uncertain items, BADGE, a random share) are compared with it,
and `random` is the baseline. Each round trains the classifier as the `classifier` asset does
(held-out split, temperature scaling, refit on every label) on the full embedding, as the
product's classifier sees it, so the queue ranks by calibrated uncertainty. Accuracy is on the
test set; the ceiling is the classifier trained on the whole pool. The goal (issues 11, 27):
the queue reaches random sampling's final accuracy with at most 70 % of its labels.
`--compare-pca 32` reruns random and uncertainty on a PCA of the embedding (the benchmark's
former setting) beside it.

    python -m benchmarks.active_learning [--seeds 5] [--rounds 10] [--pca 0] [--compare-pca 32]
        [--strategies random,uncertainty,cluster_margin,badge,...]
        [--model efficientnet_lite0 --weights DEFAULT --image-size 0] [--algorithms logreg,lightgbm]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split

from benchmarks import al_strategies
from benchmarks.common import RESULTS, cifar_embeddings, write_results
from embedding_assets.learning import classifiers as al
from embedding_assets.learning import selection

GOAL_SHARE = 0.7
BASELINE = "random"
TODAY = "uncertainty"
DEFAULT_STRATEGIES = (
    "random,uncertainty,cluster_margin,cluster_margin:300,kmeanspp,badge,mix,mix_cm"
)
# name -> what it does; a `name:value` spec sets the strategy's one parameter
STRATEGIES = {
    "random": "a random sample of the pool",
    "uncertainty": "margin top 10 x batch, k-means (k=10) on them, no cluster > 30 % (today's)",
    "margin": "the lowest margins, nothing else",
    "cluster_margin": "pool k-means once (k=VALUE, default 100), margin top 10 x batch, "
    "round-robin over their clusters, smallest first (Citovsky et al. 2021)",
    "kmeanspp": "margin top VALUE x batch (default 20), k-means++ seeding on their features",
    "badge": "gradient embeddings (p - onehot) x features, k-means++ seeding (Ash et al. 2020); "
    "VALUE = candidates by gradient norm (default: the whole pool)",
    "mix": "a VALUE share (default 0.2) at random, the rest as `uncertainty`",
    "mix_cm": "a VALUE share (default 0.2) at random, the rest as `cluster_margin`",
}
# per round, n pool images of d dims, batch b, k clusters, C classes
COST = {
    "random": "O(b)",
    "uncertainty": "a sort O(n log n) + k-means on 10b candidates O(10b k d) per iteration",
    "margin": "a sort O(n log n)",
    "cluster_margin": "a sort O(n log n); the pool k-means O(n k d) per iteration once per "
    "embedding set",
    "kmeanspp": "O(20 b^2 d), quadratic in the batch: a 10^6 pool in 5 % batches of 1280-d "
    "is 6e13 flops, each pick a pass over 10^6 vectors (hours per round on a CPU)",
    "badge": "O(n b (d + C)): the same 6e13 flops at 10^6 images, unless capped to candidates",
    "mix": "as `uncertainty`",
    "mix_cm": "as `cluster_margin`",
}


def parse_strategy(spec: str) -> tuple[str, float | None]:
    name, _, value = spec.partition(":")
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {sorted(STRATEGIES)}")
    return name, float(value) if value else None


def choose(
    spec: str,
    model,
    classes: np.ndarray,
    x_pool: np.ndarray,
    pool: np.ndarray,
    batch: int,
    pool_clusters: dict[int, np.ndarray],
    rng: np.random.Generator,
    seed: int,
) -> np.ndarray:
    """The pool items (indexes into x_pool) that `spec` asks about next."""
    name, value = parse_strategy(spec)
    if name == "random":
        return rng.choice(pool, batch, replace=False)
    p = al.proba(model, x_pool[pool], classes)
    scores = selection.uncertainty_score(p, "margin")
    if name in ("uncertainty", "mix"):
        top = np.argsort(-scores, kind="stable")[: batch * 10]
        clusters = selection.kmeans_clusters(x_pool[pool[top]], 10, seed)
        ranked = top[selection.select_batch(scores[top], clusters, batch, 0.3)]
        if name == "mix":
            ranked = al_strategies.with_random_share(ranked, len(pool), batch, value or 0.2, seed)
        return pool[ranked]
    if name == "margin":
        return pool[np.argsort(-scores, kind="stable")[:batch]]
    if name in ("cluster_margin", "mix_cm"):
        k = int(value) if name == "cluster_margin" and value else 100
        ranked = al_strategies.cluster_margin(scores, pool_clusters[k][pool], batch)
        if name == "mix_cm":
            ranked = al_strategies.with_random_share(ranked, len(pool), batch, value or 0.2, seed)
        return pool[ranked]
    if name == "kmeanspp":
        return pool[
            al_strategies.margin_kmeanspp(scores, x_pool[pool], batch, int(value or 20), seed)
        ]
    if name == "badge":
        cand = int(value) if value else None
        return pool[al_strategies.badge(p, x_pool[pool], batch, seed, cand)]
    raise AssertionError(name)


def cluster_counts(specs: list[str]) -> list[int]:
    """The k of every pool clustering the strategies need (computed once per seed)."""
    ks = set()
    for spec in specs:
        name, value = parse_strategy(spec)
        if name == "cluster_margin":
            ks.add(int(value) if value else 100)
        if name == "mix_cm":
            ks.add(100)
    return sorted(ks)


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
    pool_clusters: dict[int, np.ndarray] | None = None,
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
        settings = al.TrainSettings(algorithms=(algorithm,), seed=seed)
        model = al.train(ids, x_pool[labeled], y_pool[labeled], settings).model
        accuracy.append(float((model.predict(x_test) == y_test).mean()))
        if r == rounds:
            break
        pool = np.flatnonzero(~labeled)
        classes = np.unique(y_pool[labeled])
        pick = choose(strategy, model, classes, x_pool, pool, batch, pool_clusters or {}, rng, seed)
        assert len(pick) == batch and not labeled[pick].any()
        labeled[pick] = True
    return accuracy


def first_reach(curve: np.ndarray, target: float, n_labels: list[int]) -> float | None:
    """Labels at which `curve` first reaches `target`, as a share of the final label count
    (None if it never does)."""
    hits = np.flatnonzero(curve >= target)
    return n_labels[hits[0]] / n_labels[-1] if len(hits) else None


def goal(curves: dict[str, list[list[float]]], strategy: str, n_labels: list[int]) -> dict:
    """Does `strategy` reach random's final mean accuracy with <= GOAL_SHARE of its labels?
    Answered on the mean curve, with the per-seed shares as the spread (each seed's curve
    against the mean target, and against its own seed's random final: `paired`)."""
    curve = np.array(curves[strategy])
    finals = np.array(curves[BASELINE])[:, -1]
    target = float(finals.mean())
    per_seed = [first_reach(c, target, n_labels) for c in curve]
    paired = [first_reach(c, t, n_labels) for c, t in zip(curve, finals, strict=True)]
    reached = [s for s in per_seed if s is not None]
    share = first_reach(curve.mean(axis=0), target, n_labels)
    return {
        "random_final_accuracy": round(target, 4),
        "share_mean_curve": share,
        "share_per_seed": per_seed,
        "share_seed_mean": float(np.mean(reached)) if reached else None,
        "share_seed_std": float(np.std(reached)) if reached else None,
        "seeds_reached": len(reached),
        "seeds_within_goal": sum(s <= GOAL_SHARE for s in reached),
        "share_paired": paired,
        "final_accuracy": float(curve[:, -1].mean()),
        "final_accuracy_std": float(curve[:, -1].std()),
        "goal_met": share is not None and share <= GOAL_SHARE,
    }


def _pct(share: float | None) -> str:
    return "never" if share is None else f"{share:.0%}"


def goal_row(strategy: str, g: dict, curves, n_seeds: int, n_labels: list[int]) -> list[str]:
    """One strategy's line of the comparison table."""
    spread = (
        f"{g['share_seed_mean']:.0%} ± {g['share_seed_std']:.0%}" if g["seeds_reached"] else "–"
    )
    early = np.array(curves[strategy])[:, 1:3].mean(axis=0) - np.array(curves[TODAY])[:, 1:3].mean(
        axis=0
    )
    return [
        f"`{strategy}`",
        _pct(g["share_mean_curve"]),
        spread,
        f"{g['seeds_reached']}/{n_seeds} ({g['seeds_within_goal']})",
        " ".join(_pct(s) for s in g["share_paired"]),
        f"{g['final_accuracy']:.3f} ± {g['final_accuracy_std']:.3f}",
        " / ".join(f"{d:+.3f}" for d in early),
        "**met**" if g["goal_met"] else "not met",
    ]


def plot(curves: dict, n_labels: list[int], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 * len(curves), figsize=(10 * len(curves), 4.2), squeeze=False)
    for i, (algorithm, by_strategy) in enumerate(curves.items()):
        ax, gain = axes[0][2 * i], axes[0][2 * i + 1]
        base = np.array(by_strategy[BASELINE]).mean(axis=0)
        for strategy, runs in by_strategy.items():
            acc = np.array(runs)
            mean, std = acc.mean(axis=0), acc.std(axis=0)
            ax.plot(n_labels, mean, marker="o", ms=3, label=strategy)
            ax.fill_between(n_labels, mean - std, mean + std, alpha=0.12)
            gain.plot(n_labels, mean - base, marker="o", ms=3, label=strategy)
        ax.axhline(base[-1], color="grey", lw=0.8, ls="--")
        ax.set_title(f"{algorithm}: test accuracy (dashed: random's final)")
        gain.set_title(f"{algorithm}: accuracy − random's, mean over seeds")
        gain.axhline(0, color="grey", lw=0.8)
        for a in (ax, gain):
            a.set_xlabel("labeled images")
            a.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--pca", type=int, default=0, help="0 = the raw embedding, as the product")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default="DEFAULT")
    ap.add_argument("--image-size", type=int, default=0, help="0 = the model's own")
    ap.add_argument("--algorithms", default="logreg", help=f"of {al.ALGORITHMS}")
    ap.add_argument(
        "--strategies",
        default=DEFAULT_STRATEGIES,
        help=f"comma list of {sorted(STRATEGIES)}, each optionally name:value; "
        f"{BASELINE} and {TODAY} are always run",
    )
    ap.add_argument(
        "--compare-pca",
        type=int,
        default=32,
        help="also run random and uncertainty on a PCA to this many dims (-1 = no)",
    )
    ap.add_argument("--name", default="active_learning", help="results file name")
    args = ap.parse_args()
    args.compare_pca = None if args.compare_pca < 0 else args.compare_pca
    args.algorithms = args.algorithms.split(",")
    unknown = set(args.algorithms) - set(al.ALGORITHMS)
    if unknown:
        ap.error(f"unknown algorithms {sorted(unknown)}; choose from {al.ALGORITHMS}")
    specs = [s for s in args.strategies.split(",") if s]
    args.strategies = list(dict.fromkeys([BASELINE, TODAY, *specs]))
    try:
        for spec in args.strategies:
            parse_strategy(spec)
    except ValueError as exc:
        ap.error(str(exc))
    return args


@dataclass
class Run:
    """One setting's results: curves[algorithm][strategy] = one accuracy list per seed,
    ceiling[algorithm] = per seed, the accuracy with every pool image labeled."""

    strategies: list[str]
    curves: dict[str, dict[str, list[list[float]]]]
    ceiling: dict[str, list[float]]
    seconds: dict[str, float]
    n_labels: list[int]
    pool: int = 0
    goals: dict[str, dict[str, dict]] = field(default_factory=dict)


def run_all(x: np.ndarray, y: np.ndarray, args: argparse.Namespace, strategies: list[str]) -> Run:
    run = Run(strategies, {a: {s: [] for s in strategies} for a in args.algorithms}, {}, {}, [])
    for seed in range(args.seeds):
        x_pool, x_test, y_pool, y_test = train_test_split(
            x, y, test_size=0.2, stratify=y, random_state=seed
        )
        batch = selection.default_batch_size(len(y_pool), args.fraction)
        run.n_labels = [batch * (r + 1) for r in range(args.rounds + 1)]
        run.pool = len(y_pool)
        t = time.perf_counter()
        pool_clusters = {  # unsupervised, once per pool (cluster_margin's "cluster once")
            k: selection.kmeans_clusters(x_pool, k, seed) for k in cluster_counts(strategies)
        }
        run.seconds["pool k-means"] = run.seconds.get("pool k-means", 0.0) + (
            time.perf_counter() - t
        )
        for algorithm in args.algorithms:
            settings = al.TrainSettings(algorithms=(algorithm,), seed=seed)
            full = al.train(np.arange(len(y_pool)), x_pool, y_pool, settings).model
            run.ceiling.setdefault(algorithm, []).append(
                float((full.predict(x_test) == y_test).mean())
            )
            for strategy in strategies:
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
                    pool_clusters,
                )
                key = f"{algorithm}/{strategy}"
                run.seconds[key] = run.seconds.get(key, 0.0) + time.perf_counter() - t
                run.curves[algorithm][strategy].append(acc)
                print(f"seed {seed} {key}: {acc[0]:.3f} -> {acc[-1]:.3f}", flush=True)
    run.goals = {
        a: {s: goal(run.curves[a], s, run.n_labels) for s in strategies if s != BASELINE}
        for a in args.algorithms
    }
    return run


def goal_labels(n_labels: list[int]) -> int:
    """The most labels a curve may take to meet the goal (a point of the grid)."""
    return max(n for n in n_labels if n / n_labels[-1] <= GOAL_SHARE)


def verdict(algorithm: str, run: Run, setting: str) -> str:
    """The goal in words for the product's default strategy, with the shortfall if missed."""
    g = run.goals[algorithm][TODAY]
    n_goal = goal_labels(run.n_labels)
    at_goal = float(np.array(run.curves[algorithm][TODAY])[:, run.n_labels.index(n_goal)].mean())
    target = g["random_final_accuracy"]
    ceiling = float(np.mean(run.ceiling[algorithm]))
    spread = (
        f"{g['share_seed_mean']:.0%} ± {g['share_seed_std']:.0%} over the {g['seeds_reached']} "
        "seeds that reach it"
        if g["seeds_reached"]
        else "no seed reaches it"
    )
    head = (
        f"**Goal met** ({algorithm}, {setting}): `{TODAY}`, the `label_queue` default, reaches "
        if g["goal_met"]
        else f"**Goal not met** ({algorithm}, {setting}): `{TODAY}`, the `label_queue` default, "
        + ("reaches " if g["share_mean_curve"] is not None else "never reaches ")
    )
    reach = (
        f"random's final accuracy {target:.3f} at {_pct(g['share_mean_curve'])} of its "
        f"{run.n_labels[-1]} labels on the mean curve"
        if g["share_mean_curve"] is not None
        else f"random's final accuracy {target:.3f} on the mean curve"
    )
    return (
        f"{head}{reach} (at {n_goal} labels: {at_goal:.3f}, "
        f"{at_goal - target:+.3f} vs the target); per seed {spread}, "
        f"{g['seeds_within_goal']}/{len(g['share_per_seed'])} seeds within {GOAL_SHARE:.0%}. "
        f"Random ends {target:.3f}, {ceiling - target:.3f} below the ceiling {ceiling:.3f} "
        f"(the classifier on all {run.pool} pool images)."
    )


def clearly_better(algorithm: str, run: Run) -> list[str]:
    """Strategies that reach random's final with fewer labels than today's on the mean curve
    and do not lose to it after the first two rounds (the bar for a new default)."""
    today = run.goals[algorithm][TODAY]["share_mean_curve"] or np.inf
    curves = run.curves[algorithm]
    early = np.array(curves[TODAY])[:, 1:3].mean(axis=0)
    return [
        s
        for s in run.strategies
        if s not in (BASELINE, TODAY)
        and (run.goals[algorithm][s]["share_mean_curve"] or np.inf) < today
        and (np.array(curves[s])[:, 1:3].mean(axis=0) >= early).all()
    ]


def conclusion(algorithm: str, run: Run, compare: Run | None) -> str:
    """What the numbers say: the default, how thin the margin is, why a setting misses."""
    better = clearly_better(algorithm, run)
    default = (
        f"`{better[0]}` does better than `{TODAY}` on the mean curve without losing at the "
        "first rounds"
        if better
        else f"No other strategy reaches random's final with fewer labels than `{TODAY}` on "
        "the mean curve without losing to it at the first rounds, so `label_queue` keeps "
        f"`{TODAY}` as its default"
    )
    n_goal = goal_labels(run.n_labels)
    col = run.n_labels.index(n_goal)
    today = np.array(run.curves[algorithm][TODAY])[:, col]
    target = run.goals[algorithm][TODAY]["random_final_accuracy"]
    text = (
        f"{default}. The margin is thin: at {n_goal} labels `{TODAY}` is "
        f"{today.mean() - target:+.3f} from the target with a seed std of {today.std():.3f}, "
        f"and the share moves in steps of {run.n_labels[0] / run.n_labels[-1]:.0%}."
    )
    if compare is not None:
        g = compare.goals[algorithm][TODAY]
        gap = float(np.mean(compare.ceiling[algorithm])) - g["random_final_accuracy"]
        noise = float(np.array(compare.curves[algorithm][BASELINE])[:, -1].std())
        text += (
            f" On the PCA ({'met' if g['goal_met'] else 'not met'}) random's final is "
            f"{gap:.3f} below the ceiling of that linear model (random's seed std {noise:.3f}): "
            + (
                "the curves are flat, so no strategy can get there much earlier."
                if gap <= 2 * noise
                else "room is left above it."
            )
            + " The product's classifier learns from the full vectors, which is what the goal "
            "is judged on."
        )
    return text


def strategy_table(algorithm: str, run: Run, n_seeds: int) -> list[str]:
    header = ["strategy", "share (mean curve)", "per seed", "seeds (≤ 70 %)", "paired per seed"]
    header += ["final accuracy", "early vs today", "goal"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for s in run.strategies:
        if s != BASELINE:
            row = goal_row(s, run.goals[algorithm][s], run.curves[algorithm], n_seeds, run.n_labels)
            lines.append("| " + " | ".join(row) + " |")
    fin = np.array(run.curves[algorithm][BASELINE])[:, -1]
    ceiling = np.array(run.ceiling[algorithm])
    lines += [
        "",
        f"`random` final: {fin.mean():.3f} ± {fin.std():.3f}; ceiling (all pool images "
        f"labeled): {ceiling.mean():.3f} ± {ceiling.std():.3f}.",
    ]
    return lines


def curve_table(run: Run, algorithms: list[str]) -> list[str]:
    cols = [(a, s) for a in algorithms for s in run.strategies]
    lines = [
        "| labels | " + " | ".join(f"{a} {s}" for a, s in cols) + " |",
        "|---" * (1 + len(cols)) + "|",
    ]
    for r, n in enumerate(run.n_labels):
        cells = [np.array(run.curves[a][s])[:, r] for a, s in cols]
        row = " | ".join(f"{c.mean():.3f} ± {c.std():.3f}" for c in cells)
        lines.append(f"| {n} | {row} |")
    return lines


def setting_name(pca: int, dim: int) -> str:
    return f"PCA to {pca}-d" if pca else f"the full {dim}-d vectors"


def report(args, n_images: int, dim: int, run: Run, compare: Run | None, embed_s: float) -> str:
    """The results page: the goal first, then the comparison and the learning curves."""
    main_setting = setting_name(args.pca, dim)
    lines = [
        "# Active learning on CIFAR-10 test embeddings",
        "",
        f"{n_images} images, embeddings {dim}-d ({args.model} / {args.weights} / image size "
        f"{args.image_size}, `benchmarks.common.cifar_embeddings`), the classifier on "
        f"{main_setting}"
        + (" (as the product's `classifier` sees them)" if not args.pca else "")
        + f"; pool 80 % / test 20 %; seed {args.fraction:.0%} of the pool, batches of "
        f"{args.fraction:.0%}, {args.rounds} rounds, {args.seeds} seeds. Each round trains the "
        "classifier as the `classifier` asset does (held-out split, temperature scaling, refit "
        "on every label); uncertainty = margin of its calibrated probabilities. Test accuracy, "
        "mean ± std over seeds.",
        "",
        f"## Goal: random's final accuracy with ≤ {GOAL_SHARE:.0%} of its labels",
        "",
        *(verdict(a, run, main_setting) for a in args.algorithms),
        "",
    ]
    if compare is not None:
        cmp_setting = setting_name(args.compare_pca, dim)
        lines += [f"The same with {cmp_setting} (random and `{TODAY}` only):", ""]
        lines += [verdict(a, compare, cmp_setting) for a in args.algorithms]
        lines.append("")
    lines += [*(conclusion(a, run, compare) for a in args.algorithms), ""]
    lines += [
        "Strategies compared (cost per round; the parameters are the defaults named, plus "
        "the variants listed, all on the same seeds, none tuned further):",
        "",
        *(
            f"- `{s}`: {STRATEGIES[parse_strategy(s)[0]]}; {COST[parse_strategy(s)[0]]}"
            for s in run.strategies
        ),
        "",
        "Share = labels at which the curve first reaches random's final mean accuracy, over "
        f"random's {run.n_labels[-1]} (steps of {run.n_labels[0] / run.n_labels[-1]:.0%}: the "
        f"goal needs it by {goal_labels(run.n_labels)} labels). Per seed: each seed's curve "
        "against the same target (mean ± std over the seeds that reach it; seeds reaching it, "
        "in brackets those within the goal), and against its own seed's random final "
        f"(paired). Early: accuracy minus `{TODAY}`'s after rounds 1 and 2.",
        "",
    ]
    for a in args.algorithms:
        lines += [f"### {a}, {main_setting}", "", *strategy_table(a, run, args.seeds), ""]
        if compare is not None:
            cmp_setting = setting_name(args.compare_pca, dim)
            lines += [f"### {a}, {cmp_setting}", "", *strategy_table(a, compare, args.seeds), ""]
    lines += ["## Learning curves", "", f"{main_setting}:", "", *curve_table(run, args.algorithms)]
    if compare is not None:
        cmp_setting = setting_name(args.compare_pca, dim)
        lines += ["", f"{cmp_setting}:", "", *curve_table(compare, args.algorithms)]
    seconds = dict(run.seconds)
    if compare is not None:
        seconds.update({f"PCA {k}": v for k, v in compare.seconds.items()})
    lines += [
        "",
        "Seconds (all seeds, training included): "
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
        + f"; embeddings {embed_s:.0f} s (cached after the first run).",
        "",
        f"![learning curves]({args.name}.png)",
    ]
    return "\n".join(lines)


def payload(run: Run) -> dict:
    return {
        "strategies": run.strategies,
        "n_labels": run.n_labels,
        "pool": run.pool,
        "accuracy": run.curves,
        "ceiling": run.ceiling,
        "goal": run.goals,
        "seconds": run.seconds,
    }


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    x_raw, y = cifar_embeddings(args.model, args.weights, args.image_size)
    embed_s = time.perf_counter() - t0
    dim = x_raw.shape[1]

    def features(pca: int) -> np.ndarray:  # unsupervised, on all images: no labels are used
        return PCA(pca, random_state=0).fit_transform(x_raw).astype(np.float32) if pca else x_raw

    run = run_all(features(args.pca), y, args, args.strategies)
    compare = None
    if args.compare_pca is not None and args.compare_pca != args.pca:
        compare = run_all(features(args.compare_pca), y, args, [BASELINE, TODAY])
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(run.curves, run.n_labels, RESULTS / f"{args.name}.png")
    write_results(
        args.name,
        {
            "args": vars(args),
            "embedding_dim": dim,
            **payload(run),
            "compare": None if compare is None else {"pca": args.compare_pca, **payload(compare)},
        },
        report(args, len(y), dim, run, compare, embed_s),
    )


if __name__ == "__main__":
    main()
