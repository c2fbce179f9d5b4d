"""torchvision backbones by name, with weights from nowhere, a name, or a local file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2

from embedding_assets.embedding.backbones import (
    WeightsUnavailableError,
    build_backbone,
    resolve_spec,
    weights_cache_path,
)
from embedding_assets.embedding.embedder import EmbedParams


@pytest.mark.parametrize(
    "name,size,dim",
    [
        ("resnet18", 64, 512),
        ("resnet50", 64, 2048),
        ("efficientnet_v2_s", 64, 1280),
        ("mobilenet_v3_large", 64, 1280),
        ("densenet121", 64, 1024),
        ("vit_b_16", 224, 768),
        ("swin_t", 64, 768),
    ],
)
def test_head_removed_exposes_pooled_features(name: str, size: int, dim: int):
    backbone = build_backbone(resolve_spec(name, None, size))
    assert backbone.dim == dim
    with torch.inference_mode():
        out = backbone.model(torch.randn(2, 3, size, size))
    assert out.shape == (2, dim)


def test_random_init_is_the_same_in_every_process():
    a = build_backbone(resolve_spec("resnet18", None, 32)).model.state_dict()
    b = build_backbone(resolve_spec("resnet18", None, 32)).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_offline_weights_name_says_which_file_to_place(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = resolve_spec("resnet18", "IMAGENET1K_V1", 224)
    assert spec.weights_id == "ResNet18_Weights.IMAGENET1K_V1"
    assert spec.preprocess.resize == 256 and spec.preprocess.crop == 224
    with pytest.raises(WeightsUnavailableError) as err:
        build_backbone(spec, allow_download=False)
    enum = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    assert str(weights_cache_path(enum)) in str(err.value)
    assert enum.url in str(err.value)


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="resnet18"):
        resolve_spec("resnet19")
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        resolve_spec("resnet18", "IMAGENET_V9")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_spec("resnet18", str(Path("/nonexistent/w.pth")))
    with pytest.raises(ValueError, match="image_size=224"):
        build_backbone(resolve_spec("vit_b_16", None, 64))


def test_local_weights_file_is_loaded_and_keyed_by_content(tmp_path: Path):
    torch.manual_seed(123)
    trained = torchvision.models.resnet18(num_classes=7)  # a fine-tuned head of another size
    path = tmp_path / "mine.pth"
    torch.save(trained.state_dict(), path)
    backbone = build_backbone(resolve_spec("resnet18", str(path), 32))
    assert torch.equal(backbone.model.conv1.weight, trained.conv1.weight)
    key = EmbedParams("resnet18", str(path), 32).model_key()
    assert key != EmbedParams("resnet18", None, 32).model_key()
    torch.save({"state_dict": torchvision.models.resnet18().state_dict()}, path)
    assert EmbedParams("resnet18", str(path), 32).model_key() != key, "new content, new key"


def test_bad_weights_files_are_explained(tmp_path: Path):
    other = tmp_path / "other.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), other)
    with pytest.raises(ValueError, match="another architecture"):
        build_backbone(resolve_spec("resnet18", str(other), 32))
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch state dict"):
        build_backbone(resolve_spec("resnet18", str(junk), 32))


@pytest.mark.parametrize(
    ("model", "weights", "size", "center_crop"),
    [
        ("efficientnet_lite0", "DEFAULT", 0, True),  # bicubic on the PIL image, 256 -> 224
        ("efficientnet_lite0", "DEFAULT", 160, False),  # a fine-tuned trunk's: no centre crop
        ("resnet18", None, 64, True),  # bilinear on the uint8 tensor
    ],
)
@pytest.mark.parametrize("shape", [(32, 32), (47, 33), (375, 500), (20, 300)])
def test_pixels_are_the_geometry_of_the_preprocessing(model, weights, size, center_crop, shape):
    """The decoding workers' uint8 pixels are exactly the resized, cropped image of
    `Preprocess.geometry()` (which training uses), channels last: the model key's vectors."""
    pre = resolve_spec(model, weights, size, center_crop).preprocess
    rng = np.random.default_rng(sum(shape))
    image = Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    expected = v2.Compose(pre.geometry())(image).permute(1, 2, 0).numpy()
    got = pre.pixels()(image)
    assert got.dtype == np.uint8 and got.shape == (pre.crop, pre.crop, 3)
    assert np.array_equal(got, expected)
