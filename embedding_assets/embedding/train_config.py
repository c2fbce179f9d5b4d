"""The settings of an embedding-model training run, apart from the training code: the
`embedding_model` asset checks them and fingerprints them on every run, also when nothing is
trained (a no-op run must not load torch to find that out)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from embedding_assets.common.choices import AUGMENTATIONS, LOSSES, MODES

MAX_EPOCH_FACTOR = 4  # a fine-tune's epochs at most this times `epochs` (few labels)
WARM_SHARE = 2 / 3  # of its epochs, a training from the average of the half-trainings runs


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; with the same seed and data, the same model."""

    loss: str = "supcon"
    embedding_size: int = 64
    hidden: int = 512
    dropout: float = 0.1
    epochs: int = 30
    patience: int = 5
    batch_size: int = 128
    per_class: int = 4  # images of one class that sit together in a batch (positives)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augmentation: str = "none"
    seed: int = 0
    # fine-tuning (embedding.finetune for loss cosface; freeze_bn for every fine-tune)
    image_size: int = 0  # training and serving size of a fine-tuned trunk; 0: the backbone's
    freeze_bn: bool = True  # BatchNorm statistics stay the pretrained ones
    head_lr_factor: float = 10.0  # the head (or a loss's class weights) learns this much faster
    label_smoothing: float = 0.1
    scale: float = 16.0  # cosface: logits = scale * (cosine - margin on the target class)
    margin: float = 0.2
    crop_scale: float = 0.8  # random-resized crops keep at least this share of the image
    frozen_stride: int = 8  # cosface: stages up to this output stride stay pretrained; 0: none
    feature_shift: int = 1  # cosface on stored frozen outputs: random shifts, in cells
    time_budget_s: float = 0.0  # 0: none; else stop before an epoch that would not fit
    # cosface: every training (judged and served) runs at least this many steps (few labels)
    min_steps: int = 0

    def check(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: choose one of {MODES}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r}: choose one of {LOSSES}")
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"augmentation={self.augmentation!r}: choose one of {AUGMENTATIONS}")
        if self.loss == "cosface" and mode == "head":
            raise ValueError(
                "loss='cosface' fine-tunes the backbone as a classifier: use mode='finetune', "
                "or a metric loss (supcon, ...) in head mode"
            )
        if self.loss == "ntxent" and mode == "head":
            raise ValueError(
                "loss='ntxent' needs two augmented views of each image, which cached features "
                "lack: use mode='finetune' (with an augmentation), or a supervised loss in "
                "head mode"
            )
        if self.loss == "ntxent" and self.augmentation == "none":
            raise ValueError(
                "loss='ntxent' compares two augmented views of each image: set augmentation "
                "to autoaugment, randaugment or trivialaugment"
            )
        if self.embedding_size < 2 or self.epochs < 0 or self.batch_size < 2:
            raise ValueError("embedding_size >= 2, epochs >= 0 and batch_size >= 2 are required")
        if self.min_steps < 0:
            raise ValueError("min_steps >= 0 is required (0: `epochs` only)")

    def epochs_for(self, n: int, warm: bool = False) -> int:
        """Epochs of a training on `n` labeled images: `epochs`, or more where few labels make
        an epoch a handful of steps. With 40 labels per class on 8 classes an epoch of the
        served training is 10 steps and one of a half-training 5: at five epochs the halves
        the gate judges had 25 steps, scored below the plain backbone and kept out a fine-tune
        that reached 0.919 against 0.840 (blood cells, draw 4); the same rule for the served
        training gave +2.3 points (benchmarks/results/domain_quality.md). At most
        MAX_EPOCH_FACTOR x `epochs`: a few dozen labels would otherwise go round the same
        images a hundred times. `warm`: a training that starts from the average of the
        half-trainings (`finetune.averaged`) runs two thirds as many (WARM_SHARE); half as many
        cost the user trial's CIFAR photos 3 points (0.770 against 0.800; two thirds: 0.794;
        benchmarks/results/end_to_end_quality.md and warm_start.md)."""
        if self.loss != "cosface" or self.epochs == 0:
            return self.epochs
        steps = max(1, math.ceil(n / self.batch_size))
        wanted = math.ceil(self.min_steps / steps)
        cold = max(self.epochs, min(wanted, MAX_EPOCH_FACTOR * self.epochs))
        return max(1, math.ceil(cold * WARM_SHARE)) if warm else cold
