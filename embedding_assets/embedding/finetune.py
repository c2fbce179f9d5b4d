"""Fine-tuning the backbone on the labels as a classifier with a cosine-softmax head (CosFace):
the default of `embedding_model`. The trunk's pooled features are then the embeddings, and the
head is one of the classifier's candidates.

Measured on real photos (CIFAR-10, 500 labels, three draws; benchmarks/results/
embedding_quality.md): what makes it work with a few hundred labels is freezing the BatchNorm
statistics (every BatchNorm layer stays in eval mode; its affine weights still train): with the
statistics updated from batches of 32 the same recipe lost 13-15 points of accuracy. The early
stages (up to output stride 8, `trunk_split`) stay as pretrained: better features and a far
cheaper step. Their outputs are computed once per image, plain and mirrored, and each epoch
trains the rest on them with random flips and small shifts of the feature map, where they fit
in memory (`FROZEN_CACHE_BYTES`); otherwise every step runs the frozen stages on small
random-resized crops. The rest of the recipe: label smoothing, AdamW with a 10x learning rate
for the head, a cosine schedule, channels-last tensors (1.7x faster on a CPU), and as many
epochs as the time budget allows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2

from embedding_assets.embedding.backbones import Backbone
from embedding_assets.embedding.heads import CosineClassifier
from embedding_assets.embedding.metric_learning import (
    FitSettings,
    TrainResult,
    adamw,
    float_input,
    freeze_batchnorm,
    seed_everything,
)
from embedding_assets.embedding.trunk_split import Split, split_at_stride

FROZEN_CACHE_BYTES = 2 * 2**30  # frozen-stage outputs kept in memory (fp16, two per image)
# Images per forward pass of the frozen stages (on a GPU, on a CPU), and of the trained ones
# when judging (CPU). Small on a CPU: the early stages' large feature maps then stay in cache
# (160 px, 2 cores: the frozen stages ran 5x faster in batches of 4 than of 64, the trained
# ones 1.6x in batches of 16).
PREFIX_BATCH = {"cuda": 64, "cpu": 4}
TAIL_BATCH = 16


def prefix_batch(device: torch.device) -> int:
    """Images per forward pass of the frozen stages on `device` (PREFIX_BATCH)."""
    return PREFIX_BATCH.get(device.type, PREFIX_BATCH["cuda"])


@dataclass
class FrozenOutputs:
    """The frozen stages' output of each image and of its mirror image: (2, n, H, W, C) fp16
    (channels last, as the convolutions after them read it fastest on a CPU)."""

    outputs: torch.Tensor

    def subset(self, index: np.ndarray) -> FrozenOutputs:
        return FrozenOutputs(self.outputs[:, torch.as_tensor(index)])

    def batch(self, rows: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
        """Float outputs of `rows`, each plain or mirrored at random, the batch shifted by up to
        `shift` cells (edges repeated): the flips and crops of augmentation, after the fact."""
        flips = torch.randint(0, 2, (len(rows),), generator=generator)
        h = self.outputs[flips, rows].float().permute(0, 3, 1, 2)
        if shift:
            dx, dy = torch.randint(0, 2 * shift + 1, (2,), generator=generator).tolist()
            padded = nn.functional.pad(h, (shift,) * 4, mode="replicate")
            h = padded[:, :, dy : dy + h.shape[2], dx : dx + h.shape[3]]
        return h.contiguous(memory_format=torch.channels_last)


def frozen_outputs(
    prefix: nn.Module,
    images: torch.Tensor,
    to_float: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device | str = "cpu",
) -> FrozenOutputs | None:
    """The prefix's outputs of every image and its mirror, or None when they would take more
    than FROZEN_CACHE_BYTES (then training runs the prefix on every step)."""
    device = torch.device(device)
    prefix = prefix.to(device).eval().to(memory_format=torch.channels_last)
    with torch.no_grad():
        probe = prefix(to_float(images[:1]).to(device))
    if 2 * len(images) * probe[0].numel() * 2 > FROZEN_CACHE_BYTES:
        return None
    c, h, w = probe.shape[1:]
    out = torch.empty((2, len(images), h, w, c), dtype=torch.float16)
    with torch.no_grad():
        step = prefix_batch(device)
        for start in range(0, len(images), step):
            x = to_float(images[start : start + step]).to(device)
            x = x.contiguous(memory_format=torch.channels_last)
            for flip in (0, 1):
                y = prefix(x.flip(3) if flip else x)
                out[flip, start : start + len(x)] = y.permute(0, 2, 3, 1).half().cpu()
    return FrozenOutputs(out)


def trunk_features(trunk: nn.Module, stride: int, frozen: FrozenOutputs) -> np.ndarray:
    """A fine-tuned trunk's features of the images of `frozen` (their plain, unmirrored outputs
    of the frozen stages, which training kept in memory): what serving the trunk gives, less
    decoding the images and running the frozen stages again (fp16-rounded inputs to the
    trained stages: a kNN judgement does not notice)."""
    split = split_at_stride(trunk, stride)
    if split is None:
        raise ValueError(f"the trunk has no frozen stages at stride {stride}")
    split.tail.eval()
    parts = []
    with torch.inference_mode():
        for start in range(0, frozen.outputs.shape[1], TAIL_BATCH):
            h = frozen.outputs[0, start : start + TAIL_BATCH].float().permute(0, 3, 1, 2)
            parts.append(split.tail(h.contiguous(memory_format=torch.channels_last)).numpy())
    x = np.concatenate(parts).astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # as served


@dataclass
class WarmStart:
    """Where a training starts instead of the pretrained weights: a trunk's weights and the
    class weights of a cosine classifier by class name (`averaged`)."""

    trunk: dict[str, torch.Tensor]
    class_weights: dict[str, torch.Tensor]  # unit rows

    def apply(self, trunk: nn.Module, head: CosineClassifier, classes: list[str]) -> None:
        trunk.load_state_dict(self.trunk)
        with torch.no_grad():
            for row, name in enumerate(classes):
                if name in self.class_weights:  # a class no training saw keeps its random row
                    head.weight[row] = self.class_weights[name].to(head.weight.device)


def averaged(results: list[TrainResult]) -> WarmStart:
    """The weight average of fine-tunes of the same pretrained trunk (a "model soup", Wortsman
    et al. 2022), with each class's unit class weights averaged over the trainings that had it.
    The two half-trainings the gate judged, averaged, start the served training on every label,
    which then runs two thirds of its epochs (`TrainConfig.epochs_for`)."""
    states = [r.backbone.state_dict() for r in results]
    trunk = {
        name: (
            torch.stack([s[name].float() for s in states]).mean(0).to(tensor.dtype)
            if tensor.is_floating_point()
            else tensor.clone()
        )
        for name, tensor in states[0].items()
    }
    rows: dict[str, list[torch.Tensor]] = {}
    for r in results:
        weights = nn.functional.normalize(r.classifier.weight.detach().float(), dim=1)
        for name, row in zip(r.classes, weights, strict=True):
            rows.setdefault(name, []).append(row)
    classes = {
        name: nn.functional.normalize(torch.stack(v).mean(0), dim=0) for name, v in rows.items()
    }
    return WarmStart(trunk, classes)


def finetune_classifier(
    backbone: Backbone,
    images: torch.Tensor,
    labels: np.ndarray,
    fit: FitSettings,
    *,
    frozen: FrozenOutputs | None = None,
    start: WarmStart | None = None,
) -> TrainResult:
    """Train the backbone's trunk (its stages past `cfg.frozen_stride`) and a cosine classifier
    on uint8 images (n, 3, S, S), already resized as at inference, for `cfg.epochs` epochs or as
    many as `cfg.time_budget_s` allows (measured on the first epoch, which always runs), with
    the normalization of `backbone.spec`, the spec the trunk is served with. `frozen`: the
    frozen stages' outputs of these images, when the caller computed them already (they are
    the same for every training from the same pretrained weights; `start` must not change
    them). `start`: the trunk's and the head's weights to begin from instead of the pretrained
    trunk and a random head. The trunk's pooled features are the embeddings; the result's
    `classifier` is the trained head."""
    cfg, progress = fit.cfg, fit.progress
    started = time.perf_counter()
    seed_everything(cfg.seed)
    classes, codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    dev = torch.device(fit.device)
    head = CosineClassifier(backbone.dim, len(classes), cfg.scale, cfg.margin).to(dev)
    if start is not None:
        start.apply(backbone.model, head, classes.tolist())
    trunk = backbone.model.to(dev).to(memory_format=torch.channels_last)
    split = split_at_stride(trunk, cfg.frozen_stride)
    trained = trunk if split is None else split.tail
    if split is not None:
        split.prefix.requires_grad_(False)
    to_float = float_input(backbone.spec.preprocess.mean, backbone.spec.preprocess.std)
    if split is not None and frozen is None:
        frozen = frozen_outputs(split.prefix, images, to_float, dev)
    opt = adamw(
        [
            {"params": [p for p in trained.parameters() if p.requires_grad], "lr": cfg.lr},
            {"params": head.parameters(), "lr": cfg.lr * cfg.head_lr_factor},
        ],
        cfg.weight_decay,
        dev,
    )
    n = len(codes)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    plan = {"epochs": cfg.epochs}

    def lr_factor(step: int) -> float:  # cosine over the epochs planned now
        total = max(1, steps_per_epoch * plan["epochs"])  # epochs=0: the pretrained trunk
        return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    augment = v2.Compose(
        [
            v2.RandomResizedCrop(images.shape[-1], scale=(cfg.crop_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    )
    targets = torch.as_tensor(codes, dtype=torch.long)
    generator = torch.Generator().manual_seed(cfg.seed)

    def features(rows: torch.Tensor) -> torch.Tensor:
        if frozen is not None:
            return split.tail(frozen.batch(rows, cfg.feature_shift, generator).to(dev))
        x = to_float(torch.stack([augment(img) for img in images[rows]])).to(dev)
        x = x.contiguous(memory_format=torch.channels_last)
        if split is None:
            return trunk(x)
        step = prefix_batch(dev)
        with torch.no_grad():
            h = torch.cat([split.prefix(x[i : i + step]) for i in range(0, len(x), step)])
        return split.tail(h.contiguous(memory_format=torch.channels_last))

    history: list[dict] = []
    stopped = False
    epoch = 0
    while epoch < plan["epochs"]:
        epoch += 1
        epoch_start = time.perf_counter()
        _train_mode(trunk, split, cfg.freeze_bn)
        order = torch.randperm(n, generator=generator)
        total, right = 0.0, 0
        for s in range(steps_per_epoch):
            rows = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            y = targets[rows].to(dev)
            f = features(rows)
            loss = nn.functional.cross_entropy(
                head.training_logits(f, y), y, label_smoothing=cfg.label_smoothing
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(rows)
            right += int((head(f).argmax(1) == y).sum())
        seconds = time.perf_counter() - epoch_start
        if epoch == 1 and cfg.time_budget_s > 0:  # how many epochs the budget holds
            left = cfg.time_budget_s - (epoch_start - started)  # the frozen pass counts too
            fits = max(1, int(left // max(seconds, 1e-6)))
            stopped = fits < cfg.epochs
            plan["epochs"] = min(cfg.epochs, fits)
        row = {
            "epoch": epoch,
            "epochs": plan["epochs"],
            "loss": total / n,
            "train_accuracy": right / n,
            "seconds": seconds,
        }
        history.append(row)
        if progress:
            progress(row)
    trunk = trunk.cpu().eval().to(memory_format=torch.contiguous_format)
    return TrainResult(
        head=None,
        backbone=trunk,
        history=history,
        best_epoch=len(history),
        stopped_early=stopped,
        seconds=time.perf_counter() - started,
        classifier=head.cpu().eval(),
        classes=classes.tolist(),
        frozen_stride=split.stride if split is not None else 0,
    )


def _train_mode(trunk: nn.Module, split: Split | None, freeze_bn: bool) -> None:
    """Dropout and the trained stages in training mode; the frozen stages (and, with
    `freeze_bn`, every BatchNorm's statistics) as pretrained."""
    trunk.train()
    if freeze_bn:
        freeze_batchnorm(trunk)
    if split is not None:
        split.prefix.eval()
