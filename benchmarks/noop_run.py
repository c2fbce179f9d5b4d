"""A cold `emb run` vs a second run with nothing new, side by side (issues 12 and 23: no-op
runs are free).

    python -m benchmarks.noop_run [--images 200 10000] [--model M --weights W --image-size S]

Each run is what `emb run` does, in its own Python process (so both pay the imports):
`runner.run_everything`, the function the CLI calls, over the first N CIFAR-10 test images
(round-robin over the classes, whose folder names label them), with the assets' default
settings unless told otherwise, in a fresh data directory and Dagster instance per size. The
cold run is two Dagster runs (`image_catalog`, then every other asset); the second finds the
state the first left (catalog, labels, settings, code, outputs) and stops after the catalog's
run. Goals: on 10,000 photos the no-op run takes <= 5 % of the cold one (issue 12); on 200
photos <= 3 s of wall time and <= 10 % of the cold run (issue 23).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, cifar_subset, machine, write_results

GOAL = 0.05  # no-op / cold on 10,000 photos
SMALL_GOAL_S, SMALL_GOAL = 3.0, 0.10  # on 200 photos


def child(image_dir: str, backbone: dict) -> None:
    """One `emb run`: print its seconds, each Dagster run's, seconds per step and the reused
    assets as JSON."""
    from embedding_assets.cli.runner import (
        backbone_config,
        catalog_config,
        instance,
        merge,
        run_everything,
    )
    from embedding_assets.cli.summary import problem_lines
    from embedding_assets.common.fingerprints import REUSED

    config = merge(catalog_config(image_dir), backbone_config(**backbone))
    start = time.perf_counter()
    result = run_everything(config, verbose=False)
    seconds = time.perf_counter() - start
    if not result.success:
        sys.exit("the run failed:\n" + "\n".join(problem_lines(result)))
    steps = {
        e.step_key: e.step_success_data.duration_ms / 1000 for e in result.get_step_success_events()
    }
    materialized = {
        e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    with instance() as inst:
        stats = [inst.get_run_stats(run_id) for run_id in result.run_ids]
    runs = [
        {
            "run_id": run_id,
            "assets": len({e.asset_key for e in r.get_asset_materialization_events()}),
            "seconds": s.end_time - s.start_time,
        }
        for run_id, r, s in zip(result.run_ids, result.results, stats, strict=True)
    ]
    embeddings = materialized.get("embeddings")
    print(
        json.dumps(
            {
                "run_s": seconds,
                "runs": runs,
                "up_to_date": result.up_to_date is not None,
                "not_run": len(result.not_run),
                "steps_s": steps,
                "reused": sorted(name for name, meta in materialized.items() if REUSED in meta),
                "model_key": embeddings["model_key"].value if embeddings else None,
            }
        )
    )


def timed_run(image_dir: Path, backbone: dict, env: dict) -> dict:
    """A child process doing one run: its report plus the process's wall time."""
    cmd = [sys.executable, "-m", "benchmarks.noop_run", "--child", str(image_dir)]
    cmd += ["--backbone", json.dumps(backbone)]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"run failed (exit {out.returncode}):\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--images", type=int, nargs="+", default=[200, 10_000], help="CIFAR-10 test images"
    )
    parser.add_argument("--model", default=None, help="backbone (default: the assets')")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--backbone", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, json.loads(args.backbone))
        return
    given = {"model": args.model, "weights": args.weights, "image_size": args.image_size}
    backbone = {k: v for k, v in given.items() if v is not None}
    pairs = {}
    for n in args.images:
        with tempfile.TemporaryDirectory() as tmp:
            images = cifar_subset(n, Path(tmp) / "images")
            env = {
                **os.environ,
                "EMB_DATA_DIR": str(Path(tmp) / "data"),
                "DAGSTER_HOME": str(Path(tmp) / "dagster"),
            }
            cold = timed_run(images, backbone, env)
            pairs[n] = (cold, timed_run(images, backbone, env))
        print(f"{n} images: cold {cold['wall_s']:.1f} s, no-op {pairs[n][1]['wall_s']:.1f} s")
    report(backbone, pairs)


