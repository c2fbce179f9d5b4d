"""kill -9 in the middle of an embedding run: the next run completes with every vector intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.embedding import sets as vectors
from embedding_assets.embedding.cache import EmbeddingCache
from embedding_assets.embedding.embedder import EmbedParams, embed_files
from embedding_assets.embedding.run import RunOptions, run_embeddings
from resources.storage import DataPaths
from tests.helpers import write_image

PARAMS = EmbedParams("resnet18", None, 128)  # big enough that a run lasts a few seconds
CHILD = """
import sys
from embedding_assets.embedding.embedder import EmbedParams
from embedding_assets.embedding.run import RunOptions, run_embeddings
from resources.storage import DataPaths
run_embeddings(
    DataPaths(sys.argv[1]), EmbedParams("resnet18", None, 128), RunOptions(batch_size=8, workers=1)
)
print("FINISHED")
"""


def _cached(paths: DataPaths, key: str) -> int:
    if not (paths.embeddings_lmdb / "data.mdb").exists():
        return 0
    with EmbeddingCache(paths.embeddings_lmdb, readonly=True) as cache:
        return cache.count(key)


def test_killed_run_resumes_with_intact_vectors(tmp_path: Path):
    folder = tmp_path / "imgs"
    for i in range(200):
        write_image(folder / f"{i:03d}.png", size=(20, 20), seed=i)
    paths = DataPaths(tmp_path / "data")
    scan_catalog(paths.catalog_db, folder)
    key = PARAMS.model_key()

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(paths.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while _cached(paths, key) < 16 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    assert child.returncode == -signal.SIGKILL, "the child must die mid-run, not finish"
    survived = _cached(paths, key)
    assert 16 <= survived < 200, survived

    summary = run_embeddings(paths, PARAMS, RunOptions(batch_size=32, workers=0))
    assert summary.from_cache == survived and summary.embedded == 200 - survived
    _, ids, X = vectors.load_current(paths.catalog_db)
    assert X.shape == (200, 512)
    assert np.isfinite(X).all() and np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-4)
    # Vectors written before the kill equal a fresh computation of the same images.
    sample = [str(folder / f"{i:03d}.png") for i in range(0, 200, 25)]
    order = {i: n for n, i in enumerate(ids.tolist())}
    import duckdb

    with duckdb.connect(str(paths.catalog_db), read_only=True) as con:
        id_of = dict(con.execute("SELECT path, image_id FROM images").fetchall())
    expected = embed_files(sample, PARAMS)
    got = X[[order[id_of[p]] for p in sample]]
    np.testing.assert_allclose(got, expected, atol=1e-4)
