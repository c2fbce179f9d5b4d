"""Fine-tuning the whole backbone on the labels as a classifier with a cosine-softmax head
(CosFace): the default of `embedding_model`. The trunk's pooled features are then the
embeddings, and the head is one of the classifier's candidates.

Measured on real photos (CIFAR-10, 500 labels, three draws; benchmarks/results/
embedding_quality.md): what makes it work with a few hundred labels is freezing the BatchNorm
statistics (every BatchNorm layer stays in eval mode; its affine weights still train): with the
statistics updated from batches of 32 the same recipe lost 13-15 points of accuracy. The rest of
the recipe: label smoothing, AdamW with a 10x learning rate for the head, a cosine schedule, a
small random-resized crop and horizontal flips, and as many epochs as the time budget allows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2

from embedding_assets.embedding.heads import CosineClassifier
from embedding_assets.embedding.metric_learning import (
    TrainResult,
    freeze_batchnorm,
    seed_everything,
)
from embedding_assets.embedding.train_config import TrainConfig

Progress = Callable[[dict], None]


def finetune_classifier(
    trunk: nn.Module,
    feature_dim: int,
    images: torch.Tensor,
    labels: np.ndarray,
    cfg: TrainConfig,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: str = "cpu",
    progress: Progress | None = None,
) -> TrainResult:
    """Train `trunk` and a cosine classifier on uint8 images (n, 3, S, S), already resized as at
    inference, for `cfg.epochs` epochs or as many as `cfg.time_budget_s` allows (measured on
    the first epoch, which always runs). The trunk's pooled features are the embeddings; the
    result's `classifier` is the trained head."""
    started = time.perf_counter()
    seed_everything(cfg.seed)
    classes, codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    dev = torch.device(device)
    head = CosineClassifier(feature_dim, len(classes), cfg.scale, cfg.margin).to(dev)
    trunk = trunk.to(dev)
    opt = torch.optim.AdamW(
        [
            {"params": trunk.parameters(), "lr": cfg.lr},
            {"params": head.parameters(), "lr": cfg.lr * cfg.head_lr_factor},
        ],
        weight_decay=cfg.weight_decay,
    )
    n = len(codes)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    plan = {"epochs": cfg.epochs}

    def lr_factor(step: int) -> float:  # cosine over the epochs planned now
        total = steps_per_epoch * plan["epochs"]
        return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    size = images.shape[-1]
    augment = v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(cfg.crop_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    )
    to_float = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    targets = torch.as_tensor(codes, dtype=torch.long)
    generator = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    stopped = False
    epoch = 0
    while epoch < plan["epochs"]:
        epoch += 1
        epoch_start = time.perf_counter()
        trunk.train()
        if cfg.freeze_bn:
            freeze_batchnorm(trunk)
        order = torch.randperm(n, generator=generator)
        total, right = 0.0, 0
        for s in range(steps_per_epoch):
            batch = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            x = to_float(torch.stack([augment(img) for img in images[batch]])).to(dev)
            y = targets[batch].to(dev)
            features = trunk(x)
            loss = nn.functional.cross_entropy(
                head.training_logits(features, y), y, label_smoothing=cfg.label_smoothing
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(batch)
            right += int((head(features).argmax(1) == y).sum())
        seconds = time.perf_counter() - epoch_start
        if epoch == 1 and cfg.time_budget_s > 0:  # how many epochs the budget holds
            fits = max(1, int(cfg.time_budget_s // max(seconds, 1e-6)))
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
    return TrainResult(
        head=None,
        backbone=trunk.cpu().eval(),
        history=history,
        best_epoch=len(history),
        stopped_early=stopped,
        seconds=time.perf_counter() - started,
        classifier=head.cpu().eval(),
        classes=classes.tolist(),
    )
