"""GPU vs CPU, side by side in one run, for every step of the platform that can use a GPU.

    python -m benchmarks.gpu_check                 # full run: writes benchmarks/results/gpu_check.*
    python -m benchmarks.gpu_check --quick         # smoke run: small sizes, prints, writes nothing
    python -m benchmarks.gpu_check --parts faiss kmeans --device cuda:1

Parts (each is guarded: a library that is missing is reported as "not installed", a GPU build
that is missing as "unavailable", and the other parts still run):

- embed: the default backbone (EfficientNet-Lite0, packaged ImageNet weights, 224 px).
  (a) pure forward passes on tensors already on the GPU, for fp32 / bf16 / fp16 autocast x
  contiguous / channels_last x batch sizes; (b) `embedder.embed_paths` from JPEG files (CIFAR-10
  test images from ../shared when present, else synthetic JPEGs), which is what the
  `embeddings` asset runs (DataLoader workers decode while the model runs); the same two on
  the CPU for the ratio.
- faiss: exact (Flat) and IVF-Flat search on synthetic 1M x 64 unit vectors, faiss-gpu vs the
  CPU index: `similarity.build_index` with and without `gpu_id`, batched and one-query search.
- kmeans: cuML KMeans and FAISS k-means on the GPU vs scikit-learn mini-batch and FAISS on the
  CPU (the two backends `clustering.cluster` picks between), k = 50, on 1M x 64.
- projection: `projection.project` with `use_cuml` on and off (PCA, UMAP, t-SNE) on 100k x 64;
  note the CPU path fits a 25k sample and transforms the rest, cuML fits every row.
- lightgbm: the active-learning LightGBM (`active_learning._lightgbm`) with device='gpu'
  (OpenCL) and device='cuda' vs 'cpu', on 100k x 64 with 10 classes.

Without a CUDA GPU (torch.cuda.is_available() False) it prints one line, measures nothing and
exits 0; it writes a "not measured" gpu_check.md only where no gpu_check result exists yet, so
real GPU results are never overwritten.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import common

NAME = "gpu_check"
PARTS = ("embed", "faiss", "kmeans", "projection", "lightgbm")
NO_GPU = (
    "gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False): nothing was measured."
)
FULL = {
    "images": 4096,  # embed_paths on the GPU, per batch size
    "cpu_images": 256,  # embed_paths on the CPU
    "batches": (64, 128, 256),
    "iters": 20,  # timed forward passes per configuration
    "faiss_n": 1_000_000,
    "queries": 10_000,
    "kmeans_n": 1_000_000,
    "proj_n": 100_000,
    "proj_big_n": 1_000_000,  # cuML UMAP alone: out of reach on the CPU
    "lgbm_n": 100_000,
}
QUICK = {
    "images": 256,
    "cpu_images": 32,
    "batches": (64, 128),
    "iters": 3,
    "faiss_n": 100_000,
    "queries": 1_000,
    "kmeans_n": 50_000,
    "proj_n": 5_000,
    "proj_big_n": 0,
    "lgbm_n": 10_000,
}
VERSIONS = (
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "faiss-cpu",
    "faiss-gpu-cu12",
    "cuml-cu12",
    "cuml-cu13",
    "umap-learn",
    "openTSNE",
    "scikit-learn",
    "lightgbm",
)
K = 5  # neighbours per query, as benchmarks.search_latency
KMEANS_K = 50  # as benchmarks.analytics_scale
NPROBE = 32


class Unavailable(Exception):
    """A GPU build or device feature is missing (not an error of the benchmark)."""


# --------------------------------------------------------------------------- helpers


def status_of(exc: BaseException) -> str:
    """How a part or a row that raised is reported."""
    if isinstance(exc, ImportError):
        name = getattr(exc, "name", None) or str(exc)
        return f"not installed: {name}"
    if isinstance(exc, Unavailable):
        return f"unavailable: {exc}"
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"failed: {type(exc).__name__}: {first}"


def guarded(fn: Callable[[], dict]) -> dict:
    """Run one measurement; a missing library or a failure becomes a status, not a crash."""
    try:
        return {"status": "ok", **fn()}
    except Exception as exc:  # noqa: BLE001 - every failure is reported in the results
        if not isinstance(exc, ImportError | Unavailable):
            traceback.print_exc()
        return {"status": status_of(exc)}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in VERSIONS:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def device_info(dev: str) -> dict:
    import subprocess

    import torch

    index = torch.device(dev).index or 0
    props = torch.cuda.get_device_properties(index)
    info = {
        "device": dev,
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
        "visible_gpus": torch.cuda.device_count(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "bf16": torch.cuda.is_bf16_supported(),
    }
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        info["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, IndexError):
        info["driver"] = None
    return info


def ratio(cpu_s: float | None, gpu_s: float | None) -> float | None:
    return cpu_s / gpu_s if cpu_s and gpu_s else None


def _synthetic(n: int) -> np.ndarray:
    from benchmarks.search_latency import synthetic

    return synthetic(n)[0]


def _faiss_gpu():
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        raise Unavailable(
            f"faiss {faiss.__version__} is a CPU build (pip uninstall faiss-cpu; "
            "pip install faiss-gpu-cu12)"
        )
    if faiss.get_num_gpus() < 1:
        raise Unavailable("faiss-gpu sees no GPU")
    return faiss


def _inertia(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared distance to the assigned cluster's mean: the k-means objective per row."""
    k = int(labels.max()) + 1
    counts = np.maximum(np.bincount(labels, minlength=k), 1)
    centres = np.stack([np.bincount(labels, x[:, j], k) for j in range(x.shape[1])], 1)
    centres /= counts[:, None]
    return float(((x - centres[labels]) ** 2).sum(1).mean())


