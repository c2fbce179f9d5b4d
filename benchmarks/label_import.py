"""`emb label import` on a large label file: peak memory of the process against the file's size,
and wall time, in a fresh process per run (issue 37: a 29 MB file of 3 million rows peaked at
3.2 GB, 110 times the file). The goal: at most 10 times the file or 500 MB, whichever is larger.

    .venv/bin/python -m benchmarks.label_import [--rows 3000000] [--images 500] [--ref id|path]
        [--baseline DIR]

The catalog holds `--images` small PNGs; the file labels them round-robin by id (or by path),
one bad row in a thousand (an unknown id) so the rejected ones are reported too. `--baseline`
names a checkout of another commit (`git worktree add /tmp/base COMMIT`): the same file is
imported with its code first, into a copy of the same catalog, side by side."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import REPO, write_results

GOAL_FACTOR, GOAL_FLOOR_MB = 10, 500
MEASURE = """
import resource, sys, time
from pathlib import Path
from embedding_assets.catalog.labels import import_csv
start = time.perf_counter()
result = import_csv(Path(sys.argv[1]), Path(sys.argv[2]))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(result.inserted, len(result.rejected), round(seconds, 2), round(peak, 1))
"""


def build(tmp: Path, images: int, rows: int, ref: str) -> tuple[Path, Path]:
    import numpy as np
    from PIL import Image

    from embedding_assets.catalog.scan import scan_catalog
    from resources.duckdb_store import connect
    from resources.paths import DataPaths

    folder = tmp / "images"
    folder.mkdir()
    for i in range(images):
        pixels = np.full((8, 8, 3), i % 256, dtype=np.uint8)
        pixels[0, 0] = (i // 256) % 256, i % 7, 1
        Image.fromarray(pixels).save(folder / f"{i:06d}.png")
    db = DataPaths(tmp / "data").catalog_db
    scan_catalog(db, folder)
    with connect(db, read_only=True) as con:
        known = con.execute("SELECT image_id, path FROM images ORDER BY 1").fetchall()
    csv = tmp / "labels.csv"
    with csv.open("w") as fh:
        fh.write("image_id,label\n" if ref == "id" else "path,label\n")
        for r in range(rows):
            image_id, path = known[r % len(known)]
            key = str(image_id) if ref == "id" else path
            if r % 1000 == 999:
                key = str(10**9 + r) if ref == "id" else f"{folder}/missing_{r}.png"
            fh.write(f"{key},class_{r % 10}\n")
    return db, csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--ref", choices=("id", "path"), default="id")
    parser.add_argument("--baseline", help="a checkout of another commit, run first")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        db, csv = build(tmp, args.images, args.rows, args.ref)
        size_mb = csv.stat().st_size / 2**20
        goal_mb = max(GOAL_FACTOR * size_mb, GOAL_FLOOR_MB)
        code = [("baseline", args.baseline)] if args.baseline else []
        for which, checkout in [*code, ("this checkout", None)]:
            fresh = tmp / f"data-{len(runs)}"
            shutil.copytree(db.parent, fresh)  # the same catalog, no label yet
            runs.append(_measure(which, checkout, fresh / db.name, csv, size_mb, goal_mb))
    header = (
        "| code | rows | file MB | inserted | rejected | import s | peak MB | peak / file "
        "| goal MB | met |"
    )
    lines = [
        "# `emb label import` on a large file",
        "",
        f"A fresh process per import ({args.images} catalog images, labeled round-robin by "
        f"{args.ref}; one row in 1,000 names an unknown image). Goal: peak memory at most "
        f"{GOAL_FACTOR}x the file or {GOAL_FLOOR_MB} MB, whichever is larger.",
        "",
        header,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *[
            f"| {r['code']} | {args.rows:,} | {size_mb:.1f} | {r['inserted']:,} "
            f"| {r['rejected']:,} | {r['import_seconds']} | {r['peak_mb']:.0f} "
            f"| {r['peak_mb'] / size_mb:.1f}x | {goal_mb:.0f} | {'yes' if r['met'] else 'no'} |"
            for r in runs
        ],
    ]
    if len(runs) == 2:
        before, after = runs
        lines += [
            "",
            f"This checkout against the baseline: {before['peak_mb'] / after['peak_mb']:.1f}x "
            f"less peak memory, {before['import_seconds'] / after['import_seconds']:.1f}x "
            "faster.",
        ]
    payload = {"rows": args.rows, "ref": args.ref, "file_mb": round(size_mb, 1), "runs": runs}
    write_results(f"label_import_{args.ref}", payload, "\n".join(lines))


def _commit(root: Path) -> str:
    found = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return found.stdout.strip() or "?"


def _measure(
    which: str, checkout: str | None, db: Path, csv: Path, size_mb: float, goal_mb: float
) -> dict:
    """One import in a fresh process, with the code of `checkout` (None: this one)."""
    root = Path(checkout).resolve() if checkout else REPO
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    out = subprocess.run(  # `python -c` puts the working directory first on sys.path
        [sys.executable, "-c", MEASURE, str(db), str(csv)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=root,
    )
    inserted, rejected, seconds, peak_mb = out.stdout.strip().splitlines()[-1].split()
    return {
        "code": f"{which} ({_commit(root)})",
        "inserted": int(inserted),
        "rejected": int(rejected),
        "import_seconds": float(seconds),
        "peak_mb": float(peak_mb),
        "met": float(peak_mb) <= goal_mb,
    }


if __name__ == "__main__":
    main()
