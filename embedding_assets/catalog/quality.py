"""Cheap per-image quality statistics, measured inside the catalog's decode (no second read);
the flags over them are curation's (`curation.image_quality`).

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
# The measures stored per image in the catalog's quality-measures table.
QUALITY_COLUMNS = ("blur", "brightness", "contrast", "entropy", "shadow", "highlight")


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
