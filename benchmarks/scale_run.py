"""The whole asset graph at 10k, 30k and 100k images: seconds per asset, peak memory, disk, and
what a few new images or labels cost (issue 39).

    python -m benchmarks.scale_run [--images 10000 30000 100000] [--skip-increments]

Each size gets a deterministic folder of N distinct 64 px JPEGs, each a 2x2 mosaic of four
CIFAR-10 test photos of one class (so decoding and resizing cost what real photos cost and the
labels mean something); 5 % sit in class folders, the rest in `unlabeled/`. Then, each in its own
process (so each pays the imports), with the assets' defaults and a fresh data directory:

1. a cold `emb run` (`runner.run_everything`, what the CLI calls);
2. a no-op `emb run` (nothing new);
3. the run after adding 1 % new unlabeled images;
4. the run after labeling 1 % more images (`emb label import` of a CSV of their true classes).

Per run: wall seconds, seconds per step, peak resident memory of the process (the largest of
itself and its children, `getrusage`), the data folder's size. Writes
`benchmarks/results/scale_run.{json,md,png}` (a log-log plot of seconds per asset against N)
and states each of the issue's goals met or not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE, REPO, RESULTS, machine, require_cifar, write_results

LABELED_SHARE = 0.05
STEP_SHARE = 0.01  # new images, then new labels, as a share of N
TILE = 32
PER_LINEAR = 1.5  # seconds per image at the largest N within this factor of the smallest N's
COLD_GOAL_S = 45 * 60  # cold run at 100k
MEMORY_GOAL_GB = 6.0
NEW_IMAGES_GOAL, NEW_LABELS_GOAL = 0.05, 0.10  # of the cold run


@dataclass(frozen=True)
class Mosaic:
    """One generated image: the four CIFAR photos it is made of and their class."""

    index: int
    label: str
    tiles: tuple[int, int, int, int]


def _photos() -> tuple[np.ndarray, list[str]]:
    """All CIFAR-10 test photos as one (n, 32, 32, 3) uint8 array and their class names."""
    from PIL import Image

    arrays, labels = [], []
    for folder in sorted(p for p in require_cifar().iterdir() if p.is_dir()):
        for path in sorted(folder.glob("*.jpg")):
            arrays.append(np.asarray(Image.open(path).convert("RGB").resize((TILE, TILE))))
            labels.append(folder.name)
    return np.stack(arrays), labels


def mosaics(start: int, count: int, labels: list[str]) -> list[Mosaic]:
    """Mosaics `start .. start+count-1`; mosaic i depends on i alone, so a folder of N is the
    first N of a folder of any larger size and new images are the next ones."""
    by_class: dict[str, np.ndarray] = {}
    for i, name in enumerate(labels):
        by_class.setdefault(name, []).append(i)
    classes = sorted(by_class)
    out = []
    for i in range(start, start + count):
        rng = np.random.default_rng(i)
        label = classes[i % len(classes)]
        tiles = rng.choice(by_class[label], size=4, replace=False)
        out.append(Mosaic(i, label, tuple(int(t) for t in tiles)))
    return out


def write_mosaics(items: list[Mosaic], photos: np.ndarray, folder_of) -> list[Path]:
    """Save each mosaic as a 64 px JPEG under `folder_of(mosaic)`; existing files are kept."""
    from PIL import Image

    paths = []
    for m in items:
        path = folder_of(m) / f"m{m.index:07d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        a, b, c, d = (photos[t] for t in m.tiles)
        grid = np.concatenate([np.concatenate([a, b], 1), np.concatenate([c, d], 1)], 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(path, quality=90)
    return paths


def labeled(m: Mosaic, n: int) -> bool:
    """5 % of each size's images, spread over the index range and every class (mosaic i is of
    class i mod 10), are labeled."""
    return m.index < n and (m.index // 10) % round(1 / LABELED_SHARE) == 0


def build_folder(root: Path, n: int, photos: np.ndarray, labels: list[str]) -> list[Mosaic]:
    items = mosaics(0, n, labels)
    write_mosaics(items, photos, lambda m: root / (m.label if labeled(m, n) else "unlabeled"))
    return items


def child() -> None:
    """One `emb run` over the folder in argv: its seconds per step and peak memory as JSON."""
    from embedding_assets.cli.runner import catalog_config, run_everything
    from embedding_assets.cli.summary import problem_lines

    start = time.perf_counter()
    result = run_everything(catalog_config(sys.argv[2]), verbose=False)
    seconds = time.perf_counter() - start
    if not result.success:
        sys.exit("the run failed:\n" + "\n".join(problem_lines(result)))
    steps = {
        e.step_key: e.step_success_data.duration_ms / 1000 for e in result.get_step_success_events()
    }
    peak_kb = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    print(json.dumps({"run_s": seconds, "steps_s": steps, "peak_gb": peak_kb / 2**20}))


def _size_gb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**30


def timed_run(images: Path, env: dict, data: Path) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.scale_run", "--child", str(images)]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"run failed (exit {out.returncode}):\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    return {**report, "wall_s": wall, "data_gb": _size_gb(data)}


def add_labels(db: Path, items: list[Mosaic], n: int, work: Path, round_no: int = 0) -> int:
    """Label 1 % of N more images (unlabeled ones, by path) through the CSV import; each round
    picks other images."""
    from embedding_assets.catalog.labels import import_csv

    images = work / "images"
    unlabeled = [m for m in items if not labeled(m, n)]
    want = round(n * STEP_SHARE)
    picked = unlabeled[round_no :: max(1, len(unlabeled) // want)][:want]
    csv = work / "new_labels.csv"
    rows = [f"{images / 'unlabeled' / f'm{m.index:07d}.jpg'},{m.label}" for m in picked]
    csv.write_text("path,label\n" + "\n".join(rows) + "\n")
    result = import_csv(db, csv)
    if result.rejected:
        sys.exit(f"label import rejected {len(result.rejected)} rows: {result.rejected[0]}")
    return result.inserted


@dataclass(frozen=True)
class Folder:
    """One size's folder, data directory and environment."""

    n: int
    work: Path
    items: list[Mosaic]

    @property
    def images(self) -> Path:
        return self.work / "images"

    @property
    def data(self) -> Path:
        return self.work / "data"

    @property
    def env(self) -> dict:
        home = str(self.work / "dagster")
        return {**os.environ, "EMB_DATA_DIR": str(self.data), "DAGSTER_HOME": home}


