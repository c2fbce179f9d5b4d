"""Hash-shard partitions (`$EMB_SHARDS`): shards split the collection exactly, a shard's scan
touches only its own files, and a backfill of every partition launched through the webserver
(as the UI's backfill dialog does) yields the same vectors as one unpartitioned pass."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.catalog.shards import SHARDS_ENV, Shard, partition_keys, shard_count, shard_of
from tests.dagster_server import dagster_dev, graphql
from tests.search_setup import class_image


def _folder(root: Path, n: int = 24) -> Path:
    for i in range(n):
        class_image(root / ("a", "b", "unlabeled")[i % 3] / f"img_{i:03d}.png", i % 3, i)
    return root


def _rows(db: Path) -> dict[str, tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT path, sha256, status, removed_at IS NOT NULL, c.label FROM images "
            "LEFT JOIN current_labels c USING (image_id)"
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def test_shards_are_stable_and_keys_sort(monkeypatch):
    assert shard_of("/data/cat/1.png", 16) == shard_of("/data/cat/1.png", 16)
    counts = np.bincount([shard_of(f"/x/{i}.png", 8) for i in range(4000)], minlength=8)
    assert counts.min() > 400  # crc32 spreads paths evenly: no shard is starved
    assert partition_keys(12) == [f"{i:02d}" for i in range(12)]
    assert Shard.from_key("07", 12).name == "07-of-12"
    monkeypatch.setenv(SHARDS_ENV, "sixteen")
    with pytest.raises(ValueError, match=r"\$EMB_SHARDS='sixteen'.*whole number"):
        shard_count()
    monkeypatch.setenv(SHARDS_ENV, "")
    assert shard_count() == 0


def test_shard_scans_add_up_to_one_scan_and_keep_to_their_files(tmp_path):
    folder = _folder(tmp_path / "images")
    whole, sharded = tmp_path / "whole.duckdb", tmp_path / "sharded.duckdb"
    scan_catalog(whole, folder)
    shards = [Shard(i, 3) for i in range(3)]
    for shard in shards:
        scan_catalog(sharded, folder, shard=shard)
    assert _rows(sharded) == _rows(whole)  # same files, hashes, statuses and folder labels

    by_shard = {s.index: sorted(p for p in _rows(whole) if s.contains(p)) for s in shards}
    assert all(by_shard.values()), "every shard holds some of the 24 files"
    Path(by_shard[0][0]).unlink()
    Path(by_shard[1][0]).unlink()
    summary = scan_catalog(sharded, folder, shard=shards[0])
    assert (summary.removed, summary.new, summary.changed) == (1, 0, 0)
    rows = _rows(sharded)
    assert rows[by_shard[0][0]][2] and not rows[by_shard[1][0]][2]  # shard 1's file: next run
    assert scan_catalog(sharded, folder, shard=shards[1]).removed == 1


def test_emb_run_goes_shard_by_shard_and_downstream_reads_every_shard(tmp_path):
    folder = _folder(tmp_path / "images", n=18)
    config = tmp_path / "run.yaml"
    config.write_text("ops:\n  projections: {config: {methods: [pca]}}\n")
    data = tmp_path / "data"
    env = {**os.environ, SHARDS_ENV: "2", "EMB_DATA_DIR": str(data)}
    env["DAGSTER_HOME"] = str(tmp_path / "home")
    small = ["--model", "resnet18", "--weights", "none", "--image-size", "32"]
    emb = Path(sys.executable).with_name("emb")
    args = [str(emb), "run", "--image-dir", str(folder), "--config", str(config), *small]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"Run \S+ and \d+ more succeeded", proc.stdout), proc.stdout
    assert "18 in the catalog (18 usable), 18 new this run" in proc.stdout
    assert "18 embedded now" in proc.stdout
    with duckdb.connect(str(data / "catalog.duckdb"), read_only=True) as con:
        projected = con.execute("SELECT count(DISTINCT image_id) FROM projections").fetchone()[0]
        clustered = con.execute("SELECT count(*) FROM clusters").fetchone()[0]
    assert projected == clustered == 18  # downstream of both shards' files


BACKFILL = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams:
    $params) { __typename ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message } ... on InvalidSubsetError { message } } }"""

BACKFILL_STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status } ... on PythonError { message } } }"""


# Over 90 s on a loaded 2-core machine (75-100 s) because it must be: the backfill daemon of a
# real `dagster dev` launches one run per shard, each in its own process with its own imports;
# the shards are what is tested, so they cannot be fewer than two.
@pytest.mark.e2e
def test_backfill_of_every_shard_equals_one_unpartitioned_pass(tmp_path):
    from embedding_assets.embedding.embedder import EmbedParams, embed_files
    from embedding_assets.embedding.sets import current_set, read_parquet

    folder = _folder(tmp_path / "images", n=18)
    with dagster_dev(tmp_path, folder, {SHARDS_ENV: "2"}) as (url, env):
        params = {
            "allPartitions": True,
            "assetSelection": [{"path": ["image_catalog"]}, {"path": ["embeddings"]}],
        }
        launched = graphql(url, BACKFILL, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        status, deadline = None, time.monotonic() + 600
        while time.monotonic() < deadline:
            out = graphql(url, BACKFILL_STATUS, {"id": launched["backfillId"]})
            status = out["partitionBackfillOrError"]["status"]
            if status not in ("REQUESTED", "IN_PROGRESS"):
                break
            time.sleep(2)
        assert status in ("COMPLETED", "COMPLETED_SUCCESS"), status
        db = Path(env["EMB_DATA_DIR"]) / "catalog.duckdb"

    emb_set = current_set(db)
    assert emb_set.parquet_path.is_dir() and emb_set.count == 18
    assert sorted(p.name for p in emb_set.parquet_path.iterdir()) == [
        "0-of-2.parquet",
        "1-of-2.parquet",
    ]
    ids, vectors = read_parquet(emb_set.parquet_path)
    with duckdb.connect(str(db), read_only=True) as con:
        path_of = dict(con.execute("SELECT image_id, path FROM images").fetchall())
    paths = [path_of[int(i)] for i in ids]
    assert sorted(paths) == sorted(str(p) for p in folder.rglob("*.png"))
    local = embed_files(paths, EmbedParams())  # one unpartitioned pass, in this process
    np.testing.assert_allclose(vectors, local, atol=1e-5)
