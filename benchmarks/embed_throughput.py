"""Embedding throughput on CIFAR-10 test images at 224 px, per runtime (torch eager and ONNX
Runtime, embedding/runtime.py), measured side by side in interleaved rounds for the default
backbone (pretrained EfficientNet-Lite0 from its package) and random-init ResNets:

(a) pure forward passes on uint8 pixels decoded beforehand (the model's ceiling on that
    runtime; the graph's input layer scales and normalizes, as in the pipeline),
(b) the asset's pipeline from files (DataLoader workers decode while the model runs; LMDB +
    Parquet writes included; the ONNX export is made once beforehand and timed apart),
plus a no-op re-run of (b), where every vector comes from the cache, and, for the default
model on ONNX Runtime, the split of cores between decoding workers and forward threads.

    python -m benchmarks.embed_throughput [--models efficientnet_lite0 resnet18] [--images 2048 256]

The default model gets 2,048 images, so that a run's fixed costs (decoding workers starting, the
first batch decoded before the model has work, DuckDB and Parquet writes: about 0.7 s) weigh as
little as in the 10,000-image runs that the ratio is about; the batch is the asset's default.

Goals (issue 23): the default pipeline (runtime auto = ONNX Runtime on the CPU) >= 2.5x the
torch pipeline on Lite0, and (b)/(a) >= 0.9 on ONNX Runtime.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import cifar_subset, machine, write_results
from embedding_assets.catalog.images import load_image
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.embedding import runtime
from embedding_assets.embedding.embedder import EmbedParams, default_workers
from embedding_assets.embedding.packaged_weights import PACKAGED
from embedding_assets.embedding.pixel_input import on_pixels
from embedding_assets.embedding.run import RunOptions, run_embeddings
from embedding_assets.embedding.run_options import cpu_count
from resources.storage import DataPaths

RUNTIMES = ("torch", "onnxruntime")


def _forward(model, tensors: torch.Tensor, batch: int) -> float:
    with torch.inference_mode():
        model(tensors[:2])  # warm-up
        t = time.perf_counter()
        for i in range(0, len(tensors), batch):
            model(tensors[i : i + batch])
    return time.perf_counter() - t


def _pipeline(folder: Path, root: Path, params: EmbedParams, options: RunOptions) -> float:
    paths = DataPaths(root)
    scan_catalog(paths.catalog_db, folder)
    t = time.perf_counter()
    summary = run_embeddings(paths, params, options)
    seconds = time.perf_counter() - t
    assert summary.runtime == options.runtime, (summary.runtime, summary.notes)
    return seconds


def measure(model: str, n: int, batch: int, size: int, rounds: int, tmp: Path) -> dict:
    folder = cifar_subset(n, tmp / f"imgs-{model}")
    files = sorted(folder.rglob("*.jpg"))
    params = EmbedParams(model, "packaged" if model in PACKAGED else None, size)
    exports = tmp / "exports"
    backbone = params.build(allow_download=False)
    t = time.perf_counter()
    onnx_path = runtime.exported_path(backbone, params.model_key(), exports)
    export_s = time.perf_counter() - t
    pre = backbone.spec.preprocess
    models = {
        "torch": on_pixels(backbone.model, pre.mean, pre.std),
        "onnxruntime": runtime.OnnxModule(onnx_path, cpu_count()),
    }
    pixels = pre.pixels()
    tensors = torch.from_numpy(np.stack([pixels(load_image(str(f))) for f in files]))
    forward = {r: [] for r in RUNTIMES}
    pipeline = {r: [] for r in RUNTIMES}
    for k in range(rounds):
        order = RUNTIMES if k % 2 == 0 else RUNTIMES[::-1]  # interleaved, alternating first
        for r in order:
            forward[r].append(_forward(models[r], tensors, batch))
            options = RunOptions(batch_size=batch, runtime=r, exports=exports)
            pipeline[r].append(_pipeline(folder, tmp / f"data-{model}-{r}-{k}", params, options))
    paths = DataPaths(tmp / f"data-{model}-onnxruntime-0")
    t = time.perf_counter()
    noop = run_embeddings(paths, params, RunOptions(batch_size=batch, exports=exports))
    noop_s = time.perf_counter() - t
    assert noop.embedded == 0
    return {
        "model": model,
        "images": n,
        "batch": batch,
        "size": size,
        "export_s": export_s,
        "forward_s": {r: statistics.median(v) for r, v in forward.items()},
        "pipeline_s": {r: statistics.median(v) for r, v in pipeline.items()},
        "forward_all_s": forward,
        "pipeline_all_s": pipeline,
        "noop_s": noop_s,
    }


def thread_split(n: int, batch: int, size: int, rounds: int, tmp: Path) -> list[dict]:
    """The ONNX Runtime pipeline of the default model for each (decoding workers, forward
    threads) on this machine's cores."""
    folder = cifar_subset(n, tmp / "imgs-split")
    params = EmbedParams(image_size=size)
    cores = cpu_count()
    splits = [(w, t) for w in (0, 1, 2) for t in sorted({1, cores})]
    seconds = {s: [] for s in splits}
    for k in range(rounds):
        for w, t in splits if k % 2 == 0 else splits[::-1]:
            options = RunOptions(
                batch_size=batch,
                workers=w,
                threads=t,
                runtime="onnxruntime",
                exports=tmp / "exports",
            )
            seconds[(w, t)].append(_pipeline(folder, tmp / f"split-{w}-{t}-{k}", params, options))
    return [
        {"workers": w, "threads": t, "seconds": statistics.median(v), "images": n}
        for (w, t), v in seconds.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--models", nargs="+", default=["efficientnet_lite0", "resnet18", "resnet50"]
    )
    parser.add_argument("--images", nargs="+", type=int, default=[2048, 256, 128])
    parser.add_argument("--split-images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=RunOptions().batch_size)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(cpu_count())
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            measure(m, n, args.batch, args.size, args.rounds, Path(tmp))
            for m, n in zip(args.models, args.images, strict=True)
        ]
        split = thread_split(args.split_images, args.batch, args.size, args.rounds, Path(tmp))
    lines = [
        "# Embedding throughput (CPU) per runtime",
        "",
        f"CIFAR-10 test JPEGs (32 px) resized to {args.size} px, batch {args.batch}; "
        "efficientnet_lite0 with its packaged ImageNet weights (bicubic resize to 256, 224 "
        f"crop), the ResNets with random weights; {machine()['cpus']} CPUs, torch "
        f"{torch.__version__} with {torch.get_num_threads()} intra-op threads, ONNX Runtime "
        f"{_ort_version()} (CPU provider, the model exported with torch.onnx.export, opset "
        f"{runtime.OPSET}, dynamic batch); medians of {args.rounds} interleaved rounds; "
        f"default decoding workers {default_workers()}.",
        "",
        "| model | images | runtime | (a) forward img/s | (b) pipeline img/s | b/a | "
        "(b) vs torch (b) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        n = r["images"]
        base = r["pipeline_s"]["torch"]
        for rt in RUNTIMES:
            f, p = r["forward_s"][rt], r["pipeline_s"][rt]
            lines.append(
                f"| {r['model']} | {n} | {rt} | {n / f:.1f} | {n / p:.1f} | {f / p:.2f} | "
                f"{base / p:.2f}x |"
            )
    lines += ["", "| model | export s (once per model key) | no-op re-run s |", "|---|---:|---:|"]
    lines += [f"| {r['model']} | {r['export_s']:.1f} | {r['noop_s']:.3f} |" for r in rows]
    lines += [
        "",
        f"Cores split between decoding and the forward pass (efficientnet_lite0, ONNX Runtime, "
        f"{split[0]['images']} images):",
        "",
        "| decoding workers | forward threads | pipeline img/s |",
        "|---:|---:|---:|",
    ]
    lines += [
        f"| {s['workers']} | {s['threads']} | {s['images'] / s['seconds']:.1f} |" for s in split
    ]
    lite = next((r for r in rows if r["model"] == "efficientnet_lite0"), None)
    if lite is not None:
        speedup = lite["pipeline_s"]["torch"] / lite["pipeline_s"]["onnxruntime"]
        ratio = lite["forward_s"]["onnxruntime"] / lite["pipeline_s"]["onnxruntime"]
        lines += [
            "",
            f"Goal: default pipeline >= 2.5x the torch pipeline on Lite0: {speedup:.2f}x, "
            f"**{'met' if speedup >= 2.5 else 'not met'}**. Goal: (b)/(a) >= 0.9 on ONNX "
            f"Runtime: {ratio:.2f}, **{'met' if ratio >= 0.9 else 'not met'}**.",
        ]
    write_results("embed_throughput", {"rows": rows, "thread_split": split}, "\n".join(lines))


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    main()