def increments(folder: Folder, photos: np.ndarray, labels: list[str], round_no: int) -> dict:
    """The run after 1 % new images, then the run after 1 % new labels (round 0: the first
    1 % past N, round 1: the next...)."""
    n, extra = folder.n, round(folder.n * STEP_SHARE)
    new = mosaics(n + round_no * extra, extra, labels)
    write_mosaics(new, photos, lambda m: folder.images / f"new{round_no or ''}" / "unlabeled")
    runs = {"new_images": timed_run(folder.images, folder.env, folder.data)}
    added = add_labels(folder.data / "catalog.duckdb", folder.items, n, folder.work, round_no)
    print(f"{n:,}: labeled {added} more")
    runs["new_labels"] = timed_run(folder.images, folder.env, folder.data)
    return runs


def one_size(n: int, photos: np.ndarray, labels: list[str], increments_too: bool) -> dict:
    work = CACHE / "scale_run" / str(n)
    stale = [work / "data", work / "dagster", *(work / "images").glob("new*")]
    subprocess.run(["rm", "-rf", *map(str, stale)])
    folder = Folder(n, work, build_folder(work / "images", n, photos, labels))
    runs = {"cold": timed_run(folder.images, folder.env, folder.data)}
    print(f"{n:,}: cold {runs['cold']['wall_s']:.0f} s, peak {runs['cold']['peak_gb']:.2f} GB")
    runs["noop"] = timed_run(folder.images, folder.env, folder.data)
    if increments_too:
        runs.update(increments(folder, photos, labels, 0))
    print(f"{n:,}: " + ", ".join(f"{k} {v['wall_s']:.0f} s" for k, v in runs.items()))
    return runs


def again(n: int, photos: np.ndarray, labels: list[str], partial: Path) -> None:
    """The increments once more on the state a full run of size N left, with the code checked
    out now (recorded with its commit), into `partial` under `again`."""
    sizes = json.loads(partial.read_text())
    work = CACHE / "scale_run" / str(n)
    folder = Folder(n, work, mosaics(0, n, labels))
    runs = increments(folder, photos, labels, len(sizes[str(n)].get("again", [])) + 1)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    sizes[str(n)].setdefault("again", []).append({"commit": commit, **runs})
    partial.write_text(json.dumps(sizes, indent=1))
    print(
        f"{n:,} again at {commit}: "
        + ", ".join(f"{k} {v['wall_s']:.0f} s" for k, v in runs.items())
    )


def runs_of(size: dict) -> dict[str, dict]:
    """A size's runs by name, the increments measured again (`--again`) named with their
    commit."""
    runs = {k: v for k, v in size.items() if k != "again"}
    for later in size.get("again", []):
        runs.update({f"{k} @{later['commit']}": v for k, v in later.items() if k != "commit"})
    return runs


def per_image(sizes: dict[int, dict], step: str) -> dict[int, float]:
    return {n: r["cold"]["steps_s"].get(step, 0.0) / n for n, r in sizes.items()}


