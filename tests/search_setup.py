"""A searchable data directory for the search tests: catalog, real embeddings, an index run."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import numpy as np
from PIL import Image

from embedding_assets.assets.search import (
    near_duplicates,
    published_index,
    similarity_index,
    similarity_index_recall,
)
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.embedding.embedder import EmbedParams
from embedding_assets.embedding.run import RunOptions, run_embeddings
from resources.storage import DataPaths
from tests.helpers import resources

PARAMS = EmbedParams("resnet18", None, 32)  # random weights: no download, brightness separates
LEVELS = (30, 128, 220)


def class_image(path: Path, level: int | tuple[int, int, int], seed: int, size: int = 24) -> Path:
    """A noisy flat image around one grey level (or one RGB colour): a level per class."""
    rng = np.random.default_rng(seed)
    arr = np.clip(rng.normal(level, 20, size=(size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def make_folder(root: Path) -> Path:
    """Three labeled classes of 8, one exact copy (a near-duplicate pair), one corrupt file."""
    for c, level in enumerate(LEVELS):
        for i in range(8):
            class_image(root / f"class_{c}" / f"img_{i}.png", level, c * 100 + i)
    shutil.copy(root / "class_0" / "img_0.png", root / "class_0" / "img_0_copy.png")
    (root / "class_1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


SEARCH_ASSETS = [similarity_index, similarity_index_recall, published_index, near_duplicates]


def materialize_index(
    data_dir: Path, tmp: Path, near_duplicates_config: dict | None = None, **config
) -> dg.ExecuteInProcessResult:
    """Build, check and publish the index, and find near-duplicates, in one run."""
    ops = {"similarity_index": {"config": config}}
    if near_duplicates_config:
        ops["near_duplicates"] = {"config": near_duplicates_config}
    return dg.materialize(
        SEARCH_ASSETS,
        resources=resources(data_dir),
        run_config={"ops": ops},
        raise_on_error=False,
    )


def searchable(data_dir: Path, tmp: Path) -> dg.ExecuteInProcessResult:
    """Scan, embed with the real embedder, build + check + publish the index and find the
    near-duplicates."""
    folder = make_folder(tmp / "images")
    paths = DataPaths(data_dir)
    scan_catalog(paths.catalog_db, folder)
    run_embeddings(paths, PARAMS, RunOptions(workers=0))
    return materialize_index(data_dir, tmp, {"threshold": 0.99999})
