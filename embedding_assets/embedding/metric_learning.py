"""Metric learning with pytorch-metric-learning: a projection head over cached backbone
features (fast, CPU-friendly) or the whole backbone plus head (fine-tuning, for GPUs or small
images). Seeded, with early stopping when the validation kNN accuracy stops improving.

Head mode trains on the L2-normalized backbone vectors, exactly what inference feeds the head
(embedder: backbone -> L2Normalize -> head). NTXent needs two augmented views of each image,
which cached features do not have, so it is offered in fine-tune mode only.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from pytorch_metric_learning import losses, miners
from torch import nn
from torchvision.transforms import v2

from embedding_assets.common.choices import LOSSES
from embedding_assets.embedding.backbones import Backbone
from embedding_assets.embedding.evaluation import knn_top1
from embedding_assets.embedding.heads import CosineClassifier, L2Normalize, ProjectionHead
from embedding_assets.embedding.train_config import TrainConfig

Progress = Callable[[dict], None]


def adamw(groups: list[dict], weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW, fused where torch has the kernel (CPU and CUDA): on 2 CPU cores the per-tensor
    loop took 41 ms a step over the 102 tensors of a fine-tuned EfficientNet-Lite0's later
    stages, the fused kernel 13 ms (~8 % of a training step)."""
    return torch.optim.AdamW(
        groups, weight_decay=weight_decay, fused=device.type in ("cpu", "cuda")
    )


@dataclass(frozen=True)
class FitSettings:
    """How one training runs, apart from its data: the TrainConfig that decides the model, the
    device, and who hears of each epoch (one row of the history); `embedding.training` makes
    one per training from the `embedding_model` config and the step's device."""

    cfg: TrainConfig
    device: str = "cpu"
    progress: Progress | None = None


@dataclass
class TrainResult:
    head: ProjectionHead | None  # None: the trunk's own features are the embeddings (cosface)
    backbone: nn.Module | None  # the fine-tuned trunk (fine-tune mode), else None
    history: list[dict] = field(default_factory=list)  # one row per epoch
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    classifier: CosineClassifier | None = None  # cosface: the class head, over the trunk
    classes: list[str] = field(default_factory=list)
    frozen_stride: int = 0  # fine-tune: the output stride of the stages kept as pretrained


def freeze_batchnorm(model: nn.Module) -> None:
    """BatchNorm layers in eval mode: running statistics stay the pretrained ones (their affine
    weights still train). Batches of a few dozen images of few classes would otherwise replace
    statistics estimated on ImageNet, which cost the fine-tune 13-15 points of accuracy."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def float_input(mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    """uint8 images to the model's normalized float input (training; inference normalizes
    inside the model, embedding.pixel_input)."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loss(name: str, n_classes: int, embedding_size: int) -> tuple[nn.Module, object]:
    """(loss, miner or None). ArcFace owns a class-weight matrix that is trained with it."""
    if name == "contrastive":
        return losses.ContrastiveLoss(pos_margin=0.0, neg_margin=0.5), None
    if name == "triplet":
        return losses.TripletMarginLoss(margin=0.1), miners.TripletMarginMiner(
            margin=0.1, type_of_triplets="semihard"
        )
    if name == "supcon":
        return losses.SupConLoss(temperature=0.1), None
    if name == "ntxent":
        return losses.NTXentLoss(temperature=0.1), None
    if name == "arcface":
        return losses.ArcFaceLoss(n_classes, embedding_size, margin=28.6, scale=30), None
    raise ValueError(f"loss={name!r}: choose one of {LOSSES}")


def class_batches(y: np.ndarray, batch_size: int, per_class: int, rng: np.random.Generator):
    """One epoch of batches, each image once, with images of a class in groups of
    `per_class`, so every batch holds positives even with many classes."""
    groups = []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        groups += [idx[s : s + per_class] for s in range(0, len(idx), per_class)]
    order = np.concatenate([groups[g] for g in rng.permutation(len(groups))])
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    return [b for b in batches if len(b) >= 2]


