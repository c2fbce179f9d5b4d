"""Embedding quality on CIFAR-10 test (../shared), as the reference papers measure it: kNN
top-1, Precision@5 (GUIE), kNN macro-F1 and silhouette on an evaluation half that is never
trained on: the raw pretrained backbone, a projection head per loss, and fine-tuning the
backbone: `embedding_model`'s default (a cosine-softmax classifier over the stages past the
early, frozen ones, BatchNorm statistics frozen, within a time budget) and, with
--metric-finetune, the metric losses.

The split is fixed by content hash (the same rule as the `embedding_model` asset). Head-only
trains over the cached backbone features (224 px, the weights' own preprocessing);
fine-tuning trains at a smaller size so that an epoch fits a CPU budget, and is compared with
the raw backbone at that same size.

    python -m benchmarks.embedding_quality                   # ~15 min on 2 CPUs
    python -m benchmarks.embedding_quality --metric-finetune # + the metric-loss fine-tunes
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import numpy as np
import torch
from torchvision.transforms import v2

from benchmarks.common import CACHE, cifar_embeddings, write_results
from embedding_assets.catalog.images import load_image
from embedding_assets.common.fingerprints import hash_fraction
from embedding_assets.embedding import evaluation as embedding_eval
from embedding_assets.embedding.backbones import build_backbone, file_spec, resolve_spec
from embedding_assets.embedding.defaults import DEFAULT_MODEL, DEFAULT_WEIGHTS
from embedding_assets.embedding.finetune import finetune_classifier
from embedding_assets.embedding.heads import embed_features
from embedding_assets.embedding.metric_learning import (
    FitSettings,
    finetune,
    float_input,
    train_head,
)
from embedding_assets.embedding.train_config import TrainConfig
from resources.duckdb_store import connect
from resources.storage import DataPaths

LOSSES = ("contrastive", "triplet", "supcon", "arcface")
GOAL_TOP1, GOAL_P5, GOAL_MINUTES = 0.85, 0.80, 10


def load_split(model: str, weights: str, finetune_size: int, cosface_size: int) -> dict:
    """Features, pixels at the fine-tuning sizes, labels and the fixed 50/50 split."""
    feats, _ = cifar_embeddings(model, weights, 0)  # builds/refreshes the cached catalog
    paths = DataPaths(CACHE / "cifar_data")
    with connect(paths.catalog_db, read_only=True) as con:
        rows = con.execute(
            "SELECT i.image_id, i.path, i.sha256, l.label FROM usable_images i "
            "JOIN current_labels l USING (image_id) ORDER BY i.image_id"
        ).fetchall()
    is_eval = np.array([hash_fraction(r[2]) < 0.5 for r in rows])
    is_val = np.array([hash_fraction(r[2][8:]) < 0.1 for r in rows]) & ~is_eval
    images = [load_image(r[1]) for r in rows]
    geometry = v2.Compose(file_spec(model, finetune_size).preprocess.geometry())
    uncut = v2.Compose(file_spec(model, cosface_size, center_crop=False).preprocess.geometry())
    return {
        "X": feats,
        "pixels": torch.stack([geometry(im) for im in images]),
        "uncut": torch.stack([uncut(im) for im in images]),
        "y": np.array([r[3] for r in rows]),
        "eval": is_eval,
        "val": is_val,
        "fit": ~is_eval & ~is_val,
    }


def _score(vectors: np.ndarray, y: np.ndarray) -> dict:
    m = embedding_eval.evaluate(vectors, y)
    return {k: round(float(v), 4) for k, v in m.items() if k != "n_eval"}


def run_head(data: dict, cfg: TrainConfig) -> dict:
    X, y = data["X"], data["y"]
    out = train_head(
        X[data["fit"]], y[data["fit"]], FitSettings(cfg), X_val=X[data["val"]], y_val=y[data["val"]]
    )
    scores = _score(embed_features(out.head, X[data["eval"]]), y[data["eval"]])
    return {**scores, "epochs": len(out.history), "minutes": round(out.seconds / 60, 2)}


def _trunk_features(trunk: torch.nn.Module, pixels: torch.Tensor, pre) -> np.ndarray:
    to_float = float_input(pre.mean, pre.std)
    feats = []
    with torch.inference_mode():
        for s in range(0, len(pixels), 256):
            feats.append(trunk(to_float(pixels[s : s + 256])))
    return torch.cat(feats).numpy()


def run_raw_at(data: dict, model: str, weights: str, size: int) -> dict:
    """The untrained pretrained backbone at the fine-tuning size: what fine-tuning must beat."""
    spec = resolve_spec(model, weights, size)
    trunk = build_backbone(spec).model
    vectors = _trunk_features(trunk, data["pixels"][torch.as_tensor(data["eval"])], spec.preprocess)
    return _score(vectors, data["y"][data["eval"]])


def run_cosface(data: dict, cfg: TrainConfig, model: str, weights: str) -> dict:
    """`embedding_model`'s default on the training half (its held-out split is the other half
    here): the trunk's pooled features are the embeddings, served without a centre crop."""
    spec = resolve_spec(model, weights)
    backbone = build_backbone(spec)
    pre = spec.preprocess
    px, y, train = data["uncut"], data["y"], ~data["eval"]
    started = time.perf_counter()
    out = finetune_classifier(
        backbone,
        px[torch.as_tensor(train)],
        y[train],
        FitSettings(
            cfg,
            progress=lambda r: print(
                f"    epoch {r['epoch']}/{r['epochs']}: {r['seconds']:.0f} s", flush=True
            ),
        ),
    )
    train_minutes = (time.perf_counter() - started) / 60
    feats = _trunk_features(out.backbone, px[torch.as_tensor(data["eval"])], pre)
    return {
        **_score(feats, y[data["eval"]]),
        "epochs": len(out.history),
        "minutes": round(train_minutes, 2),
    }


