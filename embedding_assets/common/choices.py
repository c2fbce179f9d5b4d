"""Allowed values of config choices whose plain modules import torch, here in a module light
enough for the Dagster Config classes: typed as these Literals, the launchpad lists the values
and a wrong one is refused before a run starts."""

from __future__ import annotations

from typing import Literal, get_args

Mode = Literal["head", "finetune"]
Loss = Literal["cosface", "contrastive", "triplet", "supcon", "ntxent", "arcface"]
Augmentation = Literal["none", "autoaugment", "randaugment", "trivialaugment"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
StoreDtype = Literal["float32", "float16"]
EngineKind = Literal["local", "ray"]
Runtime = Literal["auto", "torch", "onnxruntime"]

MODES: tuple[str, ...] = get_args(Mode)
LOSSES: tuple[str, ...] = get_args(Loss)
AUGMENTATIONS: tuple[str, ...] = get_args(Augmentation)
