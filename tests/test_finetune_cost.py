"""What keeps the fine-tune's cost down: half-trainings judge their half from what training
kept in memory, or embed a few hundred images on torch rather than pay for an export."""

from __future__ import annotations

import numpy as np
import torch

from embedding_assets.embedding.embedder import EmbedParams
from embedding_assets.embedding.finetune import frozen_outputs, trunk_features
from embedding_assets.embedding.judging import LabeledImages
from embedding_assets.embedding.metric_learning import float_input
from embedding_assets.embedding.run_options import RunOptions, worth_exporting
from embedding_assets.embedding.training import _judging_only
from embedding_assets.embedding.trunk_split import split_at_stride


def _labeled(n: int) -> LabeledImages:
    keys = np.random.default_rng(0).random(n)
    return LabeledImages(list(range(n)), [""] * n, [""] * n, np.array(["a"] * n), keys)


def test_half_trainings_judge_a_few_hundred_images_on_torch_and_many_on_an_export():
    half = (EmbedParams(image_size=160, center_crop=False),) * 2
    assert _judging_only(RunOptions(), half, _labeled(500)).runtime == "torch"
    assert _judging_only(RunOptions(), half, _labeled(10_000)).runtime == "auto"
    named = RunOptions(runtime="onnxruntime")
    assert _judging_only(named, half, _labeled(500)).runtime == "onnxruntime", "as asked"
    assert not worth_exporting(250, 160) and worth_exporting(5_000, 160)
    assert worth_exporting(600, 224) and not worth_exporting(599, 224)


def test_a_half_training_judges_from_kept_frozen_outputs_what_serving_its_trunk_gives():
    params = EmbedParams("resnet18", None, 64)  # torchvision's, random weights: no download
    backbone = params.build(allow_download=False)
    pre = backbone.spec.preprocess
    images = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8)
    to_float = float_input(pre.mean, pre.std)
    split = split_at_stride(backbone.model, 8)
    kept = frozen_outputs(split.prefix, images, to_float)
    got = trunk_features(backbone.model, split.stride, kept)
    with torch.inference_mode():
        want = backbone.model.eval()(to_float(images)).numpy()
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    assert got.shape == want.shape and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert np.abs(got - want).max() < 1e-2, "only the fp16 rounding of the kept outputs differs"
