"""A backbone cut in two for fine-tuning: the early, high-resolution stages stay as pretrained
and run once per image, the rest trains.

Measured on real photos (CIFAR-10, 500 labels; benchmarks/results/embedding_quality.md): with
the stages up to output stride 8 frozen, the fine-tune was both better and several times
cheaper per epoch than training every layer. A few hundred labels cannot improve ImageNet's
edge and texture detectors, but they can overfit them; and those stages cost most of a CPU
training step, which at stride <= 8 is mostly memory traffic of large feature maps.

Known layouts: timm's EfficientNet family (EfficientNet-Lite, the default, and the other
`conv_stem` / `blocks` / `conv_head` models) and torchvision's ResNets. Any other model
fine-tunes whole, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

PROBE_SIZE = 64  # pixels of the zero image that measures each stage's output stride


@dataclass
class Split:
    """`prefix` (frozen, eval mode) then `tail` (trained) compute the trunk's features; both
    share the trunk's parameters, so saving the trunk saves the trained tail."""

    prefix: nn.Module
    tail: nn.Module
    stride: int  # the prefix's output stride


def _layout(trunk: nn.Module) -> tuple[nn.Module, list[nn.Module], nn.Module] | None:
    """(stem, stages, finish) of a known architecture, whose sequence is the trunk's forward."""
    names = {name for name, _ in trunk.named_children()}
    if {"conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool"} <= names:
        drop = float(getattr(trunk, "drop_rate", 0.0))  # timm applies it to pooled features
        finish = nn.Sequential(trunk.conv_head, trunk.bn2, trunk.global_pool, nn.Dropout(drop))
        return nn.Sequential(trunk.conv_stem, trunk.bn1), list(trunk.blocks), finish
    if {"conv1", "bn1", "relu", "maxpool", "layer1", "layer4", "avgpool", "fc"} <= names:
        stem = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool)
        stages = [trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4]
        return stem, stages, nn.Sequential(trunk.avgpool, nn.Flatten(1), trunk.fc)
    return None


def split_at_stride(trunk: nn.Module, stride: int) -> Split | None:
    """The trunk cut after the last stage whose output stride is at most `stride`; None when
    the architecture is not a known layout, no stage is that fine, or `stride` is 0."""
    layout = _layout(trunk) if stride > 0 else None
    if layout is None:
        return None
    stem, stages, finish = layout
    cut = None
    with torch.no_grad():
        was_training = trunk.training
        trunk.eval()
        x = stem(torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE))
        for k, stage in enumerate(stages[:-1]):  # at least the last stage trains
            x = stage(x)
            reached = PROBE_SIZE // x.shape[-1]
            if reached > stride:
                break
            cut = (k + 1, reached)
        trunk.train(was_training)
    if cut is None:
        return None
    k, reached = cut
    return Split(nn.Sequential(stem, *stages[:k]), nn.Sequential(*stages[k:], finish), reached)
