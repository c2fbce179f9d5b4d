"""Describe each found file: hash, size, pixels, mode, format, status, and the quality
measures of the decoded pixels (taken here, so no file is read twice).

Plain Python, no Dagster. A bad file never raises out of here: it comes back as a record with
status `corrupt`, `unsupported` or `unreadable` and an error that says what to do.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image, UnidentifiedImageError

from embedding_assets.catalog import object_store
from embedding_assets.catalog.files import KNOWN_UNSUPPORTED_EXTENSIONS, FoundFile
from embedding_assets.catalog.quality import QualityStats, quality_stats

SUPPORTED_FORMATS = {"PNG", "JPEG", "MPO", "TIFF", "WEBP", "BMP", "GIF"}
DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own decompression-bomb threshold
EXIF_ORIENTATION = 0x0112
# EXIF orientations that turn the image a quarter (ImageOps.exif_transpose swaps its sides).
QUARTER_TURNS = {5, 6, 7, 8}


def max_object_bytes(max_pixels: int) -> int:
    """The most bytes an image of `max_pixels` can take (uncompressed 16-bit RGBA, plus room
    for headers and metadata): an object in storage over it is refused before it is fetched."""
    return max_pixels * 8 + 65_536


@dataclass
class Probe:
    """What reading a file told us."""

    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    format: str | None = None
    status: str = "ok"
    error: str | None = None
    extra: dict = field(default_factory=dict)
    quality: QualityStats | None = None  # measured on the decoded pixels (curation)


def probe(found: FoundFile, max_pixels: int = DEFAULT_MAX_PIXELS) -> Probe:
    """Hash and fully decode one file; classify it, never raise."""
    if found.error is not None:
        hint = "fix or remove the file (a broken or looping symlink, a device or a pipe)"
        return Probe(status="unreadable", error=f"{found.error}; {hint}")
    ext = os.path.splitext(found.path)[1].lower()
    limit = max_object_bytes(max_pixels)
    if object_store.is_url(found.path) and found.size is not None and found.size > limit:
        return Probe(  # not fetched: the one read would hold it all in memory
            status="unsupported",
            error=f"object of {found.size:,} bytes, over the {limit:,} an image of "
            "max_image_pixels can take; raise max_image_pixels in the image_catalog config if "
            "it is an image",
        )
    try:
        if object_store.is_url(found.path):  # one read of the object: hash and decode its bytes
            data = object_store.read_bytes(found.path)
            digest, source = hashlib.sha256(data).hexdigest(), io.BytesIO(data)
        else:
            with open(found.fs_path, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
            source = found.fs_path
    except OSError as exc:
        return Probe(
            status="unreadable",
            error=f"cannot read: {exc.strerror or exc}; check the file's permissions",
        )
    result = Probe(sha256=digest)
    if found.size == 0:
        result.status, result.error = "corrupt", "empty file (0 bytes); re-copy or remove it"
        return result
    if ext in KNOWN_UNSUPPORTED_EXTENSIONS:
        result.status = "unsupported"
        result.error = f"{ext} images are not supported; convert to PNG, JPEG, TIFF or WebP"
        return result
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                result.width, result.height = im.size
                result.mode, result.format = im.mode, im.format
                pixels = im.size[0] * im.size[1]
                if pixels > max_pixels:
                    result.status = "unsupported"
                    result.error = (
                        f"{im.size[0]}x{im.size[1]} = {pixels:,} pixels exceeds max_image_pixels="
                        f"{max_pixels:,} (decompression-bomb guard); raise max_image_pixels in "
                        "the image_catalog config if you trust this file"
                    )
                    return result
                if im.format not in SUPPORTED_FORMATS:
                    result.status = "unsupported"
                    result.error = (
                        f"content is {im.format}, not a supported format; convert it to PNG"
                    )
                    return result
                im.seek(0)  # GIF and multi-page TIFF: the first frame is the image
                im.load()
                result.quality = _quality(im)
                if _orientation(im) in QUARTER_TURNS:  # record the size as displayed
                    result.width, result.height = result.height, result.width
    except UnidentifiedImageError:
        result.status = "corrupt"
        result.error = (
            f"not an image: Pillow cannot identify the content of this {ext} file; "
            "re-export it or remove it"
        )
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        result.status, result.error = "unsupported", f"{exc}; raise max_image_pixels to allow it"
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        result.status = "corrupt"
        result.error = f"cannot decode ({exc}); the file is truncated or damaged, re-copy it"
    return result


def _quality(im: Image.Image) -> QualityStats | None:
    """Blur, exposure and information of the pixels just decoded (no second read of the file);
    None when an odd mode defeats the measure, which must not make a good image corrupt."""
    try:
        return quality_stats(im)
    except Exception:  # noqa: BLE001 - a measure, never a reason to reject the image
        return None


def _orientation(im: Image.Image) -> int | None:
    """The EXIF Orientation tag (1-8), None when absent or unreadable."""
    try:
        return im.getexif().get(EXIF_ORIENTATION)
    except Exception:  # a damaged EXIF block must not make a decodable image corrupt
        return None


def probe_many(
    files: list[FoundFile], max_pixels: int = DEFAULT_MAX_PIXELS, workers: int | None = None
) -> list[Probe]:
    """Probe files in threads: hashing and decoding release the GIL, the disk overlaps with CPU."""
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    if len(files) < 2 * workers:
        return [probe(f, max_pixels) for f in files]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda f: probe(f, max_pixels), files, chunksize=64))
