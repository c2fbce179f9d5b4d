"""The CIFAR-10 test folder with injected faults that benchmarks/curation.py measures, built
once under benchmarks/cache/ and run through the platform's own catalog (which takes the
quality measures and perceptual hashes while decoding) and embeddings.

Faults in files: 50 exact duplicate files (byte copies) and 50 near copies (resized 32 -> 48
px, bicubic, saved as JPEG q70), each next to its original in the same class folder. Label
flips, blur and darkening are injected by the benchmark itself (in labels / decoded pixels).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.common import CACHE, require_cifar

FOLDER = CACHE / "curation_faults"
EXACT, NEAR = 50, 50
NEAR_SIDE, NEAR_QUALITY = 48, 70


@dataclass(frozen=True)
class Faults:
    images: Path  # the folder scanned
    data: Path  # its data folder (catalog.duckdb, embeddings)
    exact: list[tuple[str, str]]  # (original, copy) file paths
    near: list[tuple[str, str]]


def build(seed: int = 7) -> Faults:
    """The folder (made once; the copies are chosen by `seed`)."""
    src = require_cifar()
    images, data = FOLDER / "images", FOLDER / "data"
    files = sorted(src.glob("*/*.jpg"))
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(files), EXACT + NEAR, replace=False)
    exact, near = [], []
    for rank, i in enumerate(picked):
        original = images / files[i].parent.name / files[i].name
        kind = "exact" if rank < EXACT else "near"
        copy = original.with_name(f"{kind}_copy_of_{files[i].stem}.jpg")
        (exact if kind == "exact" else near).append((str(original), str(copy)))
    if not (FOLDER / "done").exists():
        for f in files:
            target = images / f.parent.name / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target)
        for original, copy in exact:
            shutil.copy(original, copy)
        for original, copy in near:
            with Image.open(original) as im:
                im.convert("RGB").resize((NEAR_SIDE, NEAR_SIDE), Image.Resampling.BICUBIC).save(
                    copy, "JPEG", quality=NEAR_QUALITY
                )
        (FOLDER / "done").write_text("ok\n")
    return Faults(images, data, exact, near)


def embedded(model: str = "efficientnet_lite0", weights: str = "DEFAULT", size: int = 0):
    """(faults, ids, vectors, paths by id): the folder scanned and embedded (cached)."""
    from embedding_assets.catalog.scan import scan_catalog
    from embedding_assets.embedding import sets
    from embedding_assets.embedding.embedder import EmbedParams
    from embedding_assets.embedding.run import run_embeddings
    from resources.duckdb_store import connect
    from resources.storage import DataPaths

    faults = build()
    paths = DataPaths(faults.data)
    scan_catalog(paths.catalog_db, faults.images)
    summary = run_embeddings(paths, EmbedParams(model, weights, size))
    ids, x = sets.read_parquet(summary.parquet_path)
    with connect(paths.catalog_db, read_only=True) as con:
        path_of = dict(con.execute("SELECT image_id, path FROM images").fetchall())
    return faults, paths, ids, x, path_of


if __name__ == "__main__":
    import time

    t = time.perf_counter()
    f, _, ids, x, _ = embedded()
    print(len(ids), x.shape, f"{time.perf_counter() - t:.0f} s")
