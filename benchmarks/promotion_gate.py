"""The fine-tune's promotion gate, measured (issue 40): does it promote a fine-tune that is
better from a few labels per class, and how often does it promote one that is not?

    python -m benchmarks.promotion_gate [--per 20 40 50] [--draws 0 1 2] [--keep]
        [--domains cifar blood-cells]

For each domain (CIFAR-10 test photos; the blood-cell micrographs of ../shared/data), labels per
class and draw: `per` random images per class in class folders, a fresh catalog, then
`embedding_model` with the default settings (every labeled image judged by the half-training
that left it out, `embedding/judging.py`), twice:

- **default**: the fine-tune users get: promoted or not, wins and losses, kNN top-1 of the
  challenger and of the plain backbone over the same images, seconds;
- **no training** (`epochs=0`, `train_image_size=0`): the pretrained trunk, untouched, served
  as a fine-tune is (at the backbone's size, without the centre crop): a challenger that
  differs from the plain backbone by the crop alone, so a promotion there is a near-false one
  (its figures are reported beside it).

On the default run's paired results it also reports **swapped**: each image's two results
exchanged at random (`--swaps` times), the share promoted, i.e. the test's false-promotion
rate where challenger and current model are equally good; and **held-out 20 %**: what the
same paired test decides on the images of a 20 % held-out split only (the gate before halves
judged that many; there its challenger had trained on 80 %, so this is an approximation).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, last_results, require_cifar, write_results

BLOOD = REPO.parent / "shared" / "data" / "blood-cells"
HELD_OUT = 0.2


def source(domain: str) -> Path:
    if domain == "cifar":
        return require_cifar()
    if not BLOOD.is_dir():
        raise SystemExit(f"{BLOOD} not found: this domain needs ../shared/data/blood-cells")
    return BLOOD


def build(domain: str, per: int, draw: int, dest: Path) -> None:
    """`per` images of each class, drawn with seed `draw`, in class folders under `dest`."""
    rng = np.random.default_rng(draw)
    for cls in sorted(p for p in source(domain).iterdir() if p.is_dir()):
        files = sorted(f for f in cls.iterdir() if f.is_file())
        for i in rng.choice(len(files), size=min(per, len(files)), replace=False):
            target = dest / cls.name / files[i].name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(files[i], target)


@dataclass
class Trial:
    domain: str
    per: int
    draw: int
    promoted: bool
    wins: int
    losses: int
    top1: float
    plain_top1: float
    seconds: float
    null_promoted: bool  # epochs=0: the untouched trunk
    null_top1: float
    null_wins: int
    null_losses: int
    swapped_rate: float
    held_out_promoted: bool
    held_out_images: int


def one_trial(domain: str, per: int, draw: int, swaps: int) -> Trial:
    from embedding_assets.catalog.labels import labeled_split
    from embedding_assets.catalog.scan import scan_catalog
    from embedding_assets.common.promotion import decide
    from embedding_assets.configs.embedding import EmbeddingModelConfig
    from embedding_assets.embedding.training import train_embedding_model
    from resources.paths import DataPaths

    with tempfile.TemporaryDirectory(prefix="gate-") as tmp:
        folder = Path(tmp) / "images"
        build(domain, per, draw, folder)
        paths = DataPaths(Path(tmp) / "data")
        scan_catalog(paths.catalog_db, folder)
        keys = labeled_split(paths.catalog_db).keys
        apart = DataPaths(Path(tmp) / "null")  # its own catalog: judged against the plain one
        shutil.copytree(paths.root, apart.root)
        started = time.perf_counter()
        out = train_embedding_model(paths, EmbeddingModelConfig().model_settings())
        seconds = time.perf_counter() - started
        untouched = EmbeddingModelConfig(epochs=0, train_image_size=0)
        null = train_embedding_model(apart, untouched.model_settings())
    paired = out.paired
    rng = np.random.default_rng(draw)
    promoted_swaps = 0
    for _ in range(swaps):
        flip = rng.random(len(paired.challenger)) < 0.5
        a = np.where(flip, paired.current, paired.challenger)
        b = np.where(flip, paired.challenger, paired.current)
        promoted_swaps += decide(a, b).promoted
    held = keys < HELD_OUT  # every labeled image is judged when both halves can be
    held_out = decide(paired.challenger[held], paired.current[held])
    verdict = decide(paired.challenger, paired.current)
    null_verdict = decide(null.paired.challenger, null.paired.current) if null.paired else None
    return Trial(
        domain,
        per,
        draw,
        out.promoted,
        verdict.wins,
        verdict.losses,
        out.metrics.get("knn_top1", 0.0),
        out.current_metrics.get("knn_top1", 0.0),
        seconds,
        null.promoted if null_verdict else False,
        null.metrics.get("knn_top1", 0.0),
        null_verdict.wins if null_verdict else 0,
        null_verdict.losses if null_verdict else 0,
        promoted_swaps / swaps,
        held_out.promoted,
        int(held.sum()),
    )


def kept(domains: list[str], pers: list[int]) -> list[Trial]:
    """The last results' trials that this run does not repeat."""
    found = [Trial(**t) for t in last_results("promotion_gate").get("trials", [])]
    return [t for t in found if t.domain not in domains or t.per not in pers]


