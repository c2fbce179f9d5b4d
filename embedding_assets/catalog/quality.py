"""Cheap per-image quality statistics and perceptual hashes, measured inside the catalog's
decode (no second read); the flags over them are curation's (`curation.image_quality`) and so
is near-duplicate search over the hashes (`curation.duplicates`).

Images larger than `ANALYSIS_SIDE` on their long side are first area-downscaled to it (one
resize shared by every measure). Exposure and information are on the grayscale image (ITU-R
601 luma, as PIL's "L"), 0..255:

- brightness: mean; contrast: standard deviation; entropy: Shannon entropy (bits, 0..8) of the
  256-bin histogram; shadow / highlight: the 1st / 99th percentiles.
- blur: variance of the 4-neighbour Laplacian at the analysis size (kept for older catalogs and
  SQL users; its scale depends on the image's size and contrast).
- sharpness: var(Laplacian) / var(grey) on a fixed-size resample (long side `SHARPNESS_SIDE`,
  natively when smaller). Dividing by the grey variance makes it independent of exposure and
  contrast (a darkened photo is not blurrier), and the fixed side makes it independent of
  resolution: natural images have roughly scale-invariant statistics, so a sharp 32 px photo
  and a sharp 4000 px one score alike, and a blur is judged at the scale a viewer sees the
  whole image. What the `blurry` flag reads.
- colourfulness: Hasler & Suesstrunk (2003) on RGB (0 for grey images): the spread and mean of
  the opponent channels R-G and (R+G)/2-B. chroma: the 99th percentile of max(R,G,B) -
  min(R,G,B); a colour photo stored as grey has near zero (JPEG noise of a few levels).
- phash / dhash: 64-bit perceptual hashes as imagehash computes them (pHash: the signs of the
  8 x 8 lowest DCT frequencies of a 32 x 32 grey resample against their median; dHash: whether
  each pixel of a 9 x 8 grey resample is brighter than its right neighbour). Resizing and
  recompression move few bits. Stored as two unsigned 32-bit halves (`*_hi`, `*_lo`): the
  catalog writes every measure as a double, exact only up to 2^53.

Cost: for large images one area-averaging resize, then a few small resizes and vectorised numpy
passes over at most 256 x 256 pixels: well under a millisecond for a 32 px image, ~40 ms for a
24 MP photo (whose decode costs several times that).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

ANALYSIS_SIDE = 256
SHARPNESS_SIDE = 64
HASH_BITS = 64
# The measures stored per image in the catalog's quality-measures table, in its column order
# (resources/ddl/110_curation.sql, then 140_curation_peers.sql).
QUALITY_COLUMNS = (
    "blur",
    "brightness",
    "contrast",
    "entropy",
    "shadow",
    "highlight",
    "sharpness",
    "colourfulness",
    "chroma",
    "phash_hi",
    "phash_lo",
    "dhash_hi",
    "dhash_lo",
)
# Measured since issue 25: a row without them (an older catalog) is measured again.
NEWER_COLUMNS = QUALITY_COLUMNS[6:]


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
    sharpness: float = float("nan")
    colourfulness: float = 0.0
    chroma: float = 0.0
    phash_hi: int = 0
    phash_lo: int = 0
    dhash_hi: int = 0
    dhash_lo: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def phash(self) -> int:
        return join_hash(self.phash_hi, self.phash_lo)

    @property
    def dhash(self) -> int:
        return join_hash(self.dhash_hi, self.dhash_lo)


def join_hash(hi: int | float, lo: int | float) -> int:
    """The 64-bit hash from its stored halves."""
    return (int(hi) << 32) | int(lo)


def _analysis_image(image: Image.Image | np.ndarray) -> tuple[Image.Image, int, int]:
    """(PIL image in mode L or RGB at most ANALYSIS_SIDE on its long side, width, height)."""
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise ValueError(f"expected (h, w), (h, w, 3) or (h, w, 4) pixels, got {arr.shape}")
        if arr.dtype != np.uint8:
            raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
        image = Image.fromarray(np.ascontiguousarray(arr))
    w, h = image.size
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(image, dtype=np.float32)
        scale = 257.0 if (mode.startswith("I;16") or a.max(initial=0) > 255) else 1.0
        image = Image.fromarray(np.clip(a / scale, 0, 255).astype(np.uint8))
    elif mode in ("LA", "La"):
        image = image.convert("L")
    elif mode not in ("RGB", "RGBA", "RGBX", "L"):
        image = image.convert("RGB")  # palette, CMYK, YCbCr...: colour kept, resizable
    if max(w, h) > ANALYSIS_SIDE:
        # Area averaging (BOX): scale-consistent for any factor, unlike BILINEAR, and on the
        # original channels, since converting 24 MP first costs ~90 ms.
        f = ANALYSIS_SIDE / max(w, h)
        image = image.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BOX)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    return image, w, h


def _laplacian_var(g: np.ndarray) -> float:
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def _sharpness(grey: Image.Image) -> float:
    w, h = grey.size
    if max(w, h) > SHARPNESS_SIDE:
        f = SHARPNESS_SIDE / max(w, h)
        grey = grey.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BOX)
    g = np.asarray(grey, dtype=np.float64)
    var = float(g.var()) if g.size else 0.0
    return _laplacian_var(g) / var if var > 1e-6 else 0.0


def _colour(rgb: np.ndarray) -> tuple[float, float]:
    """(Hasler-Suesstrunk colourfulness, 99th percentile of the per-pixel chroma)."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    colourful = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(abs(rg.mean()), abs(yb.mean())))
    chroma = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2)
    return colourful, float(np.percentile(chroma, 99))


