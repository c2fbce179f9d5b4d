"""Text search through a CLIP-style model's two towers (`clip_embeddings`), with a small open_clip
architecture and RANDOM weights: these tests check the mechanics (tokenize, both towers, the
LMDB cache by the model's own key, the FAISS index, queries from the CLI and `emb serve`, reuse,
the one-line errors), not the quality of the answers, which random weights cannot have."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from typer.testing import CliRunner

from embedding_assets.assets.search import clip_embeddings
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.cli.app import app
from resources.paths import DATA_DIR_ENV
from resources.storage import DataPaths
from tests.helpers import resources

open_clip = pytest.importorskip("open_clip")
import torch  # noqa: E402 - after the skip: open_clip brings torch

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    """`config.json:checkpoint.pt` of a tiny CLIP with random weights saved as a checkpoint."""
    config = tmp_path / "emb-tiny-clip.json"
    config.write_text(json.dumps(TINY))
    open_clip.add_model_config(str(config))
    torch.manual_seed(1)
    model = open_clip.create_model("emb-tiny-clip", pretrained=None)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    return f"{config}:{checkpoint}"


def _materialize(data_dir: Path, text_model: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [clip_embeddings],
        resources=resources(data_dir),
        run_config={"ops": {"clip_embeddings": {"config": {"text_model": text_model}}}},
        raise_on_error=False,
    )


def _failure(result: dg.ExecuteInProcessResult) -> str:
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.event_specific_data.error.message


def test_both_towers_index_and_answer_from_the_cli_and_the_server(
    data_dir: Path, labeled_folder: Path, tiny: str
):
    from fastapi.testclient import TestClient

    from embedding_assets.embedding.cache import EmbeddingCache
    from embedding_assets.search.clip import ClipSpec, load_model
    from embedding_assets.web.api import create_app

    paths = DataPaths(data_dir)
    scan_catalog(paths.catalog_db, labeled_folder)
    result = _materialize(data_dir, tiny)
    assert result.success
    meta = result.asset_materializations_for_node("clip_embeddings")[0].metadata
    assert meta["images"].value == 28 and meta["dimension"].value == 32
    spec = ClipSpec.parse(tiny)
    with EmbeddingCache(paths.embeddings_lmdb) as cache:
        assert cache.count(spec.model_key) == 28  # its own key beside the backbone's

    out = CliRunner().invoke(
        app,
        ["search", "--text", "a red truck", "-k", "5", "--format", "json"],
        env={DATA_DIR_ENV: str(data_dir)},
    )
    assert out.exit_code == 0, out.output
    answer = json.loads(out.stdout)
    assert answer["via"] == "clip" and len(answer["results"]) == 5
    # The best hit is the image whose vector is nearest the text tower's vector.
    model = load_model(spec)
    text = model.encode_text(["a red truck"])[0]
    with EmbeddingCache(paths.embeddings_lmdb) as cache:
        from embedding_assets.catalog.images import usable_files

        x = cache.get_matrix(spec.model_key, usable_files(paths.catalog_db).hashes, 32, "float32")
    assert answer["results"][0]["score"] == pytest.approx(float((x @ text).max()), abs=1e-5)

    client = TestClient(create_app(paths.catalog_db), base_url="http://127.0.0.1")
    served = client.get("/search", params={"text": "a red truck", "k": 5}).json()
    assert served["via"] == "clip"
    assert [h["image_id"] for h in served["results"]] == [h["image_id"] for h in answer["results"]]

    again = _materialize(data_dir, tiny)
    assert "reused" in again.asset_materializations_for_node("clip_embeddings")[0].metadata
    off = _materialize(data_dir, "")
    assert off.success
    assert not (data_dir / "clip" / "current.json").exists()  # text search back to the tags


@pytest.mark.parametrize(
    "text_model, says",
    [
        ("emb-no-such-arch", "open_clip has no model 'emb-no-such-arch'"),
        ("ViT-B-32:/nowhere/checkpoint.bin", "put the checkpoint file here"),
    ],
)
def test_missing_model_or_weights_fail_that_asset_in_one_line(
    data_dir: Path, labeled_folder: Path, text_model: str, says: str
):
    scan_catalog(DataPaths(data_dir).catalog_db, labeled_folder)
    result = _materialize(data_dir, text_model)
    assert not result.success
    message = _failure(result)
    assert says in message and "\n" not in message.strip()


def test_random_weights_give_the_same_vectors_in_every_process(tmp_path: Path):
    from embedding_assets.search.clip import ClipSpec, load_model

    config = tmp_path / "emb-tiny-clip2.json"
    config.write_text(json.dumps(TINY))
    spec = ClipSpec.parse(str(config))
    assert spec.pretrained is None and spec.model_key.startswith("clip-emb-tiny-clip2-random0")
    a, b = load_model(spec), load_model(spec)
    np.testing.assert_allclose(a.encode_text(["cat"]), b.encode_text(["cat"]), atol=1e-6)
