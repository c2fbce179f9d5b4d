"""Loading the Dagster definitions (webserver, daemon, every step process) and the CLI stays
cheap: the heavy libraries load inside the functions that use them, never at import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.import_time import HEAVY  # one list: what the benchmark reports, this forbids


def loaded_after(module: str) -> set[str]:
    """Top-level packages in sys.modules after importing `module` in a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize("module", ["embedding_assets.definitions", "embedding_assets.cli.app"])
def test_import_loads_no_heavy_library(module: str):
    assert loaded_after(module) & set(HEAVY) == set()


def test_cli_does_not_load_dagster():
    assert "dagster" not in loaded_after("embedding_assets.cli.app")


def test_a_run_with_nothing_to_compute_loads_no_model_library():
    """What `embedding_model` and `embeddings` do before deciding to reuse (the default model's
    key, the training fingerprint's config, the GPU probe on a machine without NVIDIA's driver)
    loads none of the model libraries: a no-op run used to spend 6 of its 19 seconds importing
    them. (Parquet and DuckDB it does read.)"""
    code = (
        "import json, sys\n"
        "from embedding_assets.embedding.embedder import EmbedParams\n"
        "from embedding_assets.embedding.run import RunOptions, run_embeddings\n"
        "from embedding_assets.embedding.train_config import TrainConfig\n"
        "from embedding_assets.embedding.training import train_embedding_model, trained_params\n"
        "from resources.gpu import GPUResource, nvidia_driver_present\n"
        "key = EmbedParams().model_key()\n"
        "TrainConfig().check('finetune')\n"
        "RunOptions().forward_threads\n"
        "probe = None if nvidia_driver_present() else GPUResource(device='auto').choose()\n"
        "print(json.dumps([key, sorted({m.split('.')[0] for m in sys.modules})]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    key, loaded = json.loads(out.splitlines()[-1])
    assert key.startswith("efficientnet_lite0-packaged-")
    models = {"torch", "torchvision", "timm", "sklearn", "pytorch_metric_learning", "onnxruntime"}
    assert set(loaded) & models == set()
