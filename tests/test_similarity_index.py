"""Index choice, tuning, kNN and near-duplicates on real FAISS; the asset and its blocking check."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import faiss
import numpy as np
import pytest

from embedding_assets.assets import search as search_assets
from embedding_assets.common.fingerprints import SKIPPED
from embedding_assets.curation import duplicates
from embedding_assets.search import faiss_index as similarity
from embedding_assets.search.searcher import Searcher
from embedding_assets.search.versions import latest_index, published_index
from resources.duckdb_store import connect
from resources.storage import DataPaths
from tests.helpers import resources
from tests.search_setup import materialize_index, searchable


def clustered(n: int, d: int, centers: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around `centers` random directions, like embeddings of a few classes."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, d)).astype(np.float32)
    x = c[rng.integers(0, centers, n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_choose_factory_moves_from_exact_to_ivf_to_pq():
    gib = 2**30
    assert similarity.choose_factory(5_000, 512, 4 * gib) == "Flat"
    assert similarity.choose_factory(10_000, 1280, 4 * gib) == "IVF256,Flat"  # 12.8M floats
    assert similarity.choose_factory(1_000_000, 64, 4 * gib) == "IVF4096,Flat"
    assert similarity.choose_factory(5_000_000, 64, 4 * gib) == "IVF8192,Flat"
    pq = similarity.choose_factory(50_000_000, 64, 1 * gib)
    assert pq.startswith("IVF") and "PQ" in pq
    m = int(pq.split("PQ")[1].split("x")[0])
    assert 64 % m == 0 and 50_000_000 * (m + 8) <= 1 * gib
    assert similarity.nlist_for(1_000) * 39 <= 1_000


def test_tuning_raises_nprobe_until_recall_target():
    x = clustered(20_000, 32, 50)
    ids = np.arange(20_000, dtype=np.int64) * 7 + 3  # ids are not row numbers
    built = similarity.build_index(x, ids, "IVF128,Flat", train_sample=10_000)
    q = similarity.sample_queries(x, 200, seed=0)
    truth = similarity.exact_topk(x, ids, q, 5)
    low = similarity.recall_at_k(similarity.search(built.index, q, 5, {"nprobe": 1})[1], truth)
    similarity.tune(built, q, truth, 0.97)
    assert built.search_params["nprobe"] > 1
    assert built.tune_recall >= 0.97 > low
    found = similarity.search(built.index, q, 5, built.search_params)[1]
    assert set(found.ravel()) <= set(ids.tolist())


def test_hnsw_tunes_ef_search_and_flat_is_exact():
    x = clustered(5_000, 16, 20)
    ids = np.arange(5_000, dtype=np.int64) + 100
    q = similarity.sample_queries(x, 100, seed=1)
    truth = similarity.exact_topk(x, ids, q, 5)
    hnsw = similarity.tune(similarity.build_index(x, ids, "HNSW16,Flat"), q, truth, 0.99)
    assert "efSearch" in hnsw.search_params and hnsw.tune_recall >= 0.99
    flat = similarity.tune(similarity.build_index(x, ids, "Flat"), q, truth, 0.99)
    assert flat.tune_recall == 1.0 and flat.search_params == {}


def test_bad_factory_string_names_the_fix():
    with pytest.raises(ValueError, match="index_factory='IVFx,Nope'"):
        similarity.build_index(clustered(100, 8, 2), np.arange(100), "IVFx,Nope")
    with pytest.raises(ValueError, match="at least 256 training vectors"):
        similarity.build_index(clustered(100, 8, 2), np.arange(100), "IVF256,Flat")


def test_knn_loo_accuracy_and_near_duplicate_groups():
    x = clustered(600, 16, 3, seed=2)
    ids = np.arange(600, dtype=np.int64)
    centers = np.argmax(x @ clustered(3, 16, 3, seed=2).T, axis=1)  # noisy, not a given
    labels = {i: f"c{centers[i]}" for i in range(0, 600, 2)}  # half labeled
    built = similarity.build_index(x, ids, "Flat")
    knn = similarity.knn_loo_accuracy(
        built.index, x, ids, labels, settings=similarity.KnnSettings(k=5)
    )
    assert knn.evaluated == 300 and 0.0 <= knn.accuracy <= 1.0
    assert set(knn.per_label) == set(labels.values())
    # three exact copies of row 0 and one of row 1 form two groups
    dup = np.vstack([x, x[[0, 0, 0, 1]]])
    dup_ids = np.concatenate([ids, [1000, 1001, 1002, 1003]])
    built = similarity.build_index(dup, dup_ids, "Flat")
    a, b, s = duplicates.near_duplicate_pairs(built.index, dup, dup_ids, 0.9999, k=5)
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    assert {(0, 1000), (0, 1001), (0, 1002), (1000, 1001), (1, 1003)} <= pairs
    assert all(x < y for x, y in pairs) and (s >= 0.9999).all()
    groups = duplicates.group_pairs(a, b)
    assert groups[1002] == 0 and groups[1003] == 1


def test_asset_publishes_index_and_search_finds_the_same_class(data_dir: Path, tmp_path: Path):
    result = searchable(data_dir, tmp_path)
    assert result.success
    meta = result.asset_materializations_for_node("similarity_index")[0].metadata
    assert meta["index_type"].value == "Flat"  # 25 vectors: exact
    assert meta["vectors"].value == 25 and meta["recall_at_5"].value == 1.0
    assert meta["knn_evaluated"].value == 25 and meta["knn_top1_accuracy_loo"].value >= 0.9
    assert meta["query_p50_ms"].value > 0 and meta["bytes"].value > 25 * 512 * 4
    dups = result.asset_materializations_for_node("near_duplicates")[0].metadata
    assert dups["pairs"].value == 1 and dups["groups"].value == 1
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["version"].value == meta["version"].value
    published = result.asset_materializations_for_node("published_index")[0].metadata
    assert published["version"].value == meta["version"].value
    assert published["check_recall_at_5"].value == 1.0 and published["replaces"].value == "none"

    db = DataPaths(data_dir).catalog_db
    record = published_index(db)
    assert record.version == meta["version"].value
    assert record.path.is_file() and record.path.parent.name == record.model_key
    with connect(db, read_only=True) as con:
        [(a, b, sim)] = con.execute(
            "SELECT p.image_id_a, p.image_id_b, p.similarity FROM near_duplicates p"
        ).fetchall()
        names = dict(con.execute("SELECT image_id, path FROM images").fetchall())
    assert {Path(names[a]).name, Path(names[b]).name} == {"img_0.png", "img_0_copy.png"}
    assert sim > 0.9999

    searcher = Searcher(db)
    query_id = next(i for i, p in names.items() if p.endswith("class_2/img_3.png"))
    hits = searcher.similar(query_id, k=5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5] and query_id not in {h.image_id for h in hits}
    assert {h.label for h in hits} == {"class_2"}
    assert all(Path(h.path).parent.name == "class_2" for h in hits)
    sims = [h.similarity for h in hits]
    assert sims == sorted(sims, reverse=True)


def test_failing_check_keeps_the_published_version(data_dir: Path, tmp_path: Path):
    assert searchable(data_dir, tmp_path).success
    db = DataPaths(data_dir).catalog_db
    good = published_index(db)
    bad = materialize_index(data_dir, tmp_path, index_factory="IVF8,Flat", nprobe=1)
    [check] = bad.get_asset_check_evaluations()
    assert not check.passed
    assert "raise nprobe (now 1" in check.description and "not published" in check.description
    assert not bad.asset_materializations_for_node("published_index"), "the check blocks it"
    assert bad.asset_materializations_for_node("near_duplicates"), "and nothing else"
    newest = latest_index(db, good.model_key, published_only=False)
    assert newest.version > good.version and newest.index_type == "IVF8,Flat"
    assert not newest.published and newest.path.is_file()
    assert published_index(db).version == good.version
    assert Searcher(db).record.index_type == "Flat"


def test_unchanged_inputs_reuse_and_publication_needs_a_passed_check(
    data_dir: Path, tmp_path: Path
):
    assert searchable(data_dir, tmp_path).success
    db = DataPaths(data_dir).catalog_db
    good = published_index(db)
    again = materialize_index(data_dir, tmp_path, {"threshold": 0.99999})
    meta = again.asset_materializations_for_node("similarity_index")[0].metadata
    assert meta["version"].value == good.version and meta["knn_evaluated"].value == 25
    assert meta["reused"].value.startswith("index reused"), "a fresh instance: kNN measured again"
    for asset in ("published_index", "near_duplicates"):
        reused = again.asset_materializations_for_node(asset)[0].metadata["reused"].value
        assert reused.startswith(SKIPPED), asset
    with connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM faiss_indexes").fetchall() == [(1,)]

    res = resources(data_dir)
    bad = {"index_factory": "IVF8,Flat", "nprobe": 1}
    index_and_check = [search_assets.similarity_index, search_assets.similarity_index_recall]
    alone = [search_assets.published_index]
    with dg.DagsterInstance.ephemeral() as instance:
        run = dg.materialize(
            index_and_check,
            resources=res,
            run_config={"ops": {"similarity_index": {"config": bad}}},
            instance=instance,
            raise_on_error=False,
        )
        assert not run.get_asset_check_evaluations()[0].passed
        failed = dg.materialize(alone, resources=res, instance=instance, raise_on_error=False)
        error = failed.get_step_failure_events()[0].event_specific_data.error.to_string()
        assert "failed similarity_index_recall" in error
    with dg.DagsterInstance.ephemeral() as instance:
        unchecked = dg.materialize(alone, resources=res, instance=instance, raise_on_error=False)
        error = unchecked.get_step_failure_events()[0].event_specific_data.error.to_string()
        assert "has no recall check yet" in error
    assert published_index(db).version == good.version


def test_near_duplicates_are_judged_on_centred_features():
    """Features sharing a big common component (as random-init ReLU features do) are all at
    cosine > 0.98 raw; after centring only the planted copy is."""
    rng = np.random.default_rng(0)
    X = 10 + rng.random((300, 32)).astype(np.float32)
    X[7] = X[3] + rng.normal(0, 1e-3, 32)  # a near-copy of image 3
    ids = np.arange(100, 400, dtype=np.int64)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    raw = faiss.IndexIDMap(faiss.IndexFlatIP(32))
    raw.add_with_ids(Xn, ids)
    assert len(duplicates.near_duplicate_pairs(raw, Xn, ids, 0.98)[0]) > 1000
    C = duplicates.centred(X)
    index = faiss.IndexIDMap(faiss.IndexFlatIP(32))
    index.add_with_ids(C, ids)
    a, b, s = duplicates.near_duplicate_pairs(index, C, ids, 0.98)
    assert (a.tolist(), b.tolist()) == ([103], [107]) and s[0] > 0.99
