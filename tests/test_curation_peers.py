"""Curation as its peers do it: near-duplicates that survive resizing and recompression
(perceptual hashes taken while the catalog decodes, with the embedding's neighbours, each pair
with its reason), outliers as a flag, and checks of the labeled set as a whole."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image, ImageDraw

from embedding_assets.assets.search import near_duplicates
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.curation.duplicates import Fingerprints, hash_pairs
from embedding_assets.embedding.run import RunOptions, run_embeddings
from resources.duckdb_store import connect
from resources.storage import DataPaths
from tests.helpers import resources
from tests.search_setup import PARAMS


def scene(path: Path, seed: int) -> Path:
    """A small photo-like picture: a smooth gradient with a few shapes, different per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32]
    angle = rng.uniform(0, np.pi)
    ramp = (np.cos(angle) * x + np.sin(angle) * y) * rng.uniform(2, 6)
    arr = np.stack([(ramp + rng.uniform(0, 255)) % 256 for _ in range(3)], axis=-1)
    image = Image.fromarray(arr.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = rng.integers(0, 24, 2)
        w, h = rng.integers(4, 12, 2)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.ellipse([x0, y0, x0 + w, y0 + h], fill=fill)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def embedded(data_dir: Path, folder: Path) -> DataPaths:
    """`folder` catalogued and embedded (random-weight ResNet-18 at 32 px) into `data_dir`."""
    paths = DataPaths(data_dir)
    scan_catalog(paths.catalog_db, folder)
    run_embeddings(paths, PARAMS, RunOptions(workers=0))
    return paths


def materialize(asset: dg.AssetsDefinition, data_dir: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [asset],
        resources=resources(data_dir),
        raise_on_error=False,
    )


def test_resized_recompressed_copies_are_found_by_their_hashes(data_dir: Path, tmp_path: Path):
    folder = tmp_path / "photos"
    originals = [scene(folder / f"scene_{i}.png", seed=i) for i in range(12)]
    shutil.copy(originals[0], folder / "exact_copy.png")
    with Image.open(originals[1]) as im:
        im.resize((48, 48), Image.Resampling.BICUBIC).save(folder / "near_copy.jpg", quality=70)
    paths = embedded(data_dir, folder)
    result = materialize(near_duplicates, data_dir)
    assert result.success
    with connect(paths.catalog_db, read_only=True) as con:
        rows = con.execute(
            "SELECT a.path, b.path, d.reason, d.hash_distance, d.group_id, d.image_id_a "
            "FROM near_duplicates d JOIN images a ON a.image_id = d.image_id_a "
            "JOIN images b ON b.image_id = d.image_id_b"
        ).fetchall()
    found = {frozenset((Path(a).name, Path(b).name)): (r, h, g == i) for a, b, r, h, g, i in rows}
    exact, near = (
        frozenset(("scene_0.png", "exact_copy.png")),
        frozenset(("scene_1.png", "near_copy.jpg")),
    )
    assert set(found) == {exact, near}  # and no pair of different scenes
    assert found[exact] == ("same_bytes", 0, True)
    reason, bits, grouped = found[near]
    assert reason == "same_hash" and 0 <= bits <= 2 and grouped
    meta = result.asset_materializations_for_node("near_duplicates")[0].metadata
    assert "same_hash" in meta["pairs_by_reason"].value


def test_hash_pairs_are_exact_within_the_bit_limits():
    rng = np.random.default_rng(0)
    phash = rng.integers(0, 2**63, 500, dtype=np.uint64)
    dhash = rng.integers(0, 2**63, 500, dtype=np.uint64)
    phash[1], dhash[1] = phash[0] ^ np.uint64(0b11), dhash[0] ^ np.uint64(0b111)  # 2 and 3 bits
    phash[3], dhash[3] = phash[2] ^ np.uint64(0b111), dhash[2]  # pHash 3 bits: too far
    phash[5], dhash[5] = phash[4], dhash[4] ^ np.uint64(0b1111)  # dHash 4 bits: too far
    prints = Fingerprints([""] * 500, phash, dhash, np.ones(500, bool))
    a, b = hash_pairs(np.arange(100, 600), prints, max_phash=2, max_dhash=3)
    assert list(zip(a.tolist(), b.tolist(), strict=True)) == [(100, 101)]
    with pytest.raises(ValueError, match="0 to 3 bits"):
        hash_pairs(np.arange(500), prints, max_phash=4)


def test_a_lone_image_among_dense_ones_is_an_outlier():
    from embedding_assets.common.neighbors import knn
    from embedding_assets.curation.outliers import find_outliers

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    dense = np.concatenate([c + 0.05 * rng.normal(size=(50, 16)) for c in centres])
    lone = rng.normal(size=(1, 16)) * 3
    found = find_outliers(knn(np.concatenate([dense, lone]), None, 10)[0], z=3.5)
    assert found.flagged[-1] and found.flagged[:-1].mean() <= 0.05  # a Gaussian tail, not more
    assert found.distance[-1] == found.distance.max() > found.threshold
    assert not find_outliers(knn(dense[:2], None, 10)[0]).flagged.any()  # too few to tell apart


def test_outliers_asset_flags_the_odd_image(data_dir: Path, tmp_path: Path):
    from embedding_assets.assets.curation import outliers

    folder = tmp_path / "photos"
    folder.mkdir()
    with Image.open(scene(tmp_path / "base.png", seed=3)) as im:
        base = np.asarray(im, np.int16)
    rng = np.random.default_rng(5)
    for i in range(24):  # one scene, each copy with its own faint noise: all equally alike
        alike = np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(alike).save(folder / f"alike_{i}.png")
    odd = np.random.default_rng(9).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(odd).save(folder / "noise.png")
    paths = embedded(data_dir, folder)
    from embedding_assets.assets.neighbors import neighbor_graph

    assert materialize(neighbor_graph, data_dir).success
    result = materialize(outliers, data_dir)
    assert result.success
    with connect(paths.catalog_db, read_only=True) as con:
        rows = con.execute(
            "SELECT i.path, o.flagged FROM outliers o JOIN images i USING (image_id) "
            "ORDER BY o.distance DESC"
        ).fetchall()
    assert Path(rows[0][0]).name == "noise.png" and rows[0][1]  # furthest, and flagged
    assert sum(flag for _, flag in rows[1:]) <= 2  # of 24 alike (random-weight features)
    meta = result.asset_materializations_for_node("outliers")[0].metadata
    assert meta["flagged"].value >= 1 and "noise.png" in meta["furthest"].value


def test_dataset_checks_warn_of_a_rare_class(data_dir: Path, tmp_path: Path):
    from embedding_assets.assets.curation import dataset_checks
    from embedding_assets.curation.dataset_checks import dataset_checks as checks

    folder = tmp_path / "photos"
    for name, n in (("common", 12), ("usual", 11), ("rare", 2)):
        for i in range(n):
            scene(folder / name / f"{i}.png", seed=len(name) * 100 + i)
    scan_catalog(DataPaths(data_dir).catalog_db, folder)  # folder names are the labels
    result = materialize(dataset_checks, data_dir)
    assert result.success
    with connect(DataPaths(data_dir).catalog_db, read_only=True) as con:
        rows = con.execute(
            "SELECT check_name, subject, value, warning FROM dataset_checks ORDER BY 1, 2"
        ).fetchall()
    assert rows == [
        ("class_imbalance", "rare", 2 / 11, True),
        ("label_counts", "common", 12.0, False),
        ("label_counts", "rare", 2.0, True),
        ("label_counts", "usual", 11.0, False),
    ]
    assert (
        result.asset_materializations_for_node("dataset_checks")[0].metadata["warnings"].value == 2
    )
    assert checks([])[0]["warning"] and "no labels yet" in checks([])[0]["detail"]


def test_drift_null_on_real_photos_quiet_for_like_batches_fires_for_a_new_class(cifar_dir: Path):
    """Real CIFAR-10 photos, default model: batches like the reference are not called drifted
    (their permutation p-values stay above alpha, effects near zero), a batch of which 40 % is
    a class the reference never saw (trucks, next to the automobiles it has) is."""
    from embedding_assets.curation.drift import drift_test, fit_reference
    from embedding_assets.embedding.embedder import EmbedParams, embed_files

    classes = sorted(p for p in cifar_dir.iterdir() if p.is_dir())
    seen, unseen = classes[:-1], classes[-1]
    files = {c.name: sorted(c.glob("*.jpg"))[:60] for c in seen}
    reference = [str(p) for c in seen for p in files[c.name][:30]]
    like = [
        [str(p) for c in seen for p in files[c.name][30 + 10 * b : 40 + 10 * b]] for b in (0, 1)
    ]
    new = like[1][:72] + [str(p) for p in sorted(unseen.glob("*.jpg"))[:48]]
    vectors = embed_files(reference + like[0] + like[1] + new, EmbedParams())
    ref = fit_reference(vectors[: len(reference)])
    start = len(reference)
    clean = [drift_test(ref, vectors[start + 90 * b : start + 90 * (b + 1)]) for b in (0, 1)]
    novel = drift_test(ref, vectors[start + 180 :])
    assert [r.drifted for r in clean] == [False, False], [(r.p_value, r.effect_size) for r in clean]
    assert min(r.p_value for r in clean) > 0.05 and max(r.effect_size for r in clean) < 0.05
    assert novel.drifted and novel.p_value < 0.01 and novel.effect_size > 0.05, novel.p_value