def report(trials: list[Trial]) -> str:
    lines = [
        "# Promotion gate: every labeled image judged by the half-training that left it out",
        "",
        "`python -m benchmarks.promotion_gate`: default `embedding_model` settings (EfficientNet-",
        "Lite0 fine-tune, cosface), random draws of labeled images per class, each in a fresh",
        "catalog. *no training*: `epochs=0`, `train_image_size=0`, the pretrained trunk untouched",
        "and served as a fine-tune is (no centre crop): it differs from the plain backbone by",
        "the crop alone, which is not always equal (see its kNN top-1). *swapped*: the default",
        "run's paired results with each image's two results exchanged at random, the share",
        "promoted (the test's false-promotion rate between equal models). *held-out 20 %*: the",
        "same test on a 20 % held-out split's images only (approximating the gate before halves).",
        "",
        "| domain | labels/class | draw | kNN top-1 fine-tune vs plain | won / lost | promoted |"
        " no training: kNN top-1, won / lost, promoted | swapped promoted |"
        " held-out 20 %: images, promoted | seconds |",
        "|---|---:|---:|---|---:|---|---|---:|---|---:|",
    ]
    for t in trials:
        lines.append(
            f"| {t.domain} | {t.per} | {t.draw} | {t.top1:.3f} vs {t.plain_top1:.3f} | "
            f"{t.wins} / {t.losses} | {'yes' if t.promoted else 'no'} | "
            f"{t.null_top1:.3f}, {t.null_wins} / {t.null_losses}, "
            f"{'yes' if t.null_promoted else 'no'} | {t.swapped_rate:.1%} | "
            f"{t.held_out_images}, {'yes' if t.held_out_promoted else 'no'} | {t.seconds:.0f} |"
        )
    false = [t.null_promoted for t in trials]
    better = [t for t in trials if t.top1 > t.plain_top1]
    lines += [
        "",
        f"- Promotions of the untouched trunk: {sum(false)} of {len(false)} runs; swapped: "
        f"{statistics.mean(t.swapped_rate for t in trials):.1%} on average, at most "
        f"{max(t.swapped_rate for t in trials):.1%} (goal: at most 5 %).",
        f"- Fine-tunes better on kNN top-1 than the plain backbone: {len(better)} of "
        f"{len(trials)}; promoted: {sum(t.promoted for t in better)} (by halves), "
        f"{sum(t.held_out_promoted for t in better)} (20 % held out only).",
    ]
    for per in sorted({t.per for t in trials}):
        at = [t for t in better if t.per == per]
        lines.append(
            f"- {per} labels per class: {sum(not t.promoted for t in at)} of {len(at)} better "
            "fine-tunes kept out."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per", type=int, nargs="+", default=[20, 40, 50])
    parser.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--domains", nargs="+", default=["cifar", "blood-cells"])
    parser.add_argument("--swaps", type=int, default=2000)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the last results' trials of the other domains and labels per class",
    )
    args = parser.parse_args()
    trials = kept(args.domains, args.per) if args.keep else []
    for domain in args.domains:
        for per in args.per:
            for draw in args.draws:
                trial = one_trial(domain, per, draw, args.swaps)
                print(trial, flush=True)
                trials.append(trial)
    trials.sort(key=lambda t: (t.domain != "cifar", t.per, t.draw))
    payload = {"trials": [t.__dict__ for t in trials], "swaps": args.swaps}
    write_results("promotion_gate", payload, report(trials))


if __name__ == "__main__":
    main()
