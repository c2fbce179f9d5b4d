"""Where the served fine-tune starts (issue 40, item 3): from the pretrained weights, or from
the average of the two half-trainings the gate judged, for two thirds of the epochs?

    python -m benchmarks.warm_start [--domains cifar blood-cells] [--draws 0 1 2]

Per domain and draw: `--pool` random images per class (`domain_quality`'s folders), `--per` of
them labeled (CIFAR-10 photos 50, blood-cell micrographs 40), the rest judge. The default
recipe (`embedding_model`'s config) trains the two half-trainings on a random half each, then
the served training on every label twice: cold (pretrained weights, `epochs_for(n)`) and warm
(`finetune.averaged` of the halves, `epochs_for(n, warm=True)`). Measured on the unlabeled
images: logistic regression (the classifier's default C) on each trained trunk's features of
the labeled ones, and the trained cosine head; the seconds of each served training.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import numpy as np

from benchmarks.common import write_results
from benchmarks.domain_quality import drawn

PER = {"cifar": 50, "blood-cells": 40}


def pick(domain: str, per: int, pool: int, draw: int) -> tuple[list, np.ndarray, int]:
    """(files, labels, n_labeled): the labeled images first, then the judged ones."""
    labeled, judged = [], []
    for name, picked in drawn(domain, pool, draw):
        labeled += [(f, name) for f in picked[:per]]
        judged += [(f, name) for f in picked[per:]]
    both = labeled + judged
    return [f for f, _ in both], np.array([c for _, c in both]), len(labeled)


def one(domain: str, per: int, pool: int, draw: int) -> dict:
    import torch
    from sklearn.linear_model import LogisticRegression

    from embedding_assets.configs.embedding import EmbeddingModelConfig
    from embedding_assets.embedding.backbones import build_backbone
    from embedding_assets.embedding.embedder import EmbedParams
    from embedding_assets.embedding.finetune import (
        averaged,
        finetune_classifier,
        frozen_outputs,
        trunk_features,
    )
    from embedding_assets.embedding.metric_learning import FitSettings, float_input
    from embedding_assets.embedding.training import _uint8_images, trunk_spec
    from embedding_assets.embedding.trunk_split import split_at_stride
    from embedding_assets.learning.tuning import LOGREG_C

    cfg = replace(EmbeddingModelConfig().train_config(), time_budget_s=0.0)
    base = EmbedParams()

    def fresh():
        return replace(build_backbone(base.spec()), spec=trunk_spec(base, cfg))

    files, labels, n = pick(domain, per, pool, draw)
    pretrained = fresh()
    pre = pretrained.spec.preprocess
    images = _uint8_images(files, pre)
    split = split_at_stride(pretrained.model, cfg.frozen_stride)
    frozen = frozen_outputs(split.prefix, images, float_input(pre.mean, pre.std))
    half = np.random.default_rng(draw).permutation(n) % 2

    def train(rows: np.ndarray, start=None):
        epochs = cfg.epochs_for(len(rows), warm=start is not None)
        fit = FitSettings(replace(cfg, epochs=epochs))
        started = time.perf_counter()
        out = finetune_classifier(
            fresh(), images[rows], labels[rows], fit, frozen=frozen.subset(rows), start=start
        )
        return out, epochs, time.perf_counter() - started

    def accuracy(out) -> tuple[float, float]:
        x = trunk_features(out.backbone, out.frozen_stride, frozen)
        fitted = LogisticRegression(max_iter=2000, C=LOGREG_C).fit(x[:n], labels[:n])
        logreg = float((fitted.predict(x[n:]) == labels[n:]).mean())
        with torch.no_grad():
            best = out.classifier(torch.as_tensor(x[n:])).argmax(1).numpy()
        return logreg, float((np.array(out.classes)[best] == labels[n:]).mean())

    halves = [train(np.flatnonzero(half != h))[0] for h in (0, 1)]
    row = {"domain": domain, "per": per, "draw": draw, "labeled": n, "judged": len(files) - n}
    every = np.arange(n)
    for name, start in (("cold", None), ("warm", averaged(halves))):
        out, epochs, seconds = train(every, start)
        logreg, head = accuracy(out)
        row |= {f"{name}_logreg": logreg, f"{name}_head": head, f"{name}_epochs": epochs}
        row[f"{name}_s"] = round(seconds, 1)
    print(row, flush=True)
    return row


def report(rows: list[dict]) -> str:
    lines = [
        "# The served fine-tune: from the pretrained weights or from the average of the halves",
        "",
        "Default recipe, 2 CPUs. Cold: the served training on every label from the pretrained",
        "weights (`epochs_for(n)`); warm: from the average of the two half-trainings",
        "(`finetune.averaged`), two thirds of the epochs. Accuracy on the unlabeled images:",
        "logistic regression on the trunk's features of the labeled ones (logreg), the cosine",
        "head (head).",
        "",
        "| domain | labels | draw | cold logreg | warm logreg | cold head | warm head "
        "| cold epochs, s | warm epochs, s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['domain']} | {r['labeled']} | {r['draw']} | {r['cold_logreg']:.3f} | "
            f"{r['warm_logreg']:.3f} | {r['cold_head']:.3f} | {r['warm_head']:.3f} | "
            f"{r['cold_epochs']}, {r['cold_s']} | {r['warm_epochs']}, {r['warm_s']} |"
        )
    lines.append("")
    for domain in sorted({r["domain"] for r in rows}):
        mine = [r for r in rows if r["domain"] == domain]
        diff = [r["warm_logreg"] - r["cold_logreg"] for r in mine]
        head = [r["warm_head"] - r["cold_head"] for r in mine]
        share = statistics.mean(r["warm_s"] / r["cold_s"] for r in mine)
        lines.append(
            f"- {domain}, {len(mine)} draws: warm - cold logreg {statistics.mean(diff):+.3f} "
            f"({min(diff):+.3f} to {max(diff):+.3f}), head {statistics.mean(head):+.3f}; "
            f"the warm training took {share:.0%} of the cold one's seconds"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", nargs="+", default=["cifar", "blood-cells"])
    parser.add_argument("--draws", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--pool", type=int, default=150, help="images per class in a folder")
    args = parser.parse_args()
    rows = [one(d, PER[d], args.pool, draw) for d in args.domains for draw in args.draws]
    write_results("warm_start", {"rows": rows}, report(rows))


if __name__ == "__main__":
    main()