def augmenter(name: str) -> v2.Transform | None:
    """torchvision's learned/random augmentation policies; they work on uint8 images."""
    return {
        "none": None,
        "autoaugment": v2.AutoAugment(),
        "randaugment": v2.RandAugment(),
        "trivialaugment": v2.TrivialAugmentWide(),
    }[name]


class _Trainer:
    """The loop both modes share: batches, loss (+ miner), early stopping, best weights."""

    def __init__(self, fit: FitSettings, n_classes: int):
        cfg = self.cfg = fit.cfg
        self.device = torch.device(fit.device)
        self.loss_fn, self.miner = make_loss(cfg.loss, max(n_classes, 2), cfg.embedding_size)
        self.loss_fn.to(self.device)
        self.progress = fit.progress

    def run(
        self,
        model: nn.Module,
        step: Callable[[np.ndarray], torch.Tensor],
        y_batches: np.ndarray,
        embed_val: Callable[[], np.ndarray] | None,
        y_val: np.ndarray | None,
        frozen: nn.Module | None = None,
    ) -> tuple[list[dict], int, bool]:
        """`frozen`: a part whose BatchNorm statistics stay as they are (a pretrained trunk)."""
        cfg = self.cfg
        rng = np.random.default_rng(cfg.seed)
        groups = [{"params": model.parameters(), "lr": cfg.lr}]
        loss_params = list(self.loss_fn.parameters())
        if loss_params:  # ArcFace's class centres learn faster than the network
            groups.append({"params": loss_params, "lr": cfg.lr * cfg.head_lr_factor})
        opt = adamw(groups, cfg.weight_decay, self.device)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
        history: list[dict] = []
        best = (-np.inf, 0, copy.deepcopy(model.state_dict()))
        stale = 0
        stopped = False
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            if frozen is not None:
                freeze_batchnorm(frozen)
            total, count = 0.0, 0
            for batch in class_batches(y_batches, cfg.batch_size, cfg.per_class, rng):
                loss = step(batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(batch)
                count += len(batch)
            sched.step()
            row = {"epoch": epoch, "epochs": cfg.epochs, "loss": total / max(count, 1)}
            # Early stopping watches validation kNN accuracy, or the training loss without one.
            if embed_val is not None:
                model.eval()
                row["val_knn_top1"] = knn_top1(embed_val(), y_val)
                score = row["val_knn_top1"]
            else:
                score = -row["loss"]
            history.append(row)
            if self.progress:
                self.progress(row)
            if score > best[0] + 1e-6:
                best, stale = (score, epoch, copy.deepcopy(model.state_dict())), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    stopped = True
                    break
        if cfg.epochs:
            model.load_state_dict(best[2])
        return history, best[1], stopped

    def loss(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.miner is not None:
            return self.loss_fn(emb, labels, self.miner(emb, labels))
        return self.loss_fn(emb, labels)


def _encode(y: np.ndarray) -> tuple[np.ndarray, int]:
    classes, codes = np.unique(np.asarray(y), return_inverse=True)
    return codes.astype(np.int64), len(classes)


def _val_ok(y_val: np.ndarray | None) -> bool:
    """Validation needs two images of some class, else there is no neighbour to match."""
    if y_val is None or len(y_val) < 2:
        return False
    return bool((np.unique(y_val, return_counts=True)[1] >= 2).any())


def train_head(
    X: np.ndarray,
    y: np.ndarray,
    fit: FitSettings,
    *,
    X_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
) -> TrainResult:
    """A ProjectionHead on L2-normalized features X (n, d) with labels y."""
    cfg = fit.cfg
    cfg.check("head")
    started = time.perf_counter()
    seed_everything(cfg.seed)
    codes, n_classes = _encode(y)
    dev = torch.device(fit.device)
    norm = L2Normalize()
    Xt = norm(torch.as_tensor(np.asarray(X, np.float32))).to(dev)
    labels = torch.as_tensor(codes, device=dev)
    head = ProjectionHead(Xt.shape[1], cfg.hidden, cfg.embedding_size, cfg.dropout).to(dev)
    trainer = _Trainer(fit, n_classes)

    def step(batch: np.ndarray) -> torch.Tensor:
        b = torch.as_tensor(batch, device=dev)
        return trainer.loss(head(Xt[b]), labels[b])

    embed_val = None
    if _val_ok(y_val):
        Xv = norm(torch.as_tensor(np.asarray(X_val, np.float32))).to(dev)

        def embed_val() -> np.ndarray:
            with torch.no_grad():
                return head(Xv).cpu().numpy()

    history, best_epoch, stopped = trainer.run(head, step, codes, embed_val, y_val)
    return TrainResult(
        head.cpu().eval(), None, history, best_epoch, stopped, time.perf_counter() - started
    )


class _Embedder(nn.Module):
    """trunk -> L2Normalize -> head: the same chain the embedder builds at inference."""

    def __init__(self, trunk: nn.Module, head: ProjectionHead) -> None:
        super().__init__()
        self.trunk, self.norm, self.head = trunk, L2Normalize(), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.trunk(x)))