def plot(sizes: dict[int, dict], steps: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(sizes)
    fig, ax = plt.subplots(figsize=(8, 6))
    for step in steps:
        ys = [max(sizes[n]["cold"]["steps_s"].get(step, 0.0), 1e-2) for n in ns]
        ax.plot(ns, ys, marker="o", label=step)
    ax.plot(ns, [sizes[n]["cold"]["wall_s"] for n in ns], "k--", marker="s", label="whole run")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("images")
    ax.set_ylabel("seconds (cold run)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(RESULTS / "scale_run.png", dpi=110)


def goals(sizes: dict[int, dict]) -> list[str]:
    ns = sorted(sizes)
    small, big = ns[0], ns[-1]
    cold = sizes[big]["cold"]
    lines = []
    bent = [
        f"{step} {per_image(sizes, step)[big] / per_image(sizes, step)[small]:.2f}x"
        for step in cold["steps_s"]
        if sizes[small]["cold"]["steps_s"].get(step, 0) > 0.5
        and per_image(sizes, step)[big] > PER_LINEAR * per_image(sizes, step)[small]
    ]
    lines.append(
        f"- Seconds per image at {big:,} within {PER_LINEAR}x of {small:,} for every step "
        f"(steps over 0.5 s): **{'met' if not bent else 'NOT met'}**"
        + (f" ({', '.join(bent)})" if bent else "")
    )
    largest = max(cold["steps_s"], key=cold["steps_s"].get)
    lines.append(
        f"- Cold run at {big:,} <= {COLD_GOAL_S / 60:.0f} min: "
        f"**{'met' if cold['wall_s'] <= COLD_GOAL_S else 'NOT met'}** "
        f"({cold['wall_s'] / 60:.1f} min); largest step `{largest}` "
        f"({cold['steps_s'][largest] / cold['wall_s']:.0%})"
    )
    peak = cold["peak_gb"]
    lines.append(
        f"- Peak memory of the cold run at {big:,} <= {MEMORY_GOAL_GB:.0f} GB: "
        f"**{'met' if peak <= MEMORY_GOAL_GB else 'NOT met'}** ({peak:.2f} GB)"
    )
    for key, goal, what in (
        ("new_images", NEW_IMAGES_GOAL, "1 % new images"),
        ("new_labels", NEW_LABELS_GOAL, "1 % new labels"),
    ):
        for name, run in runs_of(sizes[big]).items():
            if name.split(" @")[0] != key:
                continue
            share = run["wall_s"] / cold["wall_s"]
            code = f" (code of {name.split(' @')[1]})" if " @" in name else ""
            lines.append(
                f"- Run after {what} at {big:,} <= {goal:.0%} of cold{code}: "
                f"**{'met' if share <= goal else 'NOT met'}** ({share:.1%})"
            )
    return lines


def growth(sizes: dict[int, dict], value) -> float:
    """The log-log slope of `value(run)` between the two largest sizes, at least 1 (a step's
    cost does not grow slower than linearly past its fixed part)."""
    ns = sorted(sizes)
    if len(ns) < 2:
        return 1.0
    (n1, n2), (v1, v2) = ns[-2:], (max(value(sizes[n]), 1e-3) for n in ns[-2:])
    return max(1.0, float(np.log(v2 / v1) / np.log(n2 / n1)))


def at_million(sizes: dict[int, dict], step: str) -> float:
    """Seconds of `step` at 1M images, extrapolated along its measured growth."""
    big = max(sizes)
    cost = lambda r: r["cold"]["steps_s"].get(step, 0.0)  # noqa: E731
    return cost(sizes[big]) * (1_000_000 / big) ** growth(sizes, cost)


def memory_at_million(sizes: dict[int, dict]) -> float:
    """Peak GB at 1M: the line through the two largest sizes' cold-run peaks."""
    ns = sorted(sizes)
    if len(ns) < 2:
        return float("nan")
    (n1, n2), (m1, m2) = ns[-2:], (sizes[n]["cold"]["peak_gb"] for n in ns[-2:])
    return m2 + (m2 - m1) / (n2 - n1) * (1_000_000 - n2)


def increments_table(sizes: dict[int, dict]) -> str:
    """Where the runs after 1 % new images / labels spend their time, at the largest size."""
    big = runs_of(sizes[max(sizes)])
    kinds = [k for k in big if k.startswith(("new_images", "new_labels"))]
    if not kinds:
        return "(increments not run)"
    steps = sorted(
        {s for k in kinds for s in big[k]["steps_s"]},
        key=lambda s: -max(big[k]["steps_s"].get(s, 0.0) for k in kinds),
    )
    rows = [
        f"| {step} | {big['cold']['steps_s'].get(step, 0):.1f} | "
        + " | ".join(f"{big[k]['steps_s'].get(step, 0):.1f}" for k in kinds)
        + " |"
        for step in steps
        if max(big[k]["steps_s"].get(step, 0.0) for k in kinds) >= 1.0
    ]
    head = "| step | cold s | " + " | ".join(f"{k} s" for k in kinds) + " |"
    return "\n".join([head, "|---|---:|" + "---:|" * len(kinds), *rows])


def report(sizes: dict[int, dict], notes: list[str] = ()) -> None:
    """Write the results; `notes`: lines about the runs (e.g. what an `--again` run met)."""
    ns = sorted(sizes)
    steps = sorted(
        {s for r in sizes.values() for s in r["cold"]["steps_s"]},
        key=lambda s: -sizes[ns[-1]]["cold"]["steps_s"].get(s, 0.0),
    )
    runs_table = "\n".join(
        f"| {n:,} | {kind} | {r['wall_s']:.0f} | {r['wall_s'] / sizes[n]['cold']['wall_s']:.1%} "
        f"| {r['peak_gb']:.2f} | {r['data_gb']:.2f} |"
        for n in ns
        for kind, r in runs_of(sizes[n]).items()
    )
    head = " | ".join(f"{n:,} s" for n in ns) + " | " + " | ".join(f"{n:,} ms/img" for n in ns)
    step_rows = "\n".join(
        f"| {step} | "
        + " | ".join(f"{sizes[n]['cold']['steps_s'].get(step, 0):.1f}" for n in ns)
        + " | "
        + " | ".join(f"{1000 * per_image(sizes, step)[n]:.2f}" for n in ns)
        + f" | {at_million(sizes, step) / 60:.1f} |"
        for step in steps
    )
    million = sum(at_million(sizes, step) for step in steps)
    plot(sizes, [s for s in steps if sizes[ns[-1]]["cold"]["steps_s"].get(s, 0) > 1][:12])
    md = f"""# Scale: the whole graph at {", ".join(f"{n:,}" for n in ns)} images

Generated 64 px mosaics of CIFAR-10 test photos (4 photos of one class each), 5 % labeled by
folder, the assets' defaults, {machine()["cpus"]} CPUs. Each run is `emb run`'s
`runner.run_everything` in its own process; peak memory is the process's maximum resident set
(its children's included); data is the data folder's size after the run. `python -m
benchmarks.scale_run`.

## Goals

{chr(10).join(goals(sizes))}

## Runs

| images | run | wall s | of cold | peak GB | data GB |
|---|---|---:|---:|---:|---:|
{runs_table}

## Seconds per step, cold run

![seconds per asset against images](scale_run.png)

Per step, cold: seconds at each size, milliseconds per image, and minutes estimated at
1,000,000 images (each step's seconds at {ns[-1]:,} grown along its measured log-log slope
between the two largest sizes, at least linear). Steps run one after another on this machine
(two at a time where Dagster can), so the whole run is roughly their sum.

| step | {head} | 1M min (est.) |
|---|{"---:|" * (2 * len(ns) + 1)}
{step_rows}

**At 1,000,000 images** (estimated, this 2-core CPU): the steps sum to about
{million / 3600:.1f} h; peak memory about {memory_at_million(sizes):.1f} GB (the line
through the cold-run peaks at {ns[-2] if len(ns) > 1 else ns[-1]:,} and {ns[-1]:,}).

## Where a run after 1 % new images or labels spends its time ({ns[-1]:,})

{increments_table(sizes)}
"""
    if notes:
        md += "\n## Notes\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    write_results("scale_run", {"sizes": {str(n): sizes[n] for n in ns}, "notes": notes}, md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--skip-increments", action="store_true", help="cold and no-op only")
    parser.add_argument(
        "--from-json", type=Path, default=None, help="write the report from a partial JSON"
    )
    parser.add_argument(
        "--again",
        type=int,
        default=None,
        help="run the increments once more on size N's state, with the code checked out now",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return
    if args.from_json and not args.again:
        found = json.loads(args.from_json.read_text())
        notes = found.pop("notes", [])
        report({int(n): r for n, r in found.items()}, notes)
        return
    photos, labels = _photos()
    if args.again:
        again(args.again, photos, labels, args.from_json or RESULTS / "scale_run.partial.json")
        return
    sizes = {}
    for n in sorted(args.images):
        sizes[n] = one_size(n, photos, labels, not args.skip_increments)
        (RESULTS / "scale_run.partial.json").write_text(json.dumps(sizes, indent=1))
    report(sizes)


if __name__ == "__main__":
    main()
