"""The embedding pipeline: odd image modes, content-keyed caching, failures, Dagster checks."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pytest
from PIL import Image

from embedding_assets.assets.catalog import image_catalog
from embedding_assets.assets.embedding import embeddings
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.embedding import sets as vectors
from embedding_assets.embedding.embedder import EmbedParams, embed_files, embed_pil
from embedding_assets.embedding.run import RunOptions, run_embeddings
from resources.gpu import GPUResource
from resources.storage import DataPaths, StorageResource
from tests.helpers import write_image

PARAMS = EmbedParams("resnet18", None, 32)


@pytest.fixture
def odd_modes(tmp_path: Path) -> Path:
    root = tmp_path / "modes"
    write_image(root / "rgb.png", seed=1)
    write_image(root / "grey.png", mode="L", seed=2)
    write_image(root / "alpha.png", mode="RGBA", seed=3)
    write_image(root / "deep.tif", mode="I;16", fmt="TIFF", seed=4)
    Image.new("CMYK", (20, 12), (10, 20, 30, 0)).save(root / "cmyk.jpg")
    Image.new("P", (9, 30), 3).save(root / "palette.gif")
    Image.new("1", (17, 17), 1).save(root / "bilevel.bmp")
    (root / "copy.png").write_bytes((root / "rgb.png").read_bytes())
    return root


def test_every_mode_embeds_once_per_content(odd_modes: Path, tmp_path: Path):
    paths = DataPaths(tmp_path / "data")
    scan_catalog(paths.catalog_db, odd_modes)
    first = run_embeddings(paths, PARAMS, RunOptions(workers=0))
    assert first.usable == 8 and first.embedded == 7, "the copy shares its original's vector"
    assert not first.failed
    emb_set, ids, X = vectors.load_current(paths.catalog_db)
    assert X.shape == (8, 512) and np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-4)
    assert emb_set.model_key == PARAMS.model_key()

    again = run_embeddings(paths, PARAMS, RunOptions(workers=0))
    assert (again.embedded, again.from_cache, again.parquet_rewritten) == (0, 8, False)

    with duckdb.connect() as con:
        n, d = con.execute(
            f"SELECT count(*), max(len(vector)) FROM read_parquet('{emb_set.parquet_path}')"
        ).fetchone()
    assert (n, d) == (8, 512)


def test_query_helpers_match_the_pipeline(odd_modes: Path, tmp_path: Path):
    paths = DataPaths(tmp_path / "data")
    scan_catalog(paths.catalog_db, odd_modes)
    run_embeddings(paths, PARAMS, RunOptions(workers=0))
    _, ids, X = vectors.load_current(paths.catalog_db)
    with duckdb.connect(str(paths.catalog_db), read_only=True) as con:
        path_of = dict(con.execute("SELECT image_id, path FROM images").fetchall())
    files = [path_of[i] for i in ids.tolist()]
    np.testing.assert_allclose(embed_files(files, PARAMS.as_dict()), X, atol=1e-5)
    pil = [Image.open(f) for f in files]
    np.testing.assert_allclose(embed_pil(pil, PARAMS), X, atol=1e-5)
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    with pytest.raises(ValueError, match="bad.png"):
        embed_files([str(bad)], PARAMS)


def test_file_broken_after_cataloging_is_marked_not_lost(labeled_folder: Path, tmp_path: Path):
    paths = DataPaths(tmp_path / "data")
    scan_catalog(paths.catalog_db, labeled_folder)
    victim = labeled_folder / "class_0" / "img_3.png"
    victim.write_bytes(victim.read_bytes()[:40])  # truncated after the scan, without a rescan
    summary = run_embeddings(paths, PARAMS, RunOptions(workers=0))
    assert [Path(p).name for p, _ in summary.failed] == ["img_3.png"]
    with duckdb.connect(str(paths.catalog_db), read_only=True) as con:
        status, error = con.execute(
            "SELECT status, error FROM images WHERE path = ?", [str(victim)]
        ).fetchone()
    assert status == "corrupt" and "embedding time" in error
    _, ids, X = vectors.load_current(paths.catalog_db)
    assert len(ids) == 27


def test_file_unreadable_at_embedding_time_is_read_again_by_the_next_scan(
    labeled_folder: Path, tmp_path: Path
):
    """A read failure (here a file moved away; on a store, missing credentials or the network)
    is not a bad image: `unreadable`, which the next scan probes again, not `corrupt`."""
    paths = DataPaths(tmp_path / "data")
    scan_catalog(paths.catalog_db, labeled_folder)
    victim = labeled_folder / "class_1" / "img_4.png"
    aside = victim.rename(tmp_path / "aside.png")
    summary = run_embeddings(paths, PARAMS, RunOptions(workers=0))
    assert [Path(p).name for p, _ in summary.failed] == ["img_4.png"]
    query = "SELECT status, error FROM images WHERE path = ?"
    with duckdb.connect(str(paths.catalog_db), read_only=True) as con:
        status, error = con.execute(query, [str(victim)]).fetchone()
    assert status == "unreadable" and "cannot read at embedding time" in error

    aside.rename(victim)  # back, unchanged: same size and modification time
    assert scan_catalog(paths.catalog_db, labeled_folder).changed == 1
    with duckdb.connect(str(paths.catalog_db), read_only=True) as con:
        assert con.execute(query, [str(victim)]).fetchone() == ("ok", None)
    assert run_embeddings(paths, PARAMS, RunOptions(workers=0)).usable == 28


def test_all_images_failing_at_embedding_time_is_one_clear_error(
    labeled_folder: Path, tmp_path: Path
):
    paths = DataPaths(tmp_path / "data")
    scan_catalog(paths.catalog_db, labeled_folder)
    for f in labeled_folder.rglob("*.png"):
        f.unlink()
    with pytest.raises(ValueError, match=r"all 28 usable images failed at embedding time"):
        run_embeddings(paths, PARAMS, RunOptions(workers=0))


def test_float16_storage_gets_its_own_key(labeled_folder: Path, tmp_path: Path):
    paths = DataPaths(tmp_path / "data")
    scan_catalog(paths.catalog_db, labeled_folder)
    half = EmbedParams("resnet18", None, 32, store_dtype="float16")
    assert half.model_key() != PARAMS.model_key()
    summary = run_embeddings(paths, half, RunOptions(workers=0))
    assert summary.embedded == 28
    _, _, X = vectors.load_current(paths.catalog_db)
    assert X.dtype == np.float32 and np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-2)


def _materialize(data_dir: Path, image_dir: Path, lock_dir: Path, **emb_config):
    return dg.materialize(
        [image_catalog, embeddings],
        resources={
            "storage": StorageResource(data_dir=str(data_dir)),
            "gpu": GPUResource(device="auto", lock_dir=str(lock_dir)),
        },
        run_config={
            "ops": {
                "image_catalog": {"config": {"image_dir": str(image_dir)}},
                "embeddings": {"config": {"image_size": 32, "workers": 1, **emb_config}},
            }
        },
        raise_on_error=False,
    )


def test_asset_materializes_with_passing_checks(data_dir: Path, labeled_folder, tmp_path):
    result = _materialize(data_dir, labeled_folder, tmp_path / "locks")
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "vectors_finite": True,
        "dimension_as_expected": True,
        "unit_norm": True,
        "one_vector_per_usable_image": True,
    }
    meta = result.asset_materializations_for_node("embeddings")[0].metadata
    # the default backbone: pretrained EfficientNet-Lite0 from its package, 1280-d
    assert meta["embedded_now"].value == 28 and meta["dimension"].value == 1280
    assert meta["model_key"].value.startswith("efficientnet_lite0-packaged-")
    assert meta["device"].value.startswith("cpu")

    again = _materialize(data_dir, labeled_folder, tmp_path / "locks")
    meta = again.asset_materializations_for_node("embeddings")[0].metadata
    assert meta["embedded_now"].value == 0 and meta["from_cache"].value == 28


def test_bad_config_fails_the_step_with_the_fix(data_dir: Path, labeled_folder, tmp_path):
    result = _materialize(data_dir, labeled_folder, tmp_path / "locks", model="resnet19")
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert "neither a torchvision classification model nor a timm model" in str(
        failure.step_failure_data.error
    )
