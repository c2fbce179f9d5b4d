"""The demo job (every asset over the demo digits, as `emb demo` runs it) with the in-process
executor and with the multiprocess executor, side by side.

    python -m benchmarks.executor_compare [--images 1797] [--repeats 1]

Each run is a fresh interpreter on a fresh data directory (no embedding cache, no Dagster
instance, nothing pre-warmed) over the same images, and the job is the one of the definitions,
with `$EMB_EXECUTOR` choosing the executor as it does for `emb ui`. The multiprocess executor
starts a process per step, which imports the definitions and the libraries of its asset again,
and runs up to one step per CPU at once. With --repeats, the order alternates and medians are
reported. `--images 100` (a stride sample of the demo files) checks the script quickly.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, write_results

EXECUTORS = ("in_process", "multiprocess")


def demo_images(tmp: Path, n: int | None) -> tuple[Path, int]:
    """The demo digits (with their two bad files), or a stride sample of `n` of them."""
    from embedding_assets.cli.demo import write_demo_images

    folder = tmp / "demo_images"
    write_demo_images(folder)
    files = sorted(folder.rglob("*.png"))
    if n is None or n >= len(files):
        return folder, len(files)
    sample = tmp / "sample_images"
    for path in files[:: len(files) // n][:n]:
        target = sample / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return sample, n


def run_job(image_dir: str) -> dict:
    """In the child process: the job of the definitions, executed with their executor."""
    import dagster as dg

    from embedding_assets.cli.runner import catalog_config, everything_job, instance, merge

    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    with instance() as inst:
        start = time.perf_counter()
        result = dg.execute_job(
            dg.reconstructable(everything_job),
            inst,
            run_config=merge(catalog_config(image_dir), quiet),
        )
        seconds = time.perf_counter() - start
        steps = {
            s.step_key: s.end_time - s.start_time
            for s in inst.get_run_step_stats(result.run_id)
            if s.start_time and s.end_time
        }
    return {"success": result.success, "run_s": seconds, "steps": steps}


def timed_child(executor: str, image_dir: Path, data_dir: Path) -> dict:
    """One cold run in a fresh interpreter; its wall time includes start-up and imports."""
    env = {**os.environ, "EMB_EXECUTOR": executor, "EMB_DATA_DIR": str(data_dir)}
    env.pop("DAGSTER_HOME", None)  # the instance goes inside the fresh data directory
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.executor_compare", "--child", str(image_dir)],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{executor} run crashed:\n{proc.stderr[-4000:]}")
    return {"wall_s": wall, **json.loads(proc.stdout.splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=None, help="default: all demo images")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", metavar="IMAGE_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_job(args.child)))
        return
    runs: dict[str, list[dict]] = {executor: [] for executor in EXECUTORS}
    with tempfile.TemporaryDirectory() as tmp:
        image_dir, n = demo_images(Path(tmp), args.images)
        for repeat in range(args.repeats):
            order = EXECUTORS if repeat % 2 == 0 else EXECUTORS[::-1]
            for executor in order:
                data_dir = Path(tmp) / f"data_{executor}_{repeat}"
                runs[executor].append(timed_child(executor, image_dir, data_dir))
                print(f"{executor}: {runs[executor][-1]['wall_s']:.1f} s", file=sys.stderr)

    def median(executor: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[executor])

    wall = {e: median(e, "wall_s") for e in EXECUTORS}
    step_sum = {e: statistics.median(sum(r["steps"].values()) for r in runs[e]) for e in EXECUTORS}
    ratio = wall["multiprocess"] / wall["in_process"]
    step_keys = sorted({k for rs in runs.values() for r in rs for k in r["steps"]})

    def step_row(key: str) -> str:
        cells = [statistics.median(r["steps"].get(key, 0.0) for r in runs[e]) for e in EXECUTORS]
        return f"| {key} | " + " | ".join(f"{c:.1f}" for c in cells) + " |"

    step_rows = "\n".join(step_row(key) for key in step_keys)
    ok = {e: all(r["success"] for r in runs[e]) for e in EXECUTORS}
    summary_rows = "\n".join(
        f"| {e} | {wall[e]:.1f} | {median(e, 'run_s'):.1f} | {step_sum[e]:.1f} | {ok[e]} |"
        for e in EXECUTORS
    )
    md = f"""# Executors: in-process vs multiprocess on the demo job

Every asset and check over {n:,} demo images (`emb demo`'s settings), each run cold in a fresh
interpreter on a fresh data directory; {machine()["cpus"]} CPUs, median of {args.repeats}
run(s) per executor.

| executor | wall s (process) | run s (execute_job) | sum of step s | all steps succeeded |
|---|---:|---:|---:|---|
{summary_rows}

**multiprocess / in-process wall time = {ratio:.2f}** (below 1: multiprocess is faster).

| step | in_process s | multiprocess s |
|---|---:|---:|
{step_rows}
"""
    write_results(
        "executor_compare",
        {
            "images": n,
            "repeats": args.repeats,
            "runs": runs,
            "wall_median_s": wall,
            "ratio_multiprocess_to_in_process": ratio,
        },
        md,
    )


if __name__ == "__main__":
    main()
