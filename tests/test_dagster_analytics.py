"""`clusters`, `anomaly_scores` and `projections` in real Dagster runs over a real catalog, with
synthetic vectors standing in for the `embeddings` asset."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from embedding_assets.assets.analytics import (
    anomaly_scores,
    anomaly_scores_are_finite,
    clusters,
    clusters_cover_all_images,
    projection_rows_match,
    projections,
)
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.embedding import sets as vectors
from resources.duckdb_store import connect
from tests.helpers import resources, write_image

REPO = Path(__file__).resolve().parents[1]
ANALYTICS = [
    clusters,
    anomaly_scores,
    projections,
    clusters_cover_all_images,
    anomaly_scores_are_finite,
    projection_rows_match,
]
FAST = {"methods": ["pca"]}  # UMAP/t-SNE take seconds to start; the first test covers them


def fake_embeddings(data_dir: Path, folder: Path, model_key: str = "synthetic-v1") -> int:
    """Catalog `folder`, then register one vector per usable image: the three classes as three
    tight blobs, unlabeled images scattered, one image far away from everything."""
    db = data_dir / "catalog.duckdb"
    scan_catalog(db, folder)
    with connect(db, read_only=True) as con:
        rows = con.execute(
            "SELECT image_id, sha256, path FROM usable_images ORDER BY image_id"
        ).fetchall()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 32)) * 3
    group = [int(m.group(1)) if (m := re.search(r"class_(\d)", p)) else 3 for _, _, p in rows]
    x = centres[group] + rng.normal(scale=0.2, size=(len(rows), 32))
    x[0] = 40.0  # the planted outlier
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    ids = np.array([r[0] for r in rows], np.int64)
    path = data_dir / "parquet" / f"embeddings_{model_key}.parquet"
    vectors.write_parquet(path, ids, [r[1] for r in rows], model_key, x)
    emb_set = vectors.EmbeddingSet(model_key, "synthetic", 32, len(rows), path)
    vectors.register(db, emb_set, None, {})
    return len(rows)


def run(data_dir: Path, config: dict | None = None, assets=None) -> dg.ExecuteInProcessResult:
    ops = {name: {"config": cfg} for name, cfg in (config or {}).items()}
    return dg.materialize(
        assets or ANALYTICS,
        resources=resources(data_dir),
        run_config={"ops": ops},
        raise_on_error=False,
    )


def meta(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() == asset:
            return event.materialization.metadata
    raise KeyError(asset)


def test_all_three_assets_write_tables_plots_and_pass_their_checks(data_dir, labeled_folder):
    n = fake_embeddings(data_dir, labeled_folder)
    assert n == 28
    result = run(data_dir, {"clusters": {"k": "auto", "k_max": 6}})
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    assert len(result.get_asset_check_evaluations()) == 3

    cm = meta(result, "clusters")
    assert cm["k"].value in (4, 5)  # four blobs, the planted outlier may get its own cluster
    assert cm["k_from"].value == "silhouette sweep"
    assert "| k | silhouette |" in cm["silhouette_sweep"].value
    assert sum(cm["sizes"].value.values()) == 28
    assert "| cluster | size | labeled | top label |" in cm["clusters"].value
    assert "100%" in cm["clusters"].value  # a class blob is a pure cluster

    am = meta(result, "anomaly_scores")
    assert am["flagged"].value == 2  # ceil(0.05 * 28)
    listed = am["flagged_images"].value.splitlines()
    assert len(listed) == 2 + 2 and "| nan |" not in am["flagged_images"].value
    with connect(data_dir / "catalog.duckdb", read_only=True) as con:
        outlier = con.execute("SELECT min(image_id) FROM usable_images").fetchone()[0]
    assert listed[2].startswith(f"| {outlier} | ")  # the planted outlier scores highest
    assert am["score_histogram"].value.startswith("![scores](data:image/png;base64,")

    pm = meta(result, "projections")
    for method in ("pca", "umap", "tsne"):
        assert pm[f"{method}_map"].value.startswith(f"![{method} map](data:image/png;base64,")
        assert (data_dir / "plots" / "synthetic-v1" / f"{method}.png").stat().st_size > 1000
    assert "perplexity 30 -> 8.99 (n=28)" in pm["tsne_details"].value["notes"]
    assert pm["coloured_by"].value == "label, cluster, anomaly flag"
    html = Path(pm["html_map"].value).read_text()
    assert "data:image/png;base64," in html  # thumbnails for a small set
    assert '"anomaly flag":[' in html and '"tsne":[[' in html

    with connect(data_dir / "catalog.duckdb", read_only=True) as con:
        counts = con.execute(
            "SELECT (SELECT count(*) FROM projections), (SELECT count(*) FROM clusters), "
            "(SELECT count(*) FROM anomaly_scores)"
        ).fetchone()
        assert counts == (3 * 28, 28, 28)
        overview = con.execute(
            "SELECT count(*), count(cluster), count(anomaly_score), count(tsne_x), "
            "count(label), count(*) FILTER (anomaly_flag) FROM image_overview"
        ).fetchone()
        assert overview == (28, 28, 28, 28, 24, 2)
        top = con.execute(
            "SELECT image_id FROM image_overview ORDER BY anomaly_score DESC LIMIT 1"
        ).fetchone()[0]
        assert top == outlier


def test_rematerializing_replaces_rows_and_keeps_other_model_keys(data_dir, labeled_folder):
    fake_embeddings(data_dir, labeled_folder, model_key="old-model")
    assert run(data_dir, {"clusters": {"k": "2"}, "projections": FAST}).success
    fake_embeddings(data_dir, labeled_folder, model_key="new-model")
    assert run(
        data_dir, {"clusters": {"k": "3"}, "projections": {"methods": ["pca", "tsne"]}}
    ).success
    result = run(data_dir, {"clusters": {"k": "3"}, "projections": FAST})
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    with connect(data_dir / "catalog.duckdb", read_only=True) as con:
        per_key = dict(
            con.execute("SELECT model_key, count(*) FROM clusters GROUP BY 1").fetchall()
        )
        assert per_key == {"old-model": 28, "new-model": 28}
        methods = con.execute(
            "SELECT method, count(*) FROM projections WHERE model_key = 'new-model' "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert methods == [("pca", 28)]  # the last run's methods only, no duplicates
        keys = con.execute("SELECT DISTINCT model_key FROM image_overview").fetchall()
        assert keys == [("new-model",)]
        assert con.execute("SELECT max(cluster) FROM image_overview").fetchone()[0] == 2


def test_bad_config_fails_with_a_message_naming_the_fix(data_dir, labeled_folder):
    fake_embeddings(data_dir, labeled_folder)
    result = run(data_dir, {"clusters": {"k": "ten"}}, assets=[clusters])
    assert not result.success
    err = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "neither `auto` nor a positive integer" in err

    # a choice of values is refused before the run starts, naming the allowed ones
    with pytest.raises(dg.DagsterInvalidConfigError, match="not in enum type Method got mds"):
        run(data_dir, {"projections": {"methods": ["pca", "mds"]}}, assets=[projections])


def test_without_embeddings_the_error_says_what_to_materialize(data_dir):
    result = run(data_dir, assets=[anomaly_scores])
    assert not result.success
    err = result.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert "materialize the `embeddings` asset first" in err or "No catalog" in err


def test_readme_sql_examples_run(data_dir, labeled_folder):
    fake_embeddings(data_dir, labeled_folder)
    assert run(data_dir, {"projections": FAST}).success
    section = (REPO / "README.md").read_text().split("## Projections, clusters, anomalies")[1]
    queries = re.findall(r'emb sql "(.*?)"', section.split("\n## ")[0], flags=re.S)
    assert len(queries) >= 3
    with connect(data_dir / "catalog.duckdb", read_only=True) as con:
        for query in queries:
            rows = con.execute(query).fetchall()
            assert rows, query


@pytest.mark.parametrize("flag_fraction", [0.0, 0.5])
def test_flag_fraction_sets_the_flagged_count(data_dir, labeled_folder, flag_fraction):
    fake_embeddings(data_dir, labeled_folder)
    result = run(
        data_dir,
        {"anomaly_scores": {"flag_fraction": flag_fraction}},
        assets=[anomaly_scores, anomaly_scores_are_finite],
    )
    assert result.success
    assert meta(result, "anomaly_scores")["flagged"].value == round(28 * flag_fraction)


def test_projections_alone_are_coloured_by_what_exists(data_dir, labeled_folder):
    fake_embeddings(data_dir, labeled_folder)
    result = run(data_dir, {"projections": FAST}, assets=[projections, projection_rows_match])
    assert result.success
    pm = meta(result, "projections")
    assert pm["coloured_by"].value == "label"
    assert pm["pca_map"].value.startswith("![pca map](data:image/png;base64,")


def test_a_new_image_is_placed_on_the_maps_clusters_and_scores_not_fitted_again(
    data_dir, labeled_folder
):
    maps = {"projections": {"methods": ["pca", "tsne"]}, "clusters": {"k": "3"}}
    placing = [projections, projection_rows_match, clusters, clusters_cover_all_images]
    placing += [anomaly_scores, anomaly_scores_are_finite]
    fake_embeddings(data_dir, labeled_folder)
    first = run(data_dir, maps, assets=placing)
    assert first.success and "placed_images" not in meta(first, "projections")
    assert "placed_images" not in meta(first, "clusters")
    with connect(data_dir / "catalog.duckdb", read_only=True) as con:
        before = con.execute("SELECT method, image_id, x, y FROM projections ORDER BY 1, 2").df()
    write_image(labeled_folder / "unlabeled" / "new.png", size=(24, 24), seed=4242)
    assert fake_embeddings(data_dir, labeled_folder) == 29
    again = run(data_dir, maps, assets=placing)
    assert again.success and all(c.passed for c in again.get_asset_check_evaluations())
    pm = meta(again, "projections")
    assert pm["placed_images"].value == 1 and "nothing was fitted again" in pm["placed"].value
    assert meta(again, "clusters")["placed_images"].value == 1
    am = meta(again, "anomaly_scores")
    assert am["placed_images"].value == 1 and am["flagged"].value == 2  # ceil(5 % of 29)
    with connect(data_dir / "catalog.duckdb", read_only=True) as con:
        after = con.execute("SELECT method, image_id, x, y FROM projections ORDER BY 1, 2").df()
    assert len(after) == 2 * 29
    kept = after.merge(before, on=["method", "image_id"], suffixes=("", "_before"))
    assert len(kept) == 2 * 28 and (kept["x"] == kept["x_before"]).all()
    with connect(data_dir / "catalog.duckdb", read_only=True) as con:
        joined = con.execute(
            "SELECT c.cluster FROM clusters c JOIN images i USING (image_id) "
            "WHERE i.path LIKE '%new.png'"
        ).fetchall()
    assert len(joined) == 1 and 0 <= joined[0][0] < 3, "the new image joined a cluster"


def test_a_fitted_model_is_kept_only_once_its_rows_are_written(data_dir, labeled_folder):
    """Kept before its rows, a refit's model would survive a failed write and place the next
    new images over rows made with other settings, reported as placed."""
    from embedding_assets.analytics.per_image import anomaly_scores_of
    from embedding_assets.configs.analytics import AnomalyConfig
    from resources.paths import DataPaths

    fake_embeddings(data_dir, labeled_folder)
    paths = DataPaths(data_dir)
    emb_set = vectors.current_set(paths.catalog_db)
    scores = anomaly_scores_of(emb_set, paths, AnomalyConfig().params(), "settings")
    kept = paths.models_dir / "anomaly_scores" / f"{emb_set.model_key}.pkl"
    assert not kept.exists() and scores.after_write is not None
    scores.after_write()
    assert kept.is_file()