def verdict(n: int, cold: dict, noop: dict) -> str:
    ratio = noop["wall_s"] / cold["wall_s"]
    if n <= 1000:
        met = noop["wall_s"] <= SMALL_GOAL_S and ratio <= SMALL_GOAL
        goal = f"<= {SMALL_GOAL_S:.0f} s and <= {SMALL_GOAL:.0%}"
    else:
        met, goal = ratio <= GOAL, f"<= {GOAL:.0%}"
    return f"{goal}: {'met' if met else 'NOT met'}"


def _runs_text(report: dict) -> str:
    """Its Dagster runs, as assets and seconds each: `1 asset(s) 0.9 s + 20 asset(s) 6.1 s`."""
    return " + ".join(f"{r['assets']} asset(s) {r['seconds']:.1f} s" for r in report["runs"])


def section(n: int, cold: dict, noop: dict) -> str:
    ratio = noop["wall_s"] / cold["wall_s"]
    in_run = noop["run_s"] / cold["run_s"]
    steps = sorted(cold["steps_s"], key=lambda k: -cold["steps_s"][k])
    rows = "\n".join(
        f"| {step} | {cold['steps_s'][step]:.2f} | "
        + (f"{noop['steps_s'][step]:.2f} |" if step in noop["steps_s"] else "- | not run")
        + (" reused |" if step in noop["reused"] else " |")
        for step in steps
    )
    embed = cold["steps_s"].get("embeddings", 0.0)
    shortcut = (
        f"stopped after the catalog's run: the state was the cold run's, {noop['not_run']} "
        "assets not run"
        if noop["up_to_date"]
        else "went through every asset (the state was not the cold run's)"
    )
    return f"""## {n:,} photos (model key `{cold["model_key"]}`)

| run | process wall s | `run_everything` s | its Dagster runs |
|---|---:|---:|---|
| cold (everything computed) | {cold["wall_s"]:.1f} | {cold["run_s"]:.1f} | {_runs_text(cold)} |
| no-op (nothing new) | {noop["wall_s"]:.1f} | {noop["run_s"]:.1f} | {_runs_text(noop)} |

**no-op / cold = {ratio:.1%}** of the process wall time ({in_run:.1%} of `run_everything`;
goal {verdict(n, cold, noop)}). The no-op run {shortcut}. The cold run's `embeddings` step:
{embed:.1f} s, {embed / cold["wall_s"]:.1%} of its wall time.

Seconds per step (assets and their checks), slowest cold step first:

| step | cold s | no-op s | |
|---|---:|---:|---|
{rows}
"""


def report(backbone: dict, pairs: dict[int, tuple[dict, dict]]) -> None:
    settings = ", ".join(f"{k} {v}" for k, v in backbone.items()) or "the assets' defaults"
    md = "\n".join(
        [
            "# No-op run: a cold `emb run` vs a second run with nothing new",
            "",
            f"CIFAR-10 test images, {settings}, {machine()['cpus']} CPUs. Each run is "
            "`runner.run_everything` (what `emb run` calls) in its own process, in a fresh data "
            "directory and Dagster instance per size.",
            "",
            *(section(n, cold, noop) for n, (cold, noop) in pairs.items()),
        ]
    )
    write_results(
        "noop_run",
        {
            "backbone": backbone,
            "sizes": {
                str(n): {
                    "model_key": cold["model_key"],
                    "cold": cold,
                    "noop": noop,
                    "ratio_wall": noop["wall_s"] / cold["wall_s"],
                    "ratio_run": noop["run_s"] / cold["run_s"],
                    "verdict": verdict(n, cold, noop),
                }
                for n, (cold, noop) in pairs.items()
            },
        },
        md,
    )


if __name__ == "__main__":
    main()
