"""A small image folder for the end-to-end tests: real digits, part labeled by folder.

Small enough that materializing every asset with the UI's defaults takes well under a minute
on a 2-core CPU, while every asset still has enough rows to do its job.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from tests.dagster_server import REPO

N_IMAGES = 200
LABELED_FRACTION = 0.5


def write_small_digits(
    folder: Path, n: int = N_IMAGES, labeled_fraction: float = LABELED_FRACTION, size: int = 32
) -> list[tuple[Path, str]]:
    """Write `n` digits as grey PNGs (labeled ones under `<digit>/`, the rest under
    `unlabeled/`); return the unlabeled images with their true digit."""
    digits = load_digits()
    rng = np.random.default_rng(0)
    labeled = rng.random(n) < labeled_fraction
    hidden = []
    for i in range(n):
        target = str(digits.target[i])
        path = folder / (target if labeled[i] else "unlabeled") / f"digit_{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grey = (digits.images[i] * (255 / 16)).astype(np.uint8)
        Image.fromarray(grey).resize((size, size), Image.Resampling.BILINEAR).save(path)
        if not labeled[i]:
            hidden.append((path.resolve(), target))
    return hidden


def emb(env: dict[str, str], *args: str) -> str:
    """Run the `emb` CLI as a user would, in the same environment as the server."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "emb"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"emb {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def import_labels(env: dict[str, str], rows: list[tuple[Path, str]], csv_path: Path) -> int:
    """`emb label import` a CSV of (path, label); return the highest label_id afterwards."""
    csv_path.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    out = emb(env, "label", "import", str(csv_path))
    assert f"{len(rows)} label(s) added" in out, out
    out = emb(env, "sql", "select max(label_id) as hi from labels", "--format", "csv")
    return int(out.strip().splitlines()[-1])
