"""A demo image set from real data that scikit-learn ships: the 1,797 handwritten digits.

Written as PNG files, one folder per class for a labeled part and `unlabeled/` for the rest,
plus two deliberately bad files so the demo shows how bad input is reported. The true labels of
the unlabeled part go to `ground_truth.csv`, so the active-learning loop can be played out.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def write_demo_images(
    folder: Path, labeled_fraction: float = 0.3, size: int = 32, seed: int = 0
) -> dict[str, int]:
    """Write the digits as `size`-pixel grey PNGs; idempotent (existing files are kept)."""
    digits = load_digits()
    rng = np.random.default_rng(seed)
    labeled = rng.random(len(digits.target)) < labeled_fraction
    folder.mkdir(parents=True, exist_ok=True)
    truth_rows = []
    for i, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        sub = str(target) if labeled[i] else "unlabeled"
        path = folder / sub / f"digit_{i:04d}.png"
        if not labeled[i]:
            truth_rows.append((str(path.resolve()), str(target)))
        if path.exists():
            continue
        path.parent.mkdir(exist_ok=True)
        grey = (pixels * (255 / 16)).astype(np.uint8)
        Image.fromarray(grey).resize((size, size), Image.Resampling.BILINEAR).save(path)
    _write_bad_examples(folder / "unlabeled")
    with open(folder / "ground_truth.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows(truth_rows)
    return {"images": len(digits.target), "labeled": int(labeled.sum()), "bad": 2}


def _write_bad_examples(folder: Path) -> None:
    good = folder.parent / "0"
    sample = next(iter(sorted(good.glob("*.png"))), None)
    if sample is not None:
        _write_if_changed(folder / "truncated_scan.png", sample.read_bytes()[:60])
    _write_if_changed(folder / "notes_not_an_image.png", b"this is a text file with a .png name\n")


def _write_if_changed(path: Path, data: bytes) -> None:
    """Leave a file with this content alone: a rewrite changes its time, and the next scan
    would hash and decode it again."""
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)
