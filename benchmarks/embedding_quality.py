"""Embedding quality of trained models on CIFAR-10 test (../shared), as the reference papers
measure it: kNN top-1, Precision@5 (GUIE), kNN macro-F1 and silhouette on an evaluation half
that is never trained on, for each loss, head-only vs fine-tuning, and embedding size.

The split is fixed by content hash (the same rule as the `embedding_model` asset). Head-only
trains over cached random-init ResNet-18 features; fine-tuning trains the same small backbone
end to end at 32 px. No pretrained weights (none can be downloaded here).

    python -m benchmarks.embedding_quality                 # the full grid (~30 min on 2 CPUs)
    python -m benchmarks.embedding_quality --finetune-epochs 2 --quick   # smoke run
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
from embedding_assets import embedding_eval
from embedding_assets.backbones import Preprocess, build_backbone, resolve_spec
from embedding_assets.embedder import load_image
from embedding_assets.embedding_training import hash_fraction
from embedding_assets.metric_training import TrainConfig, embed_features, finetune, train_head
from resources.duckdb_store import connect
from resources.storage import DataPaths

SIZE = 32
LOSSES = ("contrastive", "triplet", "supcon", "arcface")


def load_split() -> dict:
    """Features, pixels, labels and the fixed 50/50 split (eval = hash fraction < 0.5)."""
    feats, _ = cifar_embeddings("resnet18", "none", SIZE)  # builds/refreshes the cached catalog
    paths = DataPaths(CACHE / "cifar_data")
    with connect(paths.catalog_db, read_only=True) as con:
        rows = con.execute(
            "SELECT i.image_id, i.path, i.sha256, l.label FROM usable_images i "
            "JOIN current_labels l USING (image_id) ORDER BY i.image_id"
        ).fetchall()
    is_eval = np.array([hash_fraction(r[2]) < 0.5 for r in rows])
    is_val = np.array([hash_fraction(r[2][8:]) < 0.1 for r in rows]) & ~is_eval
    pixels = torch.stack([v2.functional.pil_to_tensor(load_image(r[1])) for r in rows])
    return {
        "X": feats,
        "pixels": pixels,
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
        X[data["fit"]], y[data["fit"]], cfg, X_val=X[data["val"]], y_val=y[data["val"]]
    )
    scores = _score(embed_features(out.head, X[data["eval"]]), y[data["eval"]])
    return {**scores, "epochs": len(out.history), "minutes": round(out.seconds / 60, 2)}


def run_finetune(data: dict, cfg: TrainConfig) -> dict:
    backbone = build_backbone(resolve_spec("resnet18", None, SIZE))
    pre = Preprocess(SIZE, SIZE)
    px, y = data["pixels"], data["y"]
    out = finetune(
        backbone.model,
        backbone.dim,
        px[torch.as_tensor(data["fit"])],
        None if cfg.loss == "ntxent" else y[data["fit"]],
        cfg,
        mean=pre.mean,
        std=pre.std,
        images_val=px[torch.as_tensor(data["val"])],
        y_val=y[data["val"]],
        progress=lambda r: print(f"    epoch {r['epoch']}: loss {r['loss']:.3f}", flush=True),
    )
    to_float = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre.mean, pre.std)])
    eval_px = px[torch.as_tensor(data["eval"])]
    feats = []
    with torch.no_grad():
        for s in range(0, len(eval_px), 512):
            feats.append(out.backbone(to_float(eval_px[s : s + 512])))
    vectors = embed_features(out.head, torch.cat(feats).numpy())
    scores = _score(vectors, y[data["eval"]])
    return {**scores, "epochs": len(out.history), "minutes": round(out.seconds / 60, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head-epochs", type=int, default=60)
    ap.add_argument("--finetune-epochs", type=int, default=6)
    ap.add_argument("--ntxent-epochs", type=int, default=3, help="two views: ~5x slower")
    ap.add_argument("--quick", action="store_true", help="fewer fine-tuning runs")
    ap.add_argument("--finetune-sizes", action="store_true", help="also sizes 128-512 (+20 min)")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    data = load_split()
    y_eval = data["y"][data["eval"]]
    print(f"fit {data['fit'].sum()}, val {data['val'].sum()}, eval {data['eval'].sum()} images")
    rows = [
        {
            "mode": "none (raw backbone)",
            "loss": "-",
            "size": data["X"].shape[1],
            **_score(data["X"][data["eval"]], y_eval),
            "epochs": 0,
            "minutes": 0.0,
        }
    ]
    head = TrainConfig(epochs=args.head_epochs, patience=8, batch_size=256, embedding_size=64)
    for loss in LOSSES:
        started = time.perf_counter()
        rows.append(
            {"mode": "head", "loss": loss, "size": 64, **run_head(data, replace(head, loss=loss))}
        )
        print(rows[-1], f"{time.perf_counter() - started:.0f}s", flush=True)
    best = max((r for r in rows if r["mode"] == "head"), key=lambda r: r["knn_top1"])["loss"]
    for size in (128, 256, 512):
        cfg = replace(head, loss=best, embedding_size=size)
        rows.append({"mode": "head", "loss": best, "size": size, **run_head(data, cfg)})
        print(rows[-1], flush=True)
    tune = TrainConfig(
        epochs=args.finetune_epochs,
        patience=3,
        batch_size=256,
        embedding_size=64,
        augmentation="trivialaugment",
        lr=1e-3,
    )
    losses = ("supcon", "ntxent") if args.quick else (*LOSSES, "ntxent")
    for loss in losses:
        print(f"fine-tune {loss} ...", flush=True)
        rows.append(
            {
                "mode": "finetune",
                "loss": loss,
                "size": 64,
                **run_finetune(data, _tune(tune, loss, args)),
            }
        )
        print(rows[-1], flush=True)
    best_ft = max((r for r in rows if r["mode"] == "finetune"), key=lambda r: r["knn_top1"])
    if args.finetune_sizes:
        for size in (128, 256, 512):
            cfg = replace(_tune(tune, best_ft["loss"], args), embedding_size=size)
            rows.append(
                {
                    "mode": "finetune",
                    "loss": best_ft["loss"],
                    "size": size,
                    **run_finetune(data, cfg),
                }
            )
            print(rows[-1], flush=True)
    write_results(
        "embedding_quality", {"rows": rows, "args": vars(args)}, _markdown(rows, data, args)
    )


def _tune(cfg: TrainConfig, loss: str, args) -> TrainConfig:
    epochs = args.ntxent_epochs if loss == "ntxent" else args.finetune_epochs
    return replace(cfg, loss=loss, epochs=epochs)


def _markdown(rows: list[dict], data: dict, args) -> str:
    lines = [
        "# Embedding quality (CIFAR-10 test, trained on one half, evaluated on the other)",
        "",
        f"{int(data['fit'].sum())} training + {int(data['val'].sum())} validation (early "
        f"stopping) images, {int(data['eval'].sum())} evaluation images, split by content hash. "
        f"ResNet-18 from random init at {SIZE} px (no pretrained weights offline); head-only "
        f"trains a 512-hidden projection head over cached backbone features "
        f"(≤{args.head_epochs} epochs), fine-tuning trains backbone + head end to end with "
        f"TrivialAugmentWide (≤{args.finetune_epochs} epochs, NTXent ≤{args.ntxent_epochs}). "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}.",
        "",
        "| mode | loss | size | kNN top-1 | P@5 | kNN macro-F1 | silhouette | epochs | train min |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['loss']} | {r['size']} | {r['knn_top1']:.3f} | "
            f"{r['precision_at_5']:.3f} | {r['knn_macro_f1']:.3f} | {r['silhouette']:.3f} | "
            f"{r['epochs']} | {r['minutes']:.1f} |"
        )
    best = max(rows, key=lambda r: r["knn_top1"])
    ok = best["knn_top1"] >= 0.8 and best["precision_at_5"] >= 0.75
    lines += [
        "",
        f"Best: {best['mode']} / {best['loss']} / {best['size']}: kNN top-1 "
        f"{best['knn_top1']:.3f}, P@5 {best['precision_at_5']:.3f} in {best['minutes']:.1f} min. "
        f"Goal (kNN top-1 ≥ 0.80 and P@5 ≥ 0.75 within 20 min on this CPU): "
        f"{'met' if ok else 'NOT met'}.",
        "",
        "Reproduce: `python -m benchmarks.embedding_quality` (needs ../shared/data/cifar10).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
