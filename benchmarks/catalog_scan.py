"""Cold catalog scan vs a no-op re-run on CIFAR-10 test (10,000 JPEGs), side by side.

    python benchmarks/catalog_scan.py [--repeats 5]

Goal (issue 2): cold / no-op >= 20. The cold scan hashes and fully decodes every file; the
no-op re-run only stats files and compares with what DuckDB already holds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine, require_cifar, write_results
from embedding_assets.catalog.scan import scan_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    folder = require_cifar()
    colds, noops = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "catalog.duckdb"
            t = time.perf_counter()
            cold = scan_catalog(db, folder)
            colds.append(time.perf_counter() - t)
            t = time.perf_counter()
            noop = scan_catalog(db, folder)
            noops.append(time.perf_counter() - t)
            assert noop.probed == 0 and noop.unchanged == cold.found
    n = cold.found
    cold_s, noop_s = statistics.median(colds), statistics.median(noops)
    ratio = cold_s / noop_s
    md = f"""# Catalog scan: cold vs no-op re-run

{n:,} CIFAR-10 test JPEGs, {machine()["cpus"]} CPUs, median of {args.repeats} runs
(OS page cache warm).

| run | seconds | images/s |
|---|---:|---:|
| cold scan (hash + full decode + DuckDB insert) | {cold_s:.3f} | {n / cold_s:,.0f} |
| no-op re-run (stat + compare + touch last_seen) | {noop_s:.3f} | {n / noop_s:,.0f} |

**cold / no-op = {ratio:.1f}x** (goal >= 20x: {"met" if ratio >= 20 else "NOT met"})
"""
    write_results(
        "catalog_scan",
        {"images": n, "cold_s": colds, "noop_s": noops, "ratio_median": ratio},
        md,
    )


if __name__ == "__main__":
    main()
