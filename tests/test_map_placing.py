"""A few new images are placed on the maps fitted before, by the fitted models' transform; the
maps are fitted again when the settings or a vector changed, or too many images were placed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from embedding_assets.analytics.placing import MAX_PLACED_SHARE, Fitted, place_new
from embedding_assets.analytics.projection import ProjectionParams, project


def blobs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 24)) * 4
    return (centres[np.arange(n) % 4] + rng.normal(size=(n, 24))).astype(np.float32)


def fitted_maps(ids: np.ndarray, x: np.ndarray) -> tuple[Fitted, dict[str, np.ndarray]]:
    params = ProjectionParams(perplexity=10, pca_dims=8, n_jobs=1)
    made = {m: project(x, m, params) for m in ("pca", "tsne")}
    placers = {m: r.placer for m, r in made.items()}
    return Fitted.of("v1", ids, x, placers), {m: r.coords for m, r in made.items()}


def test_new_images_are_placed_and_the_old_keep_their_coordinates(tmp_path: Path):
    x = blobs(200)
    ids = np.arange(1000, 1200)
    fitted, maps = fitted_maps(ids, x)
    fitted.save(tmp_path / "maps.pkl")
    fitted = Fitted.load(tmp_path / "maps.pkl")
    # five new images: copies of images 0..4 with a little noise, at the end of the set
    grown = np.concatenate([x, x[:5] + 0.01])
    grown_ids = np.concatenate([ids, np.arange(5000, 5005)])
    placed = place_new(fitted, "v1", grown_ids, grown, lambda: (ids, maps))
    assert (
        placed is not None
        and placed.images == 5
        and "placed 5 new images by the models" in placed.note
    )
    for method, coords in placed.maps.items():
        np.testing.assert_array_equal(coords[:200], maps[method])
        spread = np.ptp(maps[method], axis=0).max()
        # each copy lands beside its original (within 10 % of the map's extent)
        assert np.linalg.norm(coords[200:] - maps[method][:5], axis=1).max() < 0.1 * spread
    assert placed.fitted.fitted == 200 and len(placed.fitted.ids) == 205


def test_maps_are_fitted_again_when_placing_would_mislead(tmp_path: Path):
    x = blobs(200)
    ids = np.arange(200)
    fitted, _ = fitted_maps(ids, x)
    assert fitted.new_rows("v1", ids, x).size == 0  # nothing new
    assert fitted.new_rows("v2", ids, x) is None  # other settings
    changed = x.copy()
    changed[7] += 1.0
    assert fitted.new_rows("v1", ids, changed) is None  # an image's vector changed
    many = int(MAX_PLACED_SHARE * 260) + 1
    grown = np.concatenate([x, blobs(many, seed=1)])
    grown_ids = np.arange(200 + many)
    assert fitted.new_rows("v1", grown_ids, grown) is None  # too many to place
    assert fitted.new_rows("v1", grown_ids[:210], grown[:210]).tolist() == list(range(200, 210))
    assert place_new(None, "v1", ids, x, lambda: (ids, {})) is None  # nothing fitted yet


def test_a_damaged_record_means_fit_again(tmp_path: Path):
    (tmp_path / "maps.pkl").write_bytes(b"\x80\x04not a pickle")
    assert Fitted.load(tmp_path / "maps.pkl") is None
    assert Fitted.load(tmp_path / "missing.pkl") is None
