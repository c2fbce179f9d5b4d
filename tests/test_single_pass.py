"""One backbone pass per image: with a trained head, training, the embeddings, the similarity
index and the near-duplicates (which judge on the plain backbone features) all read the one
plain-feature pass; none of them runs the backbone over the images again."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from embedding_assets.assets.search import near_duplicates, similarity_index
from embedding_assets.embedding import run as embedding_run
from resources.storage import DataPaths
from tests.helpers import resources
from tests.test_embedding_model import DIGITS, HEAD, _run, digits_catalog  # noqa: F401 - the fixture


def test_head_training_embeddings_index_and_duplicates_share_one_backbone_pass(
    data_dir: Path,
    digits_catalog: DataPaths,  # noqa: F811 - the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
):
    embedded: list[int] = []
    real = embedding_run.embed_paths

    def counting(backbone, paths, settings):  # the real embedder, counted
        embedded.append(len(paths))
        yield from real(backbone, paths, settings)

    monkeypatch.setattr(embedding_run, "embed_paths", counting)
    trained = _run(data_dir, {**HEAD, "epochs": 25, "embedding_size": 32, "hidden": 128})
    assert trained.success
    meta = trained.asset_materializations_for_node("embeddings")[0].metadata
    assert "-head-" in meta["model_key"].value, "the embeddings are the head's output"
    assert sum(embedded) == DIGITS, f"each image through the backbone once: {embedded}"

    search = dg.materialize(
        [similarity_index, near_duplicates],
        resources=resources(data_dir),
    )
    assert search.success
    dups = search.asset_materializations_for_node("near_duplicates")[0].metadata
    assert dups["judged_on"].value.startswith("plain backbone features")
    index = search.asset_materializations_for_node("similarity_index")[0].metadata
    assert index["dim"].value == 32 and index["vectors"].value == DIGITS
    assert sum(embedded) == DIGITS, f"no second backbone pass downstream: {embedded}"