@lru_cache(maxsize=1)
def _dct_matrix(n: int = 32) -> np.ndarray:
    """The DCT-II basis (unnormalised, as scipy.fftpack.dct; the scale cancels in the median)."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    return np.cos(np.pi * k * (2 * i + 1) / (2 * n))


def _bits(mask: np.ndarray) -> int:
    """64 booleans, first = most significant bit (imagehash's hex order), as an int."""
    return int(np.packbits(mask.ravel()).view(">u8")[0])


def perceptual_hashes(grey: Image.Image) -> tuple[int, int]:
    """(pHash, dHash) of a grey image, 64 bits each, as imagehash.phash / dhash compute them."""
    small = np.asarray(grey.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    d = _dct_matrix()
    low = (d @ small @ d.T)[:8, :8]
    phash = _bits(low > np.median(low))
    tiny = np.asarray(grey.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.float64)
    dhash = _bits(tiny[:, 1:] > tiny[:, :-1])
    return phash, dhash


def quality_stats(image: Image.Image | np.ndarray) -> QualityStats:
    """Exposure, information, blur, colour and perceptual hashes of one decoded image (PIL image
    of any mode, or uint8 array (h, w[, 3|4]))."""
    im, w, h = _analysis_image(image)
    grey = im if im.mode == "L" else im.convert("L")
    g = np.asarray(grey, dtype=np.float32)
    if g.size == 0:
        return QualityStats(w, h, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    hist = np.bincount(g.astype(np.uint8).ravel(), minlength=256)
    p = hist[hist > 0] / g.size
    entropy = float(-(p * np.log2(p)).sum())
    cdf = np.cumsum(hist) / g.size
    colourful, chroma = _colour(np.asarray(im)) if im.mode == "RGB" else (0.0, 0.0)
    phash, dhash = perceptual_hashes(grey)
    return QualityStats(
        w,
        h,
        blur=_laplacian_var(g),
        brightness=float(g.mean()),
        contrast=float(g.std()),
        entropy=max(entropy, 0.0),
        shadow=float(np.searchsorted(cdf, 0.01)),
        highlight=float(np.searchsorted(cdf, 0.99)),
        sharpness=_sharpness(grey),
        colourfulness=colourful,
        chroma=chroma,
        phash_hi=phash >> 32,
        phash_lo=phash & 0xFFFFFFFF,
        dhash_hi=dhash >> 32,
        dhash_lo=dhash & 0xFFFFFFFF,
    )
