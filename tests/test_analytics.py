"""Projections, clusters and anomaly scores: the plain functions on synthetic matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from embedding_assets.analytics.anomaly import AnomalyParams, score, top_fraction
from embedding_assets.analytics.clustering import ClusterParams, cluster, parse_k
from embedding_assets.analytics.maps import map_figure, write_html_map
from embedding_assets.analytics.projection import (
    ProjectionParams,
    project,
    safe_n_neighbors,
    safe_perplexity,
)
from embedding_assets.common.figures import png_bytes, png_markdown


def blobs(n_per: int = 40, k: int = 3, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 5
    truth = np.repeat(np.arange(k), n_per)
    x = centres[truth] + rng.normal(scale=0.3, size=(len(truth), d))
    return x.astype(np.float32), truth


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    from sklearn.metrics import adjusted_rand_score

    return adjusted_rand_score(a, b) == 1.0


def test_tiny_inputs_get_safe_parameters():
    assert safe_perplexity(30, 28) < 27 / 3
    assert safe_perplexity(30, 1000) == 30
    assert safe_n_neighbors(15, 10) == 9
    assert safe_n_neighbors(15, 1000) == 15


@pytest.mark.parametrize("method", ["pca", "umap", "tsne"])
def test_projection_of_a_tiny_input_is_finite_and_says_what_it_clamped(method):
    x, _ = blobs(n_per=8, d=64)  # 24 rows, 64 dims
    result = project(x, method, ProjectionParams(pca_dims=10))
    assert result.coords.shape == (24, 2)
    assert np.isfinite(result.coords).all()
    if method == "tsne":
        assert any("perplexity 30 ->" in note for note in result.notes)
    if method == "umap":
        assert result.params["n_neighbors"] == 15
    if method != "pca":
        assert "PCA 64 -> 10 dims first" in result.notes


def test_large_inputs_fit_on_a_sample_and_transform_the_rest():
    x, truth = blobs(n_per=100, d=8)
    result = project(x, "tsne", ProjectionParams(max_fit_samples=120))
    assert result.fitted_on == 120
    assert np.isfinite(result.coords).all()
    assert any("transformed the other 180" in note for note in result.notes)
    # the transformed rows land next to their own blob: nearest centroid in 2-D recovers it
    centres = np.stack([result.coords[truth == c].mean(axis=0) for c in range(3)])
    nearest = np.argmin(((result.coords[:, None] - centres) ** 2).sum(-1), axis=1)
    assert (nearest == truth).mean() > 0.95


def test_projection_rejects_bad_input_with_a_clear_message():
    with pytest.raises(ValueError, match="not one of pca, umap, tsne"):
        project(np.zeros((10, 4), np.float32), "mds", ProjectionParams())
    with pytest.raises(ValueError, match="at least 5"):
        project(np.zeros((3, 4), np.float32), "pca", ProjectionParams())
    bad = np.ones((10, 4), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        project(bad, "pca", ProjectionParams())


def test_auto_k_finds_the_blobs():
    x, truth = blobs(k=4)
    result = cluster(x, ClusterParams(k="auto", k_min=2, k_max=8))
    assert result.k == 4
    assert set(result.sweep) == set(range(2, 9))
    assert max(result.sweep, key=result.sweep.get) == 4
    assert same_partition(result.labels, truth)
    assert sorted(result.sizes.values()) == [40, 40, 40, 40]
    assert result.silhouette > 0.8


def test_faiss_path_gives_the_same_partition_as_scikit_learn():
    x, truth = blobs(k=3)
    small = cluster(x, ClusterParams(k="3"))
    large = cluster(x, ClusterParams(k="3", faiss_threshold=1))
    assert small.backend == "scikit-learn minibatch" and large.backend == "faiss"
    assert same_partition(small.labels, truth) and same_partition(large.labels, truth)


def test_k_is_clamped_to_n_and_bad_k_is_explained():
    x, _ = blobs(n_per=2, k=2)
    assert cluster(x, ClusterParams(k="10")).k == 4
    assert parse_k("AUTO") is None and parse_k(7) == 7
    for bad in ("ten", "0", "-3", "2.5"):
        with pytest.raises(ValueError, match="neither `auto` nor a positive integer"):
            parse_k(bad)
    with pytest.raises(ValueError, match="k_min"):
        cluster(x, ClusterParams(k="auto", k_min=5, k_max=3))


def test_isolation_forest_flags_the_planted_outliers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    x[:5] += 12  # five far-away points
    result = score(x, AnomalyParams(flag_fraction=0.05, n_jobs=1))
    assert result.flagged.sum() == math.ceil(0.05 * 400)
    assert result.flagged[:5].all()
    assert set(np.argsort(-result.scores)[:5]) == set(range(5))
    assert np.isfinite(result.scores).all()
    with pytest.raises(ValueError, match="flag_fraction"):
        score(x, AnomalyParams(flag_fraction=5))


def test_top_fraction_flags_exactly_the_top_scores():
    scores = np.array([0.1, 0.9, 0.5, 0.7], np.float32)
    assert top_fraction(scores, 0.5).tolist() == [False, True, False, True]
    assert not top_fraction(scores, 0).any()
    assert top_fraction(scores, 1).all()


def test_png_helpers_make_real_images():
    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    data = png_bytes(fig)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    md = png_markdown(data, "line")
    assert md.startswith("![line](data:image/png;base64,iVBORw0KGgo")
    assert png_markdown(fig).startswith("![plot](data:image/png;base64,")


def test_map_figure_has_a_panel_per_colouring():
    coords = np.random.default_rng(0).normal(size=(30, 2))
    labels = ["a", None, "b"] * 10
    assert len(map_figure(coords, labels, np.arange(30) % 3, np.arange(30) < 2, "t").axes) == 3
    assert len(map_figure(coords, labels, None, None, "t").axes) == 1


def test_html_map_embeds_the_points_and_cannot_be_broken_out_of(tmp_path):
    coords = np.arange(8, dtype=np.float32).reshape(4, 2)
    points = {
        "path": ["/a.png", "/b</script><b>.png", "/c.png", "/d.png"],
        "label": [1, None, 2, 2],
    }
    out = write_html_map(tmp_path / "map.html", {"pca": coords, "umap": coords}, points, "t<x>")
    html = out.read_text()
    assert html.count("</script>") == 1  # only the template's own closing tag
    assert '"pca":[[0.0,1.0]' in html and "/b<\\/script>" in html
    assert "<title>t&lt;x&gt;</title>" in html
    assert "__DATA__" not in html