def finetune(
    backbone: Backbone,
    images: torch.Tensor,
    y: np.ndarray | None,
    fit: FitSettings,
    *,
    images_val: torch.Tensor | None = None,
    y_val: np.ndarray | None = None,
) -> TrainResult:
    """The whole backbone plus a head on uint8 images (n, 3, H, W), already resized and
    cropped as at inference; `y` may be None for NTXent (self-supervised). `backbone.spec`: the
    spec the trained trunk is served with, whose normalization training uses too."""
    cfg = fit.cfg
    cfg.check("finetune")
    started = time.perf_counter()
    seed_everything(cfg.seed)
    if y is None:
        if cfg.loss != "ntxent":
            raise ValueError(f"loss={cfg.loss!r} needs labels; only 'ntxent' trains without")
        codes, n_classes = np.zeros(len(images), np.int64), 1
    else:
        codes, n_classes = _encode(y)
    dev = torch.device(fit.device)
    head = ProjectionHead(backbone.dim, cfg.hidden, cfg.embedding_size, cfg.dropout)
    model = _Embedder(backbone.model, head).to(dev)
    aug = augmenter(cfg.augmentation)
    to_float = float_input(backbone.spec.preprocess.mean, backbone.spec.preprocess.std)
    trainer = _Trainer(fit, n_classes)

    def view(batch: np.ndarray) -> torch.Tensor:
        x = images[torch.as_tensor(batch)]
        if aug is not None:  # one random policy draw per image, not per batch
            x = torch.stack([aug(img) for img in x])
        return to_float(x).to(dev)

    def step(batch: np.ndarray) -> torch.Tensor:
        if cfg.loss == "ntxent":  # two views; the positives are the two views of one image
            ids = torch.arange(len(batch), device=dev)
            emb = model(torch.cat([view(batch), view(batch)]))
            return trainer.loss(emb, torch.cat([ids, ids]))
        return trainer.loss(model(view(batch)), torch.as_tensor(codes[batch], device=dev))

    embed_val = None
    if _val_ok(y_val):

        def embed_val() -> np.ndarray:
            out = []
            with torch.no_grad():
                for s in range(0, len(images_val), 256):
                    out.append(model(to_float(images_val[s : s + 256]).to(dev)).cpu())
            return torch.cat(out).numpy()

    # NTXent ignores labels: batches are plain shuffles (one "class").
    y_batches = codes if cfg.loss != "ntxent" else np.zeros(len(codes), np.int64)
    frozen = model.trunk if cfg.freeze_bn else None
    history, best_epoch, stopped = trainer.run(model, step, y_batches, embed_val, y_val, frozen)
    model = model.cpu().eval()
    return TrainResult(
        model.head, model.trunk, history, best_epoch, stopped, time.perf_counter() - started
    )
