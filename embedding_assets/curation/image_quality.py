"""Quality flags over the measures the catalog took while decoding each image
(`catalog.quality`): blurry, too dark, too bright, low information, grey, odd size or aspect."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from embedding_assets.catalog.quality import QualityStats, quality_stats


@dataclass(frozen=True)
class QualityThresholds:
    """Defaults, and why (checked on CIFAR-10 in benchmarks/curation.py, not fit per run):

    sharpness_below=0.12: `blurry` reads the sharpness, var(Laplacian) / var(grey) on a fixed
        64 px resample (natively when smaller), so neither exposure nor resolution moves it.
        On 1,000 CIFAR-10 test photos (32 px): clean ones have 0.146 at their 0.5th
        percentile, Gaussian blurs of r = 2 / 1.5 / 1 px have 0.085 / 0.144 / 0.43 at their
        99.5th (medians 0.015 / 0.031 / 0.10): one cut for every size, measured here on 32 px
        photos only (no larger real photos are at hand).
    blur_below=100: the customary variance-of-Laplacian cut-off, for rows of older catalogs
        measured before the sharpness existed.
    grayscale_chroma_below=3: `grayscale` when the 99th percentile of max(RGB) - min(RGB) is
        below 3 levels (JPEG noise): a grey image, or a colour photo stored as grey.
    dark_highlight_below=100 / dark_mean_below=30: underexposed means even the brightest 1 % of
        pixels stays below mid-grey, or the mean is nearly black. Judging by highlights rather
        than the mean keeps naturally dark scenes with bright parts (night shots, black
        backgrounds) unflagged: on CIFAR-10 the mean alone cannot separate a 0.3x exposure from
        naturally dark images, the highlights can.
    bright_shadow_above=155 / bright_mean_above=225: the mirror image (overexposed: even the
        darkest 1 % is light, or the mean is nearly white).
    entropy_below=3.0 bits or contrast_below=8: (nearly) flat images, few grey levels in use.
    min_side=32, max_side=20000 (odd_size): thumbnails, icons, giant scans; max_aspect=4
        (odd_aspect): strips and panoramas.
    """

    sharpness_below: float = 0.12
    blur_below: float = 100.0
    grayscale_chroma_below: float = 3.0
    dark_highlight_below: float = 100.0
    dark_mean_below: float = 30.0
    bright_shadow_above: float = 155.0
    bright_mean_above: float = 225.0
    entropy_below: float = 3.0
    contrast_below: float = 8.0
    min_side: int = 32
    max_side: int = 20000
    max_aspect: float = 4.0


FLAGS = (
    "blurry",
    "too_dark",
    "too_bright",
    "low_information",
    "grayscale",
    "odd_size",
    "odd_aspect",
)


def quality_flags(
    stats: QualityStats, thresholds: QualityThresholds = QualityThresholds()
) -> dict[str, bool]:
    """{flag: bool} for `FLAGS`, from one image's statistics."""
    t = thresholds
    short, long = sorted((stats.width, stats.height))
    return {
        "blurry": stats.blur < t.blur_below
        if np.isnan(stats.sharpness)
        else stats.sharpness < t.sharpness_below,
        "too_dark": stats.highlight < t.dark_highlight_below
        or stats.brightness < t.dark_mean_below,
        "too_bright": stats.shadow > t.bright_shadow_above
        or stats.brightness > t.bright_mean_above,
        "low_information": stats.entropy < t.entropy_below or stats.contrast < t.contrast_below,
        "grayscale": stats.chroma < t.grayscale_chroma_below,
        "odd_size": short < t.min_side or long > t.max_side,
        "odd_aspect": short == 0 or long / short > t.max_aspect,
    }


def assess(
    image: Image.Image | np.ndarray, thresholds: QualityThresholds = QualityThresholds()
) -> dict:
    """Statistics and flags of one image as one flat dict (a catalog row's quality columns)."""
    stats = quality_stats(image)
    return {**stats.as_dict(), **quality_flags(stats, thresholds)}
