"""What loading the Dagster definitions costs, now and at a baseline commit, with `import dagster`
alone as the floor: every `dagster` command, the webserver, the daemon and each step process
pays it.

    python -m benchmarks.import_time [--baseline 0bd95d9] [--repeats 5]

Each import runs in a fresh interpreter (the runs of all cases interleaved, so background load
hits them alike); the time is that of the import statement, without interpreter start-up. The
baseline is the tree of `--baseline` (git archive) run with the same virtual environment.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import REPO, machine, write_results

HEAVY = (
    "torch",
    "torchvision",
    "timm",
    "faiss",
    "sklearn",
    "lightgbm",
    "umap",
    "openTSNE",
    "matplotlib",
    "pytorch_metric_learning",
    "pyarrow",
    "pandas",
)
PROBE = """
import importlib, json, sys, time
start = time.perf_counter()
module = importlib.import_module(sys.argv[1])
seconds = time.perf_counter() - start
loaded = {name.split(".")[0] for name in sys.modules}
print(json.dumps({"seconds": seconds, "file": module.__file__,
                  "heavy": sorted(loaded & set(sys.argv[2:]))}))
"""


def import_once(module: str, root: Path) -> dict:
    """Import `module` in a fresh interpreter with `root` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module, *HEAVY],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out.splitlines()[-1])
    if module != "dagster" and not result["file"].startswith(str(root)):
        sys.exit(f"{module} came from {result['file']}, not from {root}")
    return result


def extract(ref: str, into: Path) -> None:
    archive = subprocess.run(["git", "archive", ref], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)


def cli_module(root: Path) -> str:
    """The module of the `emb` entry point in the checkout at `root` (it moved with the layout)."""
    found = re.search(r'^emb = "([\w.]+):', (root / "pyproject.toml").read_text(), re.M)
    return found.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default="0bd95d9", help="git ref to compare with")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        extract(args.baseline, base)
        cases = {
            "import dagster (floor)": ("dagster", REPO),
            f"definitions at {args.baseline}": ("embedding_assets.definitions", base),
            "definitions now": ("embedding_assets.definitions", REPO),
            f"CLI at {args.baseline}": (cli_module(base), base),
            "CLI now": (cli_module(REPO), REPO),
        }
        runs: dict[str, list[dict]] = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, (module, root) in cases.items():
                runs[name].append(import_once(module, root))
    seconds = {name: [r["seconds"] for r in rs] for name, rs in runs.items()}
    median = {name: statistics.median(s) for name, s in seconds.items()}
    heavy = {name: rs[-1]["heavy"] for name, rs in runs.items()}
    before, after = median[f"definitions at {args.baseline}"], median["definitions now"]
    cli_before, cli_after = median[f"CLI at {args.baseline}"], median["CLI now"]
    rows = "\n".join(
        f"| {name} | {median[name]:.3f} | {', '.join(heavy[name]) or 'none'} |" for name in cases
    )
    md = f"""# Import time of the Dagster definitions

`import embedding_assets.definitions` (what every `dagster` command, the webserver, the daemon
and each step process of a multiprocess run loads) and `import embedding_assets.cli` (`emb`),
now and at {args.baseline}; {machine()["cpus"]} CPUs, median of {args.repeats} fresh
interpreters each, runs interleaved.

| import | seconds | heavy libraries loaded |
|---|---:|---|
{rows}

**definitions: {before:.2f} s -> {after:.2f} s ({before / after:.1f}x faster)**; of what is
left, `import dagster` alone takes {median["import dagster (floor)"]:.2f} s.
CLI: {cli_before:.2f} s -> {cli_after:.2f} s ({cli_before / cli_after:.1f}x).
"""
    write_results(
        "import_time",
        {
            "baseline": args.baseline,
            "repeats": args.repeats,
            "seconds": seconds,
            "median_s": median,
            "heavy_loaded": heavy,
            "definitions_speedup": before / after,
            "cli_speedup": cli_before / cli_after,
        },
        md,
    )


if __name__ == "__main__":
    main()