# --------------------------------------------------------------------------- embed


def _image_files(n: int, dest: Path) -> tuple[list[str], str]:
    if common.CIFAR_TEST.is_dir():
        folder = common.cifar_subset(n, dest)
        files = sorted(str(p) for p in folder.rglob("*.jpg"))
        if len(files) >= n:
            return files[:n], "CIFAR-10 test JPEGs (32 px)"
    from PIL import Image

    rng = np.random.default_rng(0)
    dest.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        path = dest / f"synthetic_{i:05d}.jpg"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path, quality=90)
        files.append(str(path))
    return files, "synthetic noise JPEGs (32 px; no CIFAR-10 in ../shared)"


def _forward_rate(model, x, amp, iters: int, sync: Callable[[], None]) -> float:
    """Images per second of `iters` forward passes on a batch already on the device."""
    import torch

    with (
        torch.inference_mode(),
        torch.autocast(x.device.type, dtype=amp, enabled=amp is not None),
    ):
        for _ in range(3):  # warm-up (cuDNN autotuning)
            model(x)
        sync()
        t = time.perf_counter()
        for _ in range(iters):
            model(x)
        sync()
    return iters * len(x) / (time.perf_counter() - t)


def _pipeline_rate(backbone, files: list[str], dev: str, batch: int) -> dict:
    from embedding_assets.embedding.embedder import BatchSettings, embed_paths

    t = time.perf_counter()
    done = failed = 0
    for b in embed_paths(backbone, files, BatchSettings(device=dev, batch_size=batch)):
        done += len(b.indexes)
        failed += len(b.errors)
    return {"img_s": done / (time.perf_counter() - t), "failed": failed}


