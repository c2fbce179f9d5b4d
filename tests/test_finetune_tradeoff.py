"""benchmarks/finetune_tradeoff.py writes each variant as a run-config file that `emb run
--config` accepts, so a misspelt setting fails here rather than after an hour of runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.finetune_tradeoff import VARIANTS, config_file
from embedding_assets.cli.runner import RunConfigError, load_config_file, validate


def test_every_variant_is_a_run_config_emb_run_accepts(tmp_path: Path):
    assert config_file("default", tmp_path / "default.yaml") is None
    for n, variant in enumerate(v for v in VARIANTS if v != "default"):
        path = config_file(variant, tmp_path / f"{n}.yaml")
        config = load_config_file(path)
        validate(config, str(path))
        settings = config["ops"]["embedding_model"]["config"]
        assert ",".join(f"{k}={v}" for k, v in settings.items()) == variant
    misspelt = config_file("min_step=60", tmp_path / "misspelt.yaml")
    with pytest.raises(RunConfigError, match="min_step"):
        validate(load_config_file(misspelt), str(misspelt))
