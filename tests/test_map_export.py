"""The map export's nearest neighbours, from the neighbour graph: exact inner product over unit
vectors, never the image itself, exact copies first at distance 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedding_assets.analytics.map_export import nearest_neighbors
from embedding_assets.common.neighbor_graph import build_graph


def test_neighbors_leave_the_image_out_and_put_its_copy_first():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 16)).astype(np.float32)
    vectors[7] = vectors[3] * 2.0  # a copy (cosine 1): FAISS may rank it before image 3 itself
    ids = np.arange(100, 150, dtype=np.int64)
    near, dist = nearest_neighbors(build_graph(ids, vectors, "content"), k=5)
    assert near.shape == dist.shape == (50, 5)
    assert not (near == ids[:, None]).any(), "an image is not its own neighbour"
    assert near[3, 0] == 107 and near[7, 0] == 103 and dist[3, 0] < 1e-5
    assert (np.diff(dist, axis=1) >= -1e-6).all(), "nearest first"
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    brute = np.sort(1 - (unit @ unit.T) + np.eye(50) * 10, axis=1)[:, :5]
    np.testing.assert_allclose(dist, brute, atol=1e-5)  # as brute force (3 and 7 tie)
    assert abs(np.linalg.norm(vectors[7]) - 1) > 0.5, "the caller's vectors are left as given"


def test_emb_map_without_an_export_says_what_to_run(data_dir: Path):
    from typer.testing import CliRunner

    from embedding_assets.cli.app import app

    result = CliRunner().invoke(app, ["map"])
    assert result.exit_code == 2
    assert "emb run" in result.output and "map_export" in result.output
    assert "Traceback" not in result.output