def bench_embed(dev: str, size: dict) -> dict:
    import torch

    from embedding_assets.embedding.embedder import EmbedParams, _autocast_dtype, default_workers

    params = EmbedParams()  # the platform's default backbone and weights
    spec = params.spec()
    crop = spec.preprocess.crop
    sync = torch.cuda.synchronize
    default_amp = _autocast_dtype(torch.device(dev), "auto")
    precisions = [("fp32", None)]
    if torch.cuda.is_bf16_supported():
        precisions.append(("bf16", torch.bfloat16))
    precisions.append(("fp16", torch.float16))
    out: dict = {
        "model": params.model,
        "weights": spec.weights_id,
        "crop": crop,
        "workers": default_workers(),
        "platform_default": f"autocast {default_amp}, channels_last".replace("torch.", ""),
    }

    # CPU reference: fp32, contiguous, the smallest batch size (what `emb run` does on a CPU)
    cpu_backbone = params.build(allow_download=False)
    cpu_batch = min(size["batches"])
    x_cpu = torch.randn(cpu_batch, 3, crop, crop)
    out["cpu_forward_img_s"] = _forward_rate(
        cpu_backbone.model, x_cpu, None, max(1, size["iters"] // 10), lambda: None
    )

    gpu_backbone = params.build(allow_download=False)
    model = gpu_backbone.model.to(dev).eval()
    torch.backends.cudnn.benchmark = True
    rows = []
    for batch in size["batches"]:
        x = torch.randn(batch, 3, crop, crop, device=dev)
        for layout in ("contiguous", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            model.to(memory_format=fmt)
            xl = x.contiguous(memory_format=fmt)
            for label, amp in precisions:
                row = {"batch": batch, "layout": layout, "precision": label}
                row |= guarded(
                    lambda xl=xl, amp=amp: {
                        "img_s": _forward_rate(model, xl, amp, size["iters"], sync)
                    }
                )
                row["default"] = amp == default_amp and layout == "channels_last"
                rows.append(row)
        del x
    out["forward"] = rows
    torch.cuda.empty_cache()

    with tempfile.TemporaryDirectory() as tmp:
        files, source = _image_files(size["images"], Path(tmp) / "images")
        out["images_source"] = source
        cpu_files = files[: size["cpu_images"]]
        cpu_rate = _pipeline_rate(cpu_backbone, cpu_files, "cpu", cpu_batch)
        out["cpu_pipeline"] = {"images": len(cpu_files), "batch": cpu_batch, **cpu_rate}
        pipeline = []
        for batch in size["batches"]:
            row = {"batch": batch, "images": len(files)}
            row |= guarded(lambda batch=batch: _pipeline_rate(gpu_backbone, files, dev, batch))
            pipeline.append(row)
        out["pipeline"] = pipeline
    return out


# --------------------------------------------------------------------------- faiss


def _one_query_p50_ms(index, q: np.ndarray, single: int = 200) -> float:
    from embedding_assets.search.faiss_index import single_thread

    times = []
    with single_thread():
        for i in range(min(single, len(q))):
            t = time.perf_counter_ns()
            index.search(q[i : i + 1], K)
            times.append((time.perf_counter_ns() - t) / 1e6)
    return float(np.percentile(times, 50))


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    value = fn()
    return time.perf_counter() - t, value


def bench_faiss(gpu_id: int, size: dict) -> dict:
    faiss = _faiss_gpu()
    from embedding_assets.search import faiss_index as similarity

    n, nq = size["faiss_n"], size["queries"]
    x = _synthetic(n)
    ids = np.arange(n, dtype=np.int64)
    q = similarity.sample_queries(x, nq, seed=1)
    d = x.shape[1]
    res = faiss.StandardGpuResources()  # held here for every GPU index of this function
    rows: list[dict] = []

    def row(step: str, fn: Callable[[], dict]) -> None:
        r = {"step": step} | guarded(fn)
        r["speedup"] = ratio(r.get("cpu_s"), r.get("gpu_s"))
        rows.append(r)

    # exact search: IndexFlatIP on the CPU (also the ground truth) vs the same index on the GPU
    flat = faiss.IndexFlatIP(d)
    cpu_add, _ = _timed(lambda: flat.add(x))
    cpu_search, (_, truth) = _timed(lambda: flat.search(q, K))
    gpu: dict = {}

    def gpu_flat_add() -> dict:
        gpu["flat"] = faiss.index_cpu_to_gpu(res, gpu_id, faiss.IndexFlatIP(d))
        return {"cpu_s": cpu_add, "gpu_s": _timed(lambda: gpu["flat"].add(x))[0]}

    def gpu_flat_search() -> dict:
        gpu["flat"].search(q[:10], K)  # warm-up
        seconds, (_, found) = _timed(lambda: gpu["flat"].search(q, K))
        recall = similarity.recall_at_k(found, truth)
        return {"cpu_s": cpu_search, "gpu_s": seconds, "note": f"GPU recall@{K} {recall:.3f}"}

    row(f"exact Flat: add {n:,} vectors", gpu_flat_add)
    row(f"exact Flat: {nq:,} queries batched, k={K}", gpu_flat_search)
    if "flat" in gpu:
        gpu["flat"].reset()  # free its GPU memory

    # IVF-Flat: the platform's build (train on a 100k sample + add), CPU vs gpu_id
    factory = f"IVF{similarity.nlist_for(n)},Flat"
    cpu_built = similarity.build_index(x, ids, factory)

    def gpu_build() -> dict:
        built = similarity.build_index(x, ids, factory, gpu_id=gpu_id)
        note = (
            f"GPU build ran on {built.device}: train {built.train_seconds:.2f} s + add "
            f"{built.add_seconds:.2f} s (CPU {cpu_built.train_seconds:.2f} + "
            f"{cpu_built.add_seconds:.2f})"
        )
        return {"cpu_s": cpu_built.build_seconds, "gpu_s": built.build_seconds, "note": note}

    row(f"{factory}: similarity.build_index (train + add)", gpu_build)

    civf = cpu_built.index
    faiss.extract_index_ivf(civf).nprobe = NPROBE
    cpu_s, (_, cpu_found) = _timed(lambda: civf.search(q, K))
    cpu_recall = similarity.recall_at_k(cpu_found, truth)

    def gpu_ivf_search() -> dict:
        gpu["ivf"] = faiss.index_cpu_to_gpu(res, gpu_id, civf)
        faiss.GpuParameterSpace().set_index_parameter(gpu["ivf"], "nprobe", NPROBE)
        gpu["ivf"].search(q[:10], K)  # warm-up
        seconds, (_, found) = _timed(lambda: gpu["ivf"].search(q, K))
        recall = similarity.recall_at_k(found, truth)
        note = f"recall@{K} CPU {cpu_recall:.3f}, GPU {recall:.3f}"
        return {"cpu_s": cpu_s, "gpu_s": seconds, "note": note}

    def one_query() -> dict:
        cpu_ms, gpu_ms = _one_query_p50_ms(civf, q), _one_query_p50_ms(gpu["ivf"], q)
        note = f"CPU {cpu_ms:.3f} ms (1 thread, as the search server), GPU {gpu_ms:.3f} ms"
        return {"cpu_s": cpu_ms / 1e3, "gpu_s": gpu_ms / 1e3, "note": note}

    row(f"{factory}: {nq:,} queries batched, nprobe={NPROBE}", gpu_ivf_search)
    if "ivf" in gpu:
        row(f"{factory}: one query at a time, p50, nprobe={NPROBE}", one_query)
    return {"n": n, "dim": d, "faiss": faiss.__version__, "rows": rows}


# --------------------------------------------------------------------------- kmeans


def bench_kmeans(gpu_id: int, size: dict) -> dict:
    from embedding_assets.analytics.clustering import ClusterParams, faiss_kmeans, minibatch_kmeans

    n = size["kmeans_n"]
    x = _synthetic(n)
    params = ClusterParams(k=str(KMEANS_K))

    def run(fn: Callable[[np.ndarray], np.ndarray]) -> dict:
        t = time.perf_counter()
        labels = np.asarray(fn(x)).astype(np.int64)
        seconds = time.perf_counter() - t
        return {"seconds": seconds, "inertia": _inertia(x, labels)}

    def faiss_gpu(v):
        _faiss_gpu()
        return faiss_kmeans(v, KMEANS_K, params, gpu_id)[0]

    def cuml_kmeans(v):
        from cuml.cluster import KMeans

        return KMeans(
            n_clusters=KMEANS_K, n_init=params.n_init, random_state=params.seed, output_type="numpy"
        ).fit_predict(v)

    # warm-ups (CUDA contexts, kernels) on a small sample, not timed
    small = x[: min(n, 20_000)]
    for warm in (faiss_gpu, cuml_kmeans):
        guarded(lambda warm=warm: {"labels": len(warm(small))})
    rows = [
        {"backend": "scikit-learn MiniBatchKMeans", "device": "cpu"}
        | guarded(lambda: run(lambda v: minibatch_kmeans(v, KMEANS_K, params)[0])),
        {"backend": "faiss k-means", "device": "cpu"}
        | guarded(lambda: run(lambda v: faiss_kmeans(v, KMEANS_K, params, None)[0])),
        {"backend": "faiss k-means", "device": f"cuda:{gpu_id}"} | guarded(lambda: run(faiss_gpu)),
        {"backend": "cuML KMeans", "device": f"cuda:{gpu_id}"} | guarded(lambda: run(cuml_kmeans)),
    ]
    cpu_best = min((r["seconds"] for r in rows[:2] if "seconds" in r), default=None)
    for r in rows[2:]:
        r["speedup_vs_best_cpu"] = ratio(cpu_best, r.get("seconds"))
    return {"n": n, "k": KMEANS_K, "n_init": params.n_init, "rows": rows}


# --------------------------------------------------------------------------- projection


def bench_projection(size: dict) -> dict:
    from embedding_assets.analytics.projection import ProjectionParams, project

    n = size["proj_n"]
    x = _synthetic(n)
    params = ProjectionParams()

    def run(method: str, use_cuml: bool, data: np.ndarray = x) -> dict:
        t = time.perf_counter()
        result = project(data, method, params, use_cuml=use_cuml)
        return {
            "seconds": time.perf_counter() - t,
            "backend": result.backend,
            "fitted_on": result.fitted_on,
        }

    warm = x[: min(n, 2_000)]
    guarded(lambda: run("umap", False, warm))  # numba compiles once
    guarded(lambda: run("umap", True, warm))  # CUDA context and kernels
    rows = []
    for method in ("pca", "umap", "tsne"):
        cpu = guarded(lambda method=method: run(method, False))
        gpu = guarded(lambda method=method: run(method, True))
        rows.append(
            {
                "method": method,
                "n": n,
                "cpu": cpu,
                "gpu": gpu,
                "speedup": ratio(cpu.get("seconds"), gpu.get("seconds")),
            }
        )
    if size["proj_big_n"]:
        big = _synthetic(size["proj_big_n"])
        gpu = guarded(lambda: run("umap", True, big))
        rows.append(
            {
                "method": "umap",
                "n": len(big),
                "cpu": {"status": "not run: out of reach on a CPU (see analytics_scale)"},
                "gpu": gpu,
                "speedup": None,
            }
        )
    return {"rows": rows, "max_fit_samples": params.max_fit_samples}


# --------------------------------------------------------------------------- lightgbm


def _labelled(n: int, d: int = 64, classes: int = 10, seed: int = 0):
    """Unit vectors from 50 blobs in a 16-d latent space, 5 blobs per class."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes * 5, 16)).astype(np.float32) * 1.5
    lift = rng.standard_normal((16, d)).astype(np.float32) / 4.0
    comp = rng.integers(0, len(centres), n)
    x = (centres[comp] + rng.standard_normal((n, 16), np.float32)) @ lift
    x += 0.1 * rng.standard_normal((n, d), np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), comp % classes


def bench_lightgbm(size: dict) -> dict:
    import lightgbm

    from embedding_assets.learning.classifiers import _lightgbm

    n = size["lgbm_n"]
    x, y = _labelled(n)
    cut = int(0.8 * n)
    cpus = os.cpu_count() or 1

    def run(device: str, **extra) -> dict:
        model = _lightgbm(cut, device, 0, **extra)
        t = time.perf_counter()
        try:
            model.fit(x[:cut], y[:cut])
        except lightgbm.basic.LightGBMError as exc:
            raise Unavailable(str(exc).strip().splitlines()[0][:200]) from exc
        seconds = time.perf_counter() - t
        accuracy = float((model.predict(x[cut:]) == y[cut:]).mean())
        return {"seconds": seconds, "accuracy": accuracy, "n_jobs": model.get_params()["n_jobs"]}

    rows = [
        {"device": "cpu", "setting": "platform (n_jobs by size)"} | guarded(lambda: run("cpu")),
        {"device": "cpu", "setting": f"all {cpus} cores"}
        | guarded(lambda: run("cpu", n_jobs=cpus)),
        {"device": "gpu", "setting": "OpenCL"} | guarded(lambda: run("gpu")),
        {"device": "cuda", "setting": "CUDA"} | guarded(lambda: run("cuda")),
    ]
    cpu_best = min((r["seconds"] for r in rows[:2] if "seconds" in r), default=None)
    for r in rows[2:]:
        r["speedup_vs_best_cpu"] = ratio(cpu_best, r.get("seconds"))
    return {"train": cut, "test": n - cut, "dim": x.shape[1], "classes": 10, "rows": rows}


# --------------------------------------------------------------------------- report


def _f(value, fmt: str = ".2f", empty: str = "–") -> str:
    return empty if value is None else format(value, fmt)


def _cell(row: dict, key: str, fmt: str = ".2f") -> str:
    return _f(row[key], fmt) if key in row else row.get("status", "–")


def markdown(payload: dict) -> str:
    dev, parts = payload["device"], payload["parts"]
    v = payload["versions"]
    lines = [
        "# GPU check",
        "",
        f"{dev['name']} ({dev['memory_gib']} GiB, compute {dev['capability']}, driver "
        f"{dev['driver']}, CUDA {dev['torch_cuda']}, cuDNN {dev['cudnn']}); "
        f"{payload['machine']['cpus']} CPUs; {payload['machine']['date']}. "
        f"`python -m benchmarks.gpu_check{' --quick' if payload['quick'] else ''}`, "
        f"{payload['wall_s'] / 60:.1f} min. Ratios are CPU time / GPU time measured in this run.",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val != "not installed"),
        "",
    ]
    for name in PARTS:
        part = parts.get(name)
        if part is None:
            continue
        if part["status"] != "ok":
            lines += [f"## {name}", "", part["status"], ""]
            continue
        lines += SECTIONS[name](part)
    return "\n".join(lines)


def _md_embed(p: dict) -> list[str]:
    fwd = [r for r in p["forward"] if "img_s" in r]
    best = max(fwd, key=lambda r: r["img_s"], default=None)
    default = max((r for r in fwd if r["default"]), key=lambda r: r["img_s"], default=None)
    lines = [
        f"## Embedding: {p['model']} ({p['weights']}), {p['crop']} px",
        "",
        f"(a) forward passes on random tensors already on the device. CPU reference (fp32, "
        f"batch {min(r['batch'] for r in p['forward'])}): {p['cpu_forward_img_s']:.1f} img/s.",
        "",
        "| batch | layout | precision | img/s | x CPU |",
        "|---:|---|---|---:|---:|",
    ]
    for r in p["forward"]:
        mark = " (platform default)" if r["default"] else ""
        rate = r.get("img_s")
        lines.append(
            f"| {r['batch']} | {r['layout']} | {r['precision']}{mark} | "
            f"{_cell(r, 'img_s', '.0f')} | {_f(ratio(rate, p['cpu_forward_img_s']), '.1f')} |"
        )
    cpu = p["cpu_pipeline"]
    lines += [
        "",
        f"(b) `embed_paths` from files ({p['images_source']}; {p['workers']} decoding workers, "
        f"platform default {p['platform_default']}). CPU: {cpu['img_s']:.1f} img/s "
        f"({cpu['images']} images, batch {cpu['batch']}).",
        "",
        "| batch | images | img/s | x CPU pipeline | / best forward |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in p["pipeline"]:
        rate = r.get("img_s")
        lines.append(
            f"| {r['batch']} | {r['images']} | {_cell(r, 'img_s', '.0f')} | "
            f"{_f(ratio(rate, cpu['img_s']), '.1f')} | "
            f"{_f(ratio(rate, best['img_s'] if best else None), '.2f')} |"
        )
    if best and default:
        lines += [
            "",
            f"Fastest forward: batch {best['batch']}, {best['layout']}, {best['precision']} "
            f"({best['img_s']:.0f} img/s); the platform default at that batch reaches "
            f"{default['img_s']:.0f} img/s at best.",
        ]
    return [*lines, ""]


def _md_faiss(p: dict) -> list[str]:
    lines = [
        f"## FAISS {p['faiss']}: synthetic {p['n']:,} x {p['dim']}",
        "",
        "| step | CPU s | GPU s | speedup | note |",
        "|---|---:|---:|---:|---|",
    ]
    for r in p["rows"]:
        note = r.get("note", "") if r["status"] == "ok" else r["status"]
        lines.append(
            f"| {r['step']} | {_f(r.get('cpu_s'), '.3g')} | {_f(r.get('gpu_s'), '.3g')} | "
            f"{_f(r['speedup'], '.1f')} | {note} |"
        )
    return [*lines, ""]


def _md_kmeans(p: dict) -> list[str]:
    lines = [
        f"## k-means: synthetic {p['n']:,} x 64, k={p['k']}, n_init={p['n_init']}",
        "",
        "| backend | device | seconds | inertia / row | x best CPU |",
        "|---|---|---:|---:|---:|",
    ]
    for r in p["rows"]:
        lines.append(
            f"| {r['backend']} | {r['device']} | {_cell(r, 'seconds')} | "
            f"{_f(r.get('inertia'), '.4f')} | {_f(r.get('speedup_vs_best_cpu'), '.1f')} |"
        )
    return [*lines, ""]


def _md_projection(p: dict) -> list[str]:
    lines = [
        "## 2-D maps: `projection.project`, use_cuml off vs on (synthetic x 64)",
        "",
        "| method | n | CPU backend (fitted rows) | CPU s | GPU backend (fitted rows) | GPU s "
        "| speedup |",
        "|---|---:|---|---:|---|---:|---:|",
    ]
    for r in p["rows"]:
        cpu, gpu = r["cpu"], r["gpu"]

        def who(side: dict) -> str:
            return f"{side['backend']} ({side['fitted_on']:,})" if "backend" in side else ""

        lines.append(
            f"| {r['method']} | {r['n']:,} | {who(cpu)} | {_cell(cpu, 'seconds')} | {who(gpu)} | "
            f"{_cell(gpu, 'seconds')} | {_f(r['speedup'], '.1f')} |"
        )
    lines += [
        "",
        f"Above max_fit_samples ({p['max_fit_samples']:,}) the CPU path fits a sample and "
        "places the other rows with `transform`; cuML fits every row, so its maps are not the "
        "same computation.",
    ]
    return [*lines, ""]


def _md_lightgbm(p: dict) -> list[str]:
    lines = [
        f"## LightGBM (active-learning settings): {p['train']:,} train / {p['test']:,} test, "
        f"{p['dim']} dims, {p['classes']} classes",
        "",
        "| device | setting | fit s | accuracy | x best CPU |",
        "|---|---|---:|---:|---:|",
    ]
    for r in p["rows"]:
        lines.append(
            f"| {r['device']} | {r['setting']} | {_cell(r, 'seconds')} | "
            f"{_f(r.get('accuracy'), '.3f')} | {_f(r.get('speedup_vs_best_cpu'), '.1f')} |"
        )
    return [*lines, ""]


SECTIONS = {
    "embed": _md_embed,
    "faiss": _md_faiss,
    "kmeans": _md_kmeans,
    "projection": _md_projection,
    "lightgbm": _md_lightgbm,
}


# --------------------------------------------------------------------------- main


def write_placeholder(results_dir: Path) -> bool:
    """A "not measured" gpu_check.{json,md} where there is no result yet; never overwrites."""
    json_path, md_path = results_dir / f"{NAME}.json", results_dir / f"{NAME}.md"
    if json_path.exists() or md_path.exists():
        return False
    results_dir.mkdir(parents=True, exist_ok=True)
    payload = {"machine": common.machine(), "measured": False, "reason": "no GPU"}
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(
        "# GPU check\n\nNot measured on this machine (no GPU). On a machine with a CUDA GPU run "
        "`python -m benchmarks.gpu_check` (see the README's GPU section); it replaces this file "
        "with the measurements.\n"
    )
    return True


def write(results_dir: Path, payload: dict, text: str) -> None:
    """`common.write_results`, pointed at `results_dir` for this call."""
    saved = common.RESULTS
    common.RESULTS = results_dir
    try:
        common.write_results(NAME, payload, text)
    finally:
        common.RESULTS = saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--device", default="cuda:0", help="the CUDA device to measure")
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help=f"where gpu_check.{{json,md}} go (default {common.RESULTS}; a --quick run "
        "writes only when this is given)",
    )
    args = parser.parse_args(argv)
    if not args.device.startswith("cuda"):
        parser.error(f"--device must be cuda or cuda:N, got {args.device!r}")
    results_dir = args.results_dir or common.RESULTS

    import torch

    if not torch.cuda.is_available():
        print(NO_GPU)
        if write_placeholder(results_dir):
            print(f"wrote {results_dir / NAME}.md: not measured on this machine (no GPU)")
        return 0

    dev = args.device if ":" in args.device else f"{args.device}:0"
    gpu_id = torch.device(dev).index or 0
    torch.cuda.set_device(gpu_id)
    size = QUICK if args.quick else FULL
    start = time.perf_counter()
    payload = {
        "measured": True,
        "quick": args.quick,
        "device": device_info(dev),
        "versions": versions(),
        "sizes": size,
        "parts": {},
    }
    print(f"gpu_check on {payload['device']['name']} ({dev}); parts: {' '.join(args.parts)}")
    runners = {
        "embed": lambda: bench_embed(dev, size),
        "faiss": lambda: bench_faiss(gpu_id, size),
        "kmeans": lambda: bench_kmeans(gpu_id, size),
        "projection": lambda: bench_projection(size),
        "lightgbm": lambda: bench_lightgbm(size),
    }
    for name in args.parts:
        t = time.perf_counter()
        payload["parts"][name] = guarded(runners[name])
        print(
            f"  {name}: {payload['parts'][name]['status']} ({time.perf_counter() - t:.1f} s)",
            flush=True,
        )
    payload["wall_s"] = time.perf_counter() - start
    text = markdown({**payload, "machine": common.machine()})
    if args.quick and args.results_dir is None:
        print(text)
        print("\nquick run: nothing written (pass --results-dir DIR to keep it)")
    else:
        write(results_dir, payload, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
