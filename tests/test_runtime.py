"""The forward pass on ONNX Runtime: the same vectors as torch, an export cached by model key
and made again when stale or damaged, torch where a model does not export, and one LMDB cache
for both runtimes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch import nn

from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.embedding import runtime, sets
from embedding_assets.embedding.backbones import Backbone
from embedding_assets.embedding.embedder import BatchSettings, EmbedParams, embed_paths
from embedding_assets.embedding.run import RunOptions, run_embeddings
from resources.paths import DataPaths

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> list[str]:
    """40 real images: scikit-learn's handwritten digits as 32 px PNGs."""
    folder = tmp_path_factory.mktemp("digits")
    data = load_digits()
    paths = []
    for i in range(40):
        grey = (data.images[i] * (255 / 16)).astype(np.uint8)
        path = folder / f"{data.target[i]}_{i:02d}.png"
        Image.fromarray(grey).resize((32, 32), Image.Resampling.BILINEAR).save(path)
        paths.append(str(path))
    return paths


def _vectors(backbone: Backbone, files: list[str]) -> np.ndarray:
    return np.concatenate(
        [b.vectors for b in embed_paths(backbone, files, BatchSettings(workers=0))]
    )


@pytest.mark.parametrize(
    "params",
    [EmbedParams(), EmbedParams("resnet18", None, 64)],
    ids=["efficientnet_lite0 (packaged weights)", "torchvision resnet18"],
)
def test_onnx_features_equal_torch_features(params: EmbedParams, digits, tmp_path: Path):
    backbone = params.build(allow_download=False)
    key = params.model_key()
    onnx = RunOptions(runtime="onnxruntime", threads=2, exports=tmp_path)
    on_onnx, used = runtime.on_runtime(lambda: backbone, params.spec(), key, onnx)
    assert used == "onnxruntime" and isinstance(on_onnx.model, runtime.OnnxModule)
    difference = np.abs(_vectors(backbone, digits) - _vectors(on_onnx, digits)).max()
    assert difference < runtime.MAX_DIFFERENCE

    def must_not_build():
        raise AssertionError("a valid export serves without building the torch model")

    again, used = runtime.on_runtime(must_not_build, params.spec(), key, onnx)
    assert used == "onnxruntime" and again.dim == backbone.dim
    assert np.abs(_vectors(again, digits) - _vectors(on_onnx, digits)).max() == 0


class DataDependent(nn.Module):
    """Control flow on the input's values: torch.export cannot trace it into one graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        if pooled.sum() > 0:
            return pooled * 2
        return pooled


def test_a_model_that_does_not_export_runs_on_torch(tmp_path: Path):
    spec = EmbedParams("resnet18", None, 32).spec()
    backbone = Backbone(DataDependent(), 3, spec)
    notes: list[str] = []
    onnx = RunOptions(runtime="onnxruntime", threads=1, exports=tmp_path)
    kept, used = runtime.on_runtime(lambda: backbone, spec, "data-dependent", onnx, notes.append)
    assert used == "torch" and kept.model is backbone.model
    assert len(notes) == 1 and "resnet18" in notes[0] and "using torch" in notes[0]
    assert not (tmp_path / "data-dependent.onnx").exists()


def test_a_stale_or_damaged_export_is_made_again(tmp_path: Path):
    params = EmbedParams("resnet18", None, 32)
    key = params.model_key()
    backbone = params.build(allow_download=False)
    path = runtime.exported_path(backbone, key, tmp_path)
    record = json.loads(path.with_suffix(".json").read_text())
    made = path.stat().st_mtime_ns
    assert runtime.exported_path(backbone, key, tmp_path).stat().st_mtime_ns == made  # reused

    path.write_bytes(path.read_bytes()[:1000])  # truncated: its hash no longer matches
    again = runtime.exported_path(backbone, key, tmp_path)
    assert json.loads(again.with_suffix(".json").read_text())["sha256"] == record["sha256"]
    runtime.OnnxModule(again, 1)  # loads

    path.with_suffix(".json").write_text(json.dumps({**record, "model_key": "another"}))
    before = path.stat().st_mtime_ns
    runtime.exported_path(backbone, key, tmp_path)
    assert path.stat().st_mtime_ns != before, "a record of another model key is not trusted"


def test_a_cache_filled_on_one_runtime_serves_the_other(digits, tmp_path: Path):
    folder = Path(digits[0]).parent
    paths = DataPaths(tmp_path / "data")
    scan_catalog(paths.catalog_db, folder)
    first = run_embeddings(paths, EmbedParams(), RunOptions(workers=0, runtime="torch"))
    assert first.runtime == "torch" and first.embedded == len(digits)
    _, _, torch_vectors = sets.load_current(paths.catalog_db)

    grey = (load_digits().images[40] * (255 / 16)).astype(np.uint8)
    Image.fromarray(grey).resize((32, 32)).save(folder / "extra.png")  # one new image
    scan_catalog(paths.catalog_db, folder)
    second = run_embeddings(paths, EmbedParams(), RunOptions(workers=0, runtime="onnxruntime"))
    assert second.from_cache == len(digits), "the torch vectors serve the ONNX run"
    assert second.runtime == "onnxruntime" and second.embedded == 1
    assert first.model_key == second.model_key, "the runtime is not part of the model key"
    ids, vectors = sets.read_parquet(second.parquet_path)
    assert np.abs(vectors[: len(torch_vectors)] - torch_vectors).max() < runtime.MAX_DIFFERENCE


def test_auto_picks_onnx_runtime_on_the_cpu_and_torch_on_a_gpu():
    assert runtime.resolve("auto", "cpu") == "onnxruntime"
    assert runtime.resolve("auto", "cuda:0") == "torch"
    assert runtime.resolve("torch", "cpu") == "torch"
    with pytest.raises(ValueError, match="CPU only"):
        runtime.resolve("onnxruntime", "cuda")