def run_finetune(data: dict, cfg: TrainConfig, model: str, weights: str, size: int) -> dict:
    spec = resolve_spec(model, weights, size)
    backbone = build_backbone(spec)
    pre = spec.preprocess
    px, y = data["pixels"], data["y"]
    out = finetune(
        backbone,
        px[torch.as_tensor(data["fit"])],
        None if cfg.loss == "ntxent" else y[data["fit"]],
        FitSettings(
            cfg,
            progress=lambda r: print(f"    epoch {r['epoch']}: loss {r['loss']:.3f}", flush=True),
        ),
        images_val=px[torch.as_tensor(data["val"])],
        y_val=y[data["val"]],
    )
    feats = _trunk_features(out.backbone.eval(), px[torch.as_tensor(data["eval"])], pre)
    scores = _score(embed_features(out.head, feats), y[data["eval"]])
    return {**scores, "epochs": len(out.history), "minutes": round(out.seconds / 60, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS)
    ap.add_argument("--head-epochs", type=int, default=60)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--finetune-size", type=int, default=128, help="pixels while fine-tuning")
    ap.add_argument("--finetune-lr", type=float, default=1e-4, help="low: pretrained weights")
    ap.add_argument("--quick", action="store_true", help="one fine-tuning loss only")
    ap.add_argument("--metric-finetune", action="store_true", help="also the metric losses")
    ap.add_argument("--cosface-size", type=int, default=160, help="embedding_model's default")
    ap.add_argument("--cosface-epochs", type=int, default=5)
    ap.add_argument(
        "--cosface-budget", type=float, default=540, help="seconds: 10 min less extraction"
    )
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    data = load_split(args.model, args.weights, args.finetune_size, args.cosface_size)
    y_eval = data["y"][data["eval"]]
    print(f"fit {data['fit'].sum()}, val {data['val'].sum()}, eval {data['eval'].sum()} images")
    rows = [
        {
            "mode": "none (raw backbone)",
            "loss": "-",
            "px": 224,
            "size": data["X"].shape[1],
            **_score(data["X"][data["eval"]], y_eval),
            "epochs": 0,
            "minutes": 0.0,
        }
    ]
    head = TrainConfig(epochs=args.head_epochs, patience=8, batch_size=256, embedding_size=64)
    for loss in LOSSES:
        started = time.perf_counter()
        result = run_head(data, replace(head, loss=loss))
        rows.append({"mode": "head", "loss": loss, "px": 224, "size": 64, **result})
        print(rows[-1], f"{time.perf_counter() - started:.0f}s", flush=True)
    best = max((r for r in rows if r["mode"] == "head"), key=lambda r: r["knn_top1"])["loss"]
    for size in (128, 256):
        result = run_head(data, replace(head, loss=best, embedding_size=size))
        rows.append({"mode": "head", "loss": best, "px": 224, "size": size, **result})
        print(rows[-1], flush=True)
    cos = args.cosface_size
    spec = resolve_spec(args.model, args.weights, cos, center_crop=False)
    raw_uncut = _trunk_features(
        build_backbone(spec).model, data["uncut"][torch.as_tensor(data["eval"])], spec.preprocess
    )
    rows.append(
        {
            "mode": "none (raw backbone, no crop)",
            "loss": "-",
            "px": cos,
            "size": data["X"].shape[1],
            **_score(raw_uncut, y_eval),
            "epochs": 0,
            "minutes": 0.0,
        }
    )
    default = TrainConfig(
        loss="cosface",
        epochs=args.cosface_epochs,
        batch_size=32,
        lr=3e-4,
        weight_decay=0.01,
        time_budget_s=args.cosface_budget,
    )
    print(f"fine-tune cosface (the default) at {cos} px ...", flush=True)
    result = run_cosface(data, default, args.model, args.weights)
    rows.append(
        {
            "mode": "finetune (default)",
            "loss": "cosface",
            "px": cos,
            "size": data["X"].shape[1],
            **result,
        }
    )
    print(rows[-1], flush=True)
    if not args.metric_finetune:
        return _write(rows, data, args)
    px = args.finetune_size
    raw_small = run_raw_at(data, args.model, args.weights, px)
    rows.append(
        {
            "mode": "none (raw backbone)",
            "loss": "-",
            "px": px,
            "size": data["X"].shape[1],
            **raw_small,
            "epochs": 0,
            "minutes": 0.0,
        }
    )
    tune = TrainConfig(
        epochs=args.finetune_epochs,
        patience=2,
        batch_size=128,
        embedding_size=64,
        augmentation="trivialaugment",
        lr=args.finetune_lr,
    )
    for loss in ("supcon",) if args.quick else ("supcon", "arcface"):
        print(f"fine-tune {loss} at {px} px ...", flush=True)
        result = run_finetune(data, replace(tune, loss=loss), args.model, args.weights, px)
        rows.append({"mode": "finetune", "loss": loss, "px": px, "size": 64, **result})
        print(rows[-1], flush=True)
    _write(rows, data, args)


def _write(rows: list[dict], data: dict, args) -> None:
    write_results(
        "embedding_quality", {"rows": rows, "args": vars(args)}, _markdown(rows, data, args)
    )


def _markdown(rows: list[dict], data: dict, args) -> str:
    lines = [
        "# Embedding quality (CIFAR-10 test, trained on one half, evaluated on the other)",
        "",
        f"{int(data['fit'].sum())} training + {int(data['val'].sum())} validation (early "
        f"stopping) images, {int(data['eval'].sum())} evaluation images, split by content hash. "
        f"Backbone `{args.model}` with weights `{args.weights}` (the platform's default: "
        "ImageNet weights from a registry package). Head-only trains a 512-hidden projection "
        f"head over cached 224 px backbone features (≤{args.head_epochs} epochs). The default "
        f"fine-tune (`embedding_model`'s) trains the backbone's stages past output stride "
        f"{TrainConfig().frozen_stride} (the earlier ones stay pretrained and run once per "
        f"image) as a cosine-softmax classifier on all {int((~data['eval']).sum())} training "
        f"images at {args.cosface_size} px without a centre crop, BatchNorm statistics frozen, "
        f"≤{args.cosface_epochs} epochs within {args.cosface_budget:.0f} s (the frozen pass "
        "included); its embeddings are the trunk's pooled features. "
        + (
            f"The metric-loss fine-tunes train backbone + head at {args.finetune_size} px with "
            f"TrivialAugmentWide (≤{args.finetune_epochs} epochs, lr {args.finetune_lr}). "
            if args.metric_finetune
            else ""
        )
        + f"{os.cpu_count()} CPUs, torch {torch.__version__}.",
        "",
        "| mode | loss | px | size | kNN top-1 | P@5 | kNN macro-F1 | silhouette | epochs | "
        "train min |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['loss']} | {r['px']} | {r['size']} | {r['knn_top1']:.3f} | "
            f"{r['precision_at_5']:.3f} | {r['knn_macro_f1']:.3f} | {r['silhouette']:.3f} | "
            f"{r['epochs']} | {r['minutes']:.1f} |"
        )
    within = [r for r in rows if r["minutes"] <= GOAL_MINUTES]
    best = max(within, key=lambda r: r["knn_top1"])
    ok = best["knn_top1"] >= GOAL_TOP1 and best["precision_at_5"] >= GOAL_P5
    lines += [
        "",
        f"Best within {GOAL_MINUTES} training minutes: {best['mode']} / {best['loss']} / "
        f"{best['px']} px / {best['size']}-d: kNN top-1 {best['knn_top1']:.3f}, P@5 "
        f"{best['precision_at_5']:.3f} in {best['minutes']:.1f} min. Goal (kNN top-1 ≥ "
        f"{GOAL_TOP1} and P@5 ≥ {GOAL_P5} within {GOAL_MINUTES} CPU minutes of training): "
        f"{'met' if ok else 'NOT met'}.",
        "",
        "Reproduce: `python -m benchmarks.embedding_quality` (needs ../shared/data/cifar10).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
