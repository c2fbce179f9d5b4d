"""The neighbour graph: exact when small, an IVF search with its recall measured when large,
stored per embedding set and refused when it is of other embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedding_assets.common.neighbor_graph import NeighborGraph, build_graph, sampled_recall
from embedding_assets.common.neighbors import knn, normalize


def clustered(n: int, d: int = 32, centres: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centres, d))
    return (middle[rng.integers(0, centres, n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def test_small_sets_are_exact_and_never_list_the_image_itself():
    x = clustered(300)
    graph = build_graph(np.arange(1000, 1300), x, "v1")
    sims, rows = knn(x, None, 20)
    assert graph.method == "exact" and graph.recall == 1.0
    np.testing.assert_array_equal(graph.neighbors, rows)
    np.testing.assert_allclose(graph.similarities, sims, atol=1e-6)
    assert not (graph.neighbors == np.arange(300)[:, None]).any()
    s10, r10 = graph.first(10)
    assert s10.shape == r10.shape == (300, 10)
    with pytest.raises(ValueError, match="more than the graph's 20"):
        graph.first(21)


def test_large_sets_are_approximate_with_their_recall_measured():
    x = clustered(3000, d=300)  # searched in 256 principal components, re-ranked in all 300
    graph = build_graph(np.arange(3000), x, "v1", exact_max=1000)
    assert graph.method == "ivf"
    truth = sampled_recall(normalize(x), graph.neighbors, 10)
    assert graph.recall == pytest.approx(truth)
    assert 0.8 <= graph.recall < 1.0 or graph.recall == 1.0
    # an IVF list search finds neighbours that really are near: similarities as exact ones
    exact_sims, _ = knn(x, None, 20)
    assert np.nanmean(graph.similarities[:, 0]) >= np.nanmean(exact_sims[:, 0]) - 0.02
    assert not (graph.neighbors == np.arange(3000)[:, None]).any()
    # the similarities are the exact cosines of the listed neighbours, nearest first
    unit = normalize(x)
    listed = np.einsum("nd,nkd->nk", unit, unit[graph.neighbors])
    np.testing.assert_allclose(graph.similarities, listed, atol=1e-5)
    assert (np.diff(graph.similarities, axis=1) <= 1e-6).all()
    broken = sampled_recall(normalize(x), np.roll(graph.neighbors, 1, axis=0), 10)
    assert broken < 0.2, "the recall measure tells a wrong graph apart"


def test_stored_graph_is_read_back_only_for_its_own_embeddings(tmp_path: Path):
    graph = build_graph(np.arange(50), clustered(50), "v1")
    path = tmp_path / "graphs" / "key.npz"
    graph.save(path)
    back = NeighborGraph.load(path, "v1")
    np.testing.assert_array_equal(back.neighbors, graph.neighbors)
    assert (back.method, back.recall, back.content) == ("exact", 1.0, "v1")
    with pytest.raises(LookupError, match="of other embeddings.*neighbor_graph"):
        NeighborGraph.load(path, "v2")
    path.write_bytes(b"not a graph")
    with pytest.raises(LookupError, match="no readable neighbour graph.*emb run"):
        NeighborGraph.load(path, "v1")


def test_a_grown_graph_is_the_graph_of_the_grown_set():
    from embedding_assets.common.neighbor_graph import grow_graph

    x = clustered(600, seed=3)
    ids = np.arange(600) * 2  # ids as the catalog gives them: not positions
    old = build_graph(ids[:560], x[:560], "v1")
    # the set as embeddings writes it: new rows mixed in by image id
    order = np.random.default_rng(0).permutation(600)
    grown = grow_graph(old, ids[order], x[order], "v2")
    fresh = build_graph(ids[order], x[order], "v2")
    assert grown is not None and grown.content == "v2"
    np.testing.assert_array_equal(grown.ids, fresh.ids)
    np.testing.assert_allclose(grown.similarities, fresh.similarities, atol=1e-5)
    same = (grown.neighbors == fresh.neighbors).mean()
    assert same > 0.99, same  # the rest are ties in similarity


def test_a_graph_does_not_grow_over_removed_changed_or_many_rows():
    from embedding_assets.common.neighbor_graph import grow_graph

    x = clustered(300, seed=4)
    ids = np.arange(300)
    old = build_graph(ids[:280], x[:280], "v1")
    assert grow_graph(old, ids[1:], x[1:], "v2") is None  # image 0 was removed
    changed = x.copy()
    changed[5] += 1
    assert grow_graph(old, ids, changed, "v2") is None  # image 5's vector changed
    small = build_graph(ids[:200], x[:200], "v1")
    assert grow_graph(small, ids, x, "v2") is None  # 100 new of 300: built again
