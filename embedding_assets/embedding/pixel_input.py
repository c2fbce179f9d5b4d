"""The model's input layer for inference: uint8 pixels, channels last, in; the backbone's
features out. Scaling to [0, 1], normalizing and transposing run once per batch inside the
model (and inside the exported ONNX graph), not once per image in the decoding workers, which
share the CPU with the forward pass (benchmarks/embed_throughput.py). On a GPU the batch also
travels as uint8, a quarter of the float bytes, and arrives in channels_last order.
"""

from __future__ import annotations

import torch
from torch import nn


class Pixels(nn.Module):
    """(n, h, w, 3) uint8 in: `model((x / 255 - mean) / std)` on (n, 3, h, w), the features of
    the preprocessing's float input to within float rounding (one multiply-add per value)."""

    takes_pixels = True

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -mean_t / std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2).float()
        return self.model(x * self.scale + self.shift)


def on_pixels(model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> nn.Module:
    """`model` behind the pixel input layer, unless it takes pixels already (an ONNX export)."""
    return model if getattr(model, "takes_pixels", False) else Pixels(model, mean, std).eval()
