"""The `embeddings` step in-process vs on a Ray cluster, side by side in one run, on the same
CIFAR-10 test images (default backbone: EfficientNet-Lite0, packaged weights, 224 px):

(a) engine local: the step's own process (DataLoader decode workers + torch threads, all CPUs),
(b) engine ray: a local two-node cluster (1 CPU each, loopback only), one actor per CPU slot,
    each with one torch thread; the vectors come back to the step, which writes LMDB + Parquet.

Both run `embedding_run.run_embeddings` from an empty cache, so model loading, the LMDB writes
and the Parquet hand-off are in both; (b) also pays for the actors' start (each loads the
model). The cluster runs in a network namespace of its own (`unshare -n`, needs root): the
script re-runs itself inside one, measures (a), then starts the cluster and measures (b).

    python -m benchmarks.scale_out [--images 2000] [--batch 64]

Goal (issue 17): (b) at most 15 % slower than (a). A cost model for 10M and 100M images follows
from the steady per-image cost of one CPU worker (after the actors' start).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import CIFAR_TEST, cifar_subset, machine, write_results

NAME = "scale_out"
PORT = 6379  # inside the benchmark's own network namespace
NODES = 2  # one CPU each
GOAL = 0.15
SCALES = (10_000_000, 100_000_000)
WORKER_COUNTS = (16, 64, 256)
INSIDE = "--inside-namespace"


def _skip_reason() -> str | None:
    if not CIFAR_TEST.is_dir():
        return f"{CIFAR_TEST} not found (a fresh clone has no ../shared)"
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed (pip install -e '.[ray]')"
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "needs root and unshare for a loopback-only network namespace"
    return None


def _start_cluster() -> None:
    ray = str(Path(sys.executable).with_name("ray"))
    node = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0"]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    commands = [[ray, "start", "--head", f"--port={PORT}", *node, "--include-dashboard=false"]]
    commands += [[ray, "start", f"--address=127.0.0.1:{PORT}", *node]] * (NODES - 1)
    for cmd in commands:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode:
            sys.exit(f"{' '.join(cmd[1:3])} failed:\n{done.stderr[-2000:]}")


def _stop_cluster() -> None:
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray, "stop", "--force"], stdout=subprocess.DEVNULL, timeout=120)


def measure(folder: Path, root: Path, engine, batch: int) -> dict:
    """One `embeddings` run from an empty cache; the steady rate leaves out the first round of
    batches (model loading, the actors' start)."""
    from embedding_assets.catalog.scan import scan_catalog
    from embedding_assets.embedding import sets as vectors
    from embedding_assets.embedding.embedder import EmbedParams
    from embedding_assets.embedding.run import RunOptions, run_embeddings
    from resources.paths import DataPaths

    paths = DataPaths(root)
    scan_catalog(paths.catalog_db, folder)
    marks: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    summary = run_embeddings(
        paths,
        EmbedParams(),
        RunOptions(batch_size=batch, engine=engine),
        progress=lambda done, total: marks.append((time.perf_counter(), done)),
    )
    total_s = time.perf_counter() - t0
    first_round = next(i for i, (_, done) in enumerate(marks) if done >= NODES * batch)
    (t_k, done_k), (t_end, done_end) = marks[first_round], marks[-1]
    _, ids, matrix = vectors.load_current(paths.catalog_db)
    return {
        "engine": engine.kind,
        "images": summary.embedded,
        "total_s": total_s,
        "embed_s": summary.embed_seconds,
        "first_round_s": t_k - t0,
        "steady_img_per_s": (done_end - done_k) / (t_end - t_k),
        "retried": len(summary.retried),
        "ids": ids,
        "matrix": matrix,
    }


def cost_rows(ray_row: dict) -> list[dict]:
    """Worker-hours and wall hours at the measured steady cost of one CPU worker."""
    per_image_s = NODES / ray_row["steady_img_per_s"]  # one worker's seconds per image
    return [
        {
            "images": n,
            "cpu_worker_hours": n * per_image_s / 3600,
            "wall_hours": {w: n * per_image_s / 3600 / w for w in WORKER_COUNTS},
        }
        for n in SCALES
    ]


def run(images: int, batch: int) -> None:
    from embedding_assets.embedding.run_options import Engine

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = cifar_subset(images, Path(tmp) / "cifar")
        local = measure(folder, Path(tmp) / "local", Engine("local"), batch)
        _start_cluster()
        try:
            address = f"127.0.0.1:{PORT}"
            ray_row = measure(folder, Path(tmp) / "ray", Engine("ray", address), batch)
        finally:
            _stop_cluster()
    load_after = os.getloadavg()
    assert np.array_equal(local.pop("ids"), ray_row.pop("ids"))
    max_diff = float(np.abs(local.pop("matrix") - ray_row.pop("matrix")).max())
    overhead = ray_row["total_s"] / local["total_s"] - 1
    costs = cost_rows(ray_row)
    payload = {
        "images": images,
        "batch": batch,
        "rows": [local, ray_row],
        "overhead": overhead,
        "max_abs_diff": max_diff,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cost_model": costs,
    }
    write_results(NAME, payload, markdown(payload))


def markdown(p: dict) -> str:
    local, ray_row = p["rows"]
    cpus = machine()["cpus"]
    lines = [
        "# Embeddings on Ray vs in-process (CPU)",
        "",
        f"{p['images']} CIFAR-10 test JPEGs (32 px, resized to 224), EfficientNet-Lite0 with its "
        f"packaged weights, batch {p['batch']}; {cpus} CPUs, torch {torch.__version__}. "
        f"Local: the step's process with its DataLoader workers and {torch.get_num_threads()} "
        f"torch threads. Ray: {NODES} nodes of 1 CPU on loopback (one network namespace), one "
        "actor per CPU slot with 1 torch thread. Both from an empty cache, LMDB and Parquet "
        "writes included; measured side by side in one run.",
        "",
        "| engine | total s | embed s | first round s | steady img/s | retried batches |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in (local, ray_row):
        lines.append(
            f"| {r['engine']} | {r['total_s']:.1f} | {r['embed_s']:.1f} | "
            f"{r['first_round_s']:.1f} | {r['steady_img_per_s']:.1f} | {r['retried']} |"
        )
    verdict = "met" if p["overhead"] <= GOAL else "missed"
    lines += [
        "",
        f"Ray / local, total: {ray_row['total_s'] / local['total_s']:.2f} "
        f"(overhead {p['overhead']:+.0%}; goal <= {GOAL:.0%}: {verdict}). Steady rate, Ray / "
        f"local: {ray_row['steady_img_per_s'] / local['steady_img_per_s']:.2f}. Largest "
        f"difference between the two sets of vectors: {p['max_abs_diff']:.1e}.",
        f"Load average (1, 5, 15 min) before: {_load(p['load_average_before'])}; after: "
        f"{_load(p['load_average_after'])}.",
        "",
        "## Cost model",
        "",
        f"One CPU worker (1 core) embeds {ray_row['steady_img_per_s'] / NODES:.1f} img/s once "
        f"its actor runs (the steady Ray rate above / {NODES}); the actors' start (first round, "
        f"{ray_row['first_round_s']:.0f} s here) is left out. Reading from object storage "
        "instead of a local disk is not measured.",
        "",
        "| images | CPU worker-hours | "
        + " | ".join(f"wall h, {w} workers" for w in WORKER_COUNTS)
        + " |",
        "|---:|---:|" + "---:|" * len(WORKER_COUNTS),
    ]
    for c in p["cost_model"]:
        walls = " | ".join(f"{c['wall_hours'][w]:.1f}" for w in WORKER_COUNTS)
        lines.append(f"| {c['images']:,} | {c['cpu_worker_hours']:,.0f} | {walls} |")
    lines += ["", "GPU workers: not measured (no GPU on the machine of this run)."]
    return "\n".join(lines)


def _load(avg: tuple[float, float, float] | list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in avg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(INSIDE, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    reason = _skip_reason()
    if reason:
        print(f"{NAME}: skipped: {reason}")
        return
    if not args.inside_namespace:
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        cmd = [sys.executable, "-m", "benchmarks.scale_out", *sys.argv[1:], INSIDE]
        os.execvp("unshare", ["unshare", "-n", *cmd])
    run(args.images, args.batch)


if __name__ == "__main__":
    main()
