"""What a UMAP map costs a fresh `emb run` process, with and without numba's disk cache for
umap-learn's compiled functions (`analytics/compiled_cache.py`).

    python -m benchmarks.projection_compile [--sizes 1000 6000]

Each case runs `projection.project(x, "umap")` and then places 30 new rows with the map's
placer (what a later run does with new images), in a fresh interpreter, as every `emb run`
does. Three cases per size, one after another: numba as umap-learn ships it (compiles in every
process), the disk cache cold (the first run on a machine) and warm (every later run). Every
case gets a fresh NUMBA_CACHE_DIR (the warm one the cold one's), so no earlier run helps; the
time excludes `import umap` (pynndescent compiles its own cached functions at import, once).
Rows: Gaussian blobs (compile time does not depend on the values); 6,000 is above umap-learn's
4,096-row threshold for its approximate neighbour search.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import REPO, machine, write_results

PROBE = """
import json, sys, time
import numpy as np
import umap  # noqa: F401  (its import is not what is measured)
from embedding_assets.analytics import compiled_cache, projection
if sys.argv[2] == "shipped":
    compiled_cache.keep_umap_compiled = lambda: 0
n = int(sys.argv[1])
rng = np.random.default_rng(0)
centres = rng.normal(scale=4.0, size=(10, 128))
x = (centres[rng.integers(0, 10, n)] + rng.normal(size=(n, 128))).astype(np.float32)
start = time.perf_counter()
made = projection.project(x, "umap", projection.ProjectionParams())
fitted = time.perf_counter()
made.placer.place(x[:30] + 0.1)
print(json.dumps({"fit_s": fitted - start, "place_s": time.perf_counter() - fitted}))
"""
CASES = ("shipped", "cold", "warm")


def run_case(n: int, case: str, cache_dir: Path) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(n), case],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 6000])
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as shipped_dir, tempfile.TemporaryDirectory() as kept:
            for case in CASES:
                found = run_case(n, case, Path(shipped_dir if case == "shipped" else kept))
                rows.append({"rows": n, "case": case, **found})
                print(rows[-1], flush=True)
    table = "\n".join(
        f"| {r['rows']:,} | {r['case']} | {r['fit_s']:.1f} | {r['place_s']:.1f} | "
        f"{r['fit_s'] + r['place_s']:.1f} |"
        for r in rows
    )
    total = {(r["rows"], r["case"]): r["fit_s"] + r["place_s"] for r in rows}
    ratios = "\n".join(
        f"- {n:,} rows: a later run (warm) / numba as shipped = "
        f"**{total[n, 'warm'] / total[n, 'shipped']:.2f}**; the first run (cold) / shipped = "
        f"{total[n, 'cold'] / total[n, 'shipped']:.2f}"
        for n in args.sizes
    )
    md = f"""# A UMAP map in a fresh process: numba's disk cache for umap-learn

`projection.project(x, "umap")` and placing 30 new rows on the map, each case in a fresh
interpreter as every `emb run` is; {machine()["cpus"]} CPUs, one run per case, side by side.
shipped: umap-learn compiles its numba functions in every process; cold: the disk cache
switched on (`analytics/compiled_cache.py`), first run on the machine; warm: every later run.

| rows | case | map s | place s | total s |
|---:|---|---:|---:|---:|
{table}

{ratios}
"""
    write_results("projection_compile", {"machine": machine(), "rows": rows}, md)


if __name__ == "__main__":
    main()
