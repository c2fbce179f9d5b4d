"""Embedding throughput on CIFAR-10 test images at 224 px, three ways side by side, for the
default backbone (pretrained EfficientNet-Lite0 from its package) and random-init ResNets:

(a) pure forward passes on tensors made beforehand (the model's ceiling),
(b) the asset's pipeline from files (DataLoader workers decode while the model runs; LMDB +
    Parquet writes included),
(c) a naive loop: decode -> preprocess -> forward, one batch at a time in one process,
plus a no-op re-run of (b), where every vector comes from the cache.

    python -m benchmarks.embed_throughput [--models efficientnet_lite0 resnet18] [--images 512 256]

Goals (issue 3): b/a >= 0.9; no-op >= 100x faster than (b).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import cifar_subset, machine, write_results
from embedding_assets.catalog.images import load_image
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.embedding.backbones import build_backbone
from embedding_assets.embedding.embedder import EmbedParams
from embedding_assets.embedding.packaged_weights import PACKAGED
from embedding_assets.embedding.run import RunOptions, run_embeddings
from resources.storage import DataPaths


def _forward_only(backbone, files: list[Path], batch: int) -> float:
    transform = backbone.spec.preprocess.transform()
    tensors = torch.stack([transform(load_image(str(f))) for f in files])
    with torch.inference_mode():
        backbone.model(tensors[:2])  # warm-up
        t = time.perf_counter()
        for i in range(0, len(files), batch):
            backbone.model(tensors[i : i + batch])
    return time.perf_counter() - t


def _naive(backbone, files: list[Path], batch: int) -> float:
    transform = backbone.spec.preprocess.transform()
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(files), batch):
            x = torch.stack([transform(load_image(str(f))) for f in files[i : i + batch]])
            torch.nn.functional.normalize(backbone.model(x), dim=1).numpy()
    return time.perf_counter() - t


def measure(model: str, n: int, batch: int, size: int, workers: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = cifar_subset(n, Path(tmp) / "imgs")
        files = sorted(folder.rglob("*.jpg"))
        params = EmbedParams(model, "packaged" if model in PACKAGED else None, size)
        backbone = build_backbone(params.spec())
        a = _forward_only(backbone, files, batch)
        c = _naive(backbone, files, batch)
        paths = DataPaths(Path(tmp) / "data")
        scan_catalog(paths.catalog_db, folder)
        t = time.perf_counter()
        run_embeddings(paths, params, RunOptions(batch_size=batch, workers=workers))
        b = time.perf_counter() - t
        t = time.perf_counter()
        noop = run_embeddings(paths, params, RunOptions(batch_size=batch, workers=workers))
        z = time.perf_counter() - t
        assert noop.embedded == 0
    return {
        "model": model,
        "images": n,
        "batch": batch,
        "size": size,
        "forward_s": a,
        "pipeline_s": b,
        "naive_s": c,
        "noop_s": z,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--models", nargs="+", default=["efficientnet_lite0", "resnet18", "resnet50"]
    )
    parser.add_argument("--images", nargs="+", type=int, default=[512, 256, 128])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    rows = [
        measure(m, n, args.batch, args.size, args.workers)
        for m, n in zip(args.models, args.images, strict=True)
    ]
    lines = [
        "# Embedding throughput (CPU)",
        "",
        f"CIFAR-10 test JPEGs (32 px) resized to {args.size} px, batch {args.batch}; "
        "efficientnet_lite0 with its packaged ImageNet weights (bicubic resize to 256, 224 "
        f"crop), the ResNets with random weights; {machine()['cpus']} CPUs, torch "
        f"{torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads.",
        "",
        "| model | images | (a) forward img/s | (b) pipeline img/s | (c) naive img/s | "
        "b/a | b/c | no-op s | (b) / no-op |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        n = r["images"]
        lines.append(
            f"| {r['model']} | {n} | {n / r['forward_s']:.1f} | {n / r['pipeline_s']:.1f} | "
            f"{n / r['naive_s']:.1f} | {r['forward_s'] / r['pipeline_s']:.2f} | "
            f"{r['naive_s'] / r['pipeline_s']:.2f} | {r['noop_s']:.3f} | "
            f"{r['pipeline_s'] / r['noop_s']:.0f}x |"
        )
    lines += [
        "",
        "Goals: b/a >= 0.9 (the pipeline keeps the model busy), no-op >= 100x faster than (b).",
        "(b) includes building the model, the LMDB writes and the Parquet hand-off.",
    ]
    write_results("embed_throughput", {"rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
