"""Image quality statistics and flags: generated images, plus real CIFAR-10 images with
injected blur / darkening when ../shared is present."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from embedding_assets.catalog.quality import QualityStats, quality_stats
from embedding_assets.curation.image_quality import FLAGS, QualityThresholds, assess, quality_flags


def textured(size=(64, 64), seed=0, level=128, spread=60) -> np.ndarray:
    """Blocky random texture: sharp edges, mid brightness, many grey levels."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    blocks = rng.normal(level, spread, size=(h // 4 + 1, w // 4 + 1, 3))
    arr = np.repeat(np.repeat(blocks, 4, axis=0), 4, axis=1)[:h, :w]
    return np.clip(arr, 0, 255).astype(np.uint8)


def jpeg(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def test_clean_textured_image_raises_no_flag():
    flags = assess(Image.fromarray(textured()))
    assert not any(flags[f] for f in FLAGS), flags


def test_each_fault_raises_its_flag():
    img = Image.fromarray(textured())
    assert assess(img.filter(ImageFilter.GaussianBlur(3)))["blurry"]
    dark = assess(ImageEnhance.Brightness(img).enhance(0.2))
    assert dark["too_dark"] and not dark["too_bright"]
    bright = assess(Image.fromarray(np.full((64, 64, 3), 240, np.uint8)))
    assert bright["too_bright"] and bright["low_information"]
    assert assess(Image.fromarray(textured((16, 16))))["odd_size"]
    assert assess(Image.fromarray(textured((400, 40))))["odd_aspect"]
    assert not assess(Image.fromarray(textured((400, 40))))["odd_size"]


def test_numpy_and_pil_agree_and_stats_are_sane():
    arr = textured(seed=3)
    a, b = quality_stats(arr), quality_stats(Image.fromarray(arr))
    assert a == b
    assert (a.width, a.height) == (64, 64)
    assert 0 < a.entropy <= 8 and a.shadow <= a.brightness <= a.highlight
    gray = np.asarray(Image.fromarray(arr).convert("L"), dtype=np.float64)
    assert a.brightness == pytest.approx(gray.mean(), rel=1e-5)
    assert a.contrast == pytest.approx(gray.std(), rel=1e-4)


def test_blur_is_size_independent_for_large_images():
    # A photo-like scene: detail at a few pixels' scale at analysis size, not at Nyquist.
    scene = Image.fromarray(textured((256, 192), seed=4, spread=40)).resize(
        (1024, 768), Image.Resampling.BICUBIC
    )
    big = scene.resize((2048, 1536), Image.Resampling.NEAREST)  # same content, 4x the pixels
    a, b = quality_stats(scene), quality_stats(big)
    assert a.blur == pytest.approx(b.blur, rel=0.05)
    assert (b.width, b.height) == (2048, 1536)
    odd = scene.resize((1500, 1125), Image.Resampling.LANCZOS)  # non-integer factor
    assert quality_stats(odd).blur == pytest.approx(a.blur, rel=0.15)
    soft = big.filter(ImageFilter.GaussianBlur(12))
    assert quality_stats(soft).blur < 0.2 * b.blur


def test_other_modes_and_thresholds():
    rng = np.random.default_rng(5)
    img16 = Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16))
    s = quality_stats(img16)
    assert 100 < s.brightness < 155 and s.blur > 100
    quality_stats(Image.fromarray(textured()).convert("P"))
    quality_stats(Image.fromarray(np.zeros((1, 1), np.uint8)))
    strict = QualityThresholds(sharpness_below=1e12)
    assert quality_flags(s, strict)["blurry"]
    older = QualityStats(**{**s.as_dict(), "sharpness": float("nan")})  # an older catalog's row
    assert quality_flags(older, QualityThresholds(blur_below=1e12))["blurry"]
    with pytest.raises(ValueError):
        quality_stats(np.zeros((8, 8), np.float32))


def test_real_cifar_faults_are_flagged_and_clean_mostly_not(cifar_dir):
    files = sorted(cifar_dir.glob("*/*.jpg"))[::100]  # 100 images over all classes
    images = [Image.open(p).convert("RGB") for p in files]
    clean = [assess(im) for im in images]
    assert sum(f["blurry"] or f["too_dark"] for f in clean) <= 3
    blurred = [assess(jpeg(im.filter(ImageFilter.GaussianBlur(2)))) for im in images[:40]]
    darkened = [assess(jpeg(ImageEnhance.Brightness(im).enhance(0.3))) for im in images[40:80]]
    assert sum(f["blurry"] for f in blurred) >= 38
    assert sum(f["too_dark"] for f in darkened) >= 38
    # the small-image case: a 1.5 px blur of a 32 px photo (the variance of the Laplacian
    # missed many of these), judged by the size-normalised sharpness
    softer = [assess(jpeg(im.filter(ImageFilter.GaussianBlur(1.5)))) for im in images[:40]]
    assert sum(f["blurry"] for f in softer) >= 36
    grey = [assess(im.convert("L").convert("RGB")) for im in images[:20]]
    assert all(f["grayscale"] for f in grey)
    assert sum(f["grayscale"] for f in clean) <= 3  # CIFAR-10 holds a few grey photos
