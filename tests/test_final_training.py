"""A promoted cosface fine-tune's final training starts from the average of its judged
half-trainings (`training._average`); what cannot be averaged trains in full."""

from __future__ import annotations

import torch
from torch import nn

from embedding_assets.embedding.heads import CosineClassifier
from embedding_assets.embedding.metric_learning import TrainResult
from embedding_assets.embedding.training import _average


def _half(seed: int, classes: list[str]) -> TrainResult:
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    return TrainResult(
        head=None,
        backbone=trunk,
        classifier=CosineClassifier(3, len(classes)),
        classes=classes,
    )


def test_the_halves_average_weight_by_weight_and_leave_them_as_they_were():
    a, b = _half(0, ["cat", "dog"]), _half(1, ["cat", "dog"])
    a.backbone[1].num_batches_tracked += 3  # an integer buffer: kept, not averaged
    before = a.backbone[0].weight.detach().clone()
    mean = _average([a, b])
    assert mean is not None and mean.classes == ["cat", "dog"]
    expected = (a.backbone[0].weight + b.backbone[0].weight) / 2
    assert torch.allclose(mean.backbone[0].weight, expected)
    assert torch.allclose(mean.classifier.weight, (a.classifier.weight + b.classifier.weight) / 2)
    assert int(mean.backbone[1].num_batches_tracked) == 3
    assert torch.equal(a.backbone[0].weight, before), "the judged halves stay as trained"


def test_halves_that_do_not_share_their_classes_or_lack_a_head_are_not_averaged():
    assert _average([_half(0, ["cat", "dog"]), _half(1, ["cat", "emu"])]) is None
    headless = [_half(0, ["cat"]), _half(1, ["cat"])]
    for t in headless:
        t.classifier = None
    assert _average(headless) is None
