"""Cheap per-image quality statistics and flags, meant to run inside the catalog's decode.

All statistics are on the grayscale image (ITU-R 601 luma, as PIL's "L"), 0..255. Images
larger than `ANALYSIS_SIDE` on their long side are first downscaled to it, so blur does not
depend on resolution (a sharp 4000 px photo and its 256 px thumbnail score alike); smaller
images are analysed at native size, because upsampling adds no detail and would make every
small image look blurred (tiny images are caught by the `odd_size` flag instead).

- blur: variance of the 4-neighbour Laplacian; low = few edges = blurred. Not contrast-
  normalised: on real images raw variance separated blur better than variance / contrast.
- brightness: mean; contrast: standard deviation; entropy: Shannon entropy (bits, 0..8) of the
  256-bin histogram; shadow / highlight: the 1st / 99th percentiles.

Cost: for large images one area-averaging resize, then a grayscale conversion and a few
vectorised numpy passes over at most 256 x 256 pixels: ~0.08 ms for a 32 px image, ~40 ms for
a 24 MP photo (whose decode costs several times that).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

ANALYSIS_SIDE = 256


@dataclass(frozen=True)
class QualityStats:
    width: int
    height: int
    blur: float
    brightness: float
    contrast: float
    entropy: float
    shadow: float
    highlight: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class QualityThresholds:
    """Defaults, and why (checked on CIFAR-10 in benchmarks/curation.py, not fit per run):

    blur_below=100: the customary variance-of-Laplacian cut-off for blur; clean CIFAR-10 images
        (32 px, analysed natively) stay above ~250 for 99.5 % of images, a 2 px Gaussian blur
        puts them all below ~70.
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

    blur_below: float = 100.0
    dark_highlight_below: float = 100.0
    dark_mean_below: float = 30.0
    bright_shadow_above: float = 155.0
    bright_mean_above: float = 225.0
    entropy_below: float = 3.0
    contrast_below: float = 8.0
    min_side: int = 32
    max_side: int = 20000
    max_aspect: float = 4.0


FLAGS = ("blurry", "too_dark", "too_bright", "low_information", "odd_size", "odd_aspect")


def _grayscale(image: Image.Image | np.ndarray) -> tuple[np.ndarray, int, int]:
    """(float32 grayscale 0..255 at analysis size, original width, original height)."""
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise ValueError(f"expected (h, w), (h, w, 3) or (h, w, 4) pixels, got {arr.shape}")
        h, w = arr.shape[:2]
        if arr.dtype != np.uint8:
            raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
        if max(h, w) > ANALYSIS_SIDE or arr.ndim == 3:
            image = Image.fromarray(np.ascontiguousarray(arr))
        else:
            return arr.astype(np.float32), w, h
    w, h = image.size
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(image, dtype=np.float32)
        scale = 257.0 if (mode.startswith("I;16") or a.max(initial=0) > 255) else 1.0
        image = Image.fromarray(np.clip(a / scale, 0, 255).astype(np.uint8))
    elif mode not in ("RGB", "RGBA", "RGBX", "L", "LA"):
        image = image.convert("L")  # palette, bilevel, CMYK...: resizable once grey
    if max(w, h) > ANALYSIS_SIDE:
        # Area averaging (BOX): scale-consistent blur for any factor, unlike BILINEAR, and on
        # the original channels, since converting 24 MP to grey first costs ~90 ms.
        f = ANALYSIS_SIDE / max(w, h)
        size = (max(1, round(w * f)), max(1, round(h * f)))
        image = image.resize(size, Image.Resampling.BOX)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32), w, h


def quality_stats(image: Image.Image | np.ndarray) -> QualityStats:
    """Blur, brightness, contrast, entropy, shadow and highlight of one decoded image (PIL
    image of any mode, or uint8 array (h, w[, 3|4]))."""
    g, w, h = _grayscale(image)
    if g.size == 0:
        return QualityStats(w, h, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    if g.shape[0] >= 3 and g.shape[1] >= 3:
        lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
        blur = float(lap.var())
    else:
        blur = 0.0
    hist = np.bincount(np.clip(g, 0, 255).astype(np.uint8).ravel(), minlength=256)
    p = hist[hist > 0] / g.size
    entropy = float(-(p * np.log2(p)).sum())
    cdf = np.cumsum(hist) / g.size
    shadow = float(np.searchsorted(cdf, 0.01))
    highlight = float(np.searchsorted(cdf, 0.99))
    return QualityStats(
        w, h, blur, float(g.mean()), float(g.std()), max(entropy, 0.0), shadow, highlight
    )


def quality_flags(
    stats: QualityStats, thresholds: QualityThresholds = QualityThresholds()
) -> dict[str, bool]:
    """{flag: bool} for `FLAGS`, from one image's statistics."""
    t = thresholds
    short, long = sorted((stats.width, stats.height))
    return {
        "blurry": stats.blur < t.blur_below,
        "too_dark": stats.highlight < t.dark_highlight_below
        or stats.brightness < t.dark_mean_below,
        "too_bright": stats.shadow > t.bright_shadow_above
        or stats.brightness > t.bright_mean_above,
        "low_information": stats.entropy < t.entropy_below or stats.contrast < t.contrast_below,
        "odd_size": short < t.min_side or long > t.max_side,
        "odd_aspect": short == 0 or long / short > t.max_aspect,
    }


def assess(
    image: Image.Image | np.ndarray, thresholds: QualityThresholds = QualityThresholds()
) -> dict:
    """Statistics and flags of one image as one flat dict (a catalog row's quality columns)."""
    stats = quality_stats(image)
    return {**stats.as_dict(), **quality_flags(stats, thresholds)}
