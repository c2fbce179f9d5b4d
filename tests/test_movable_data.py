"""A data folder can be moved or copied (issue 14): the catalog stores the files of the data
folder (Parquet, FAISS indexes, trained heads, classifiers) relative to it and resolves them
against wherever it is now, so a moved folder keeps working and a copy reads only its own files.
Real runs of the whole job on small images with a small random-init backbone."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from embedding_assets import definitions
from embedding_assets.cli.app import app
from embedding_assets.common import tables
from embedding_assets.common.fingerprints import REUSED, SKIPPED
from embedding_assets.embedding import sets as vectors
from embedding_assets.embedding import training as embedding_training
from embedding_assets.embedding.embedder import EmbedParams
from embedding_assets.search import searcher, versions
from resources.duckdb_store import connect
from resources.paths import DataPaths
from resources.schema import relativize_paths, schema_sql
from tests.helpers import write_image
from tests.test_noop_run import DOWNSTREAM, _metadata, _run

BASE = EmbedParams(model="resnet18", weights="none", image_size=32)
STORED = (  # every column that names a file of ours
    "SELECT parquet_path FROM embedding_sets UNION ALL SELECT path FROM faiss_indexes "
    "UNION ALL SELECT head_path FROM embedding_models UNION ALL SELECT model_path "
    "FROM model_versions"
)


def _use(data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point EMB_DATA_DIR (and the definitions, which bind it on import) at `data`."""
    monkeypatch.setenv("EMB_DATA_DIR", str(data))
    importlib.reload(definitions)
    return DataPaths(data).catalog_db


def _similar_ok(db: Path, image_id: int) -> list[dict]:
    res = CliRunner().invoke(app, ["similar", str(image_id), "-k", "3", "--format", "json"])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    hits = json.loads(res.output)["results"]
    assert hits, res.output
    return hits


def _reads_only(db: Path) -> None:
    """Every stored file of ours is relative and resolves under `db`'s folder."""
    root = DataPaths(db.parent)
    with connect(db, read_only=True) as con:
        stored = [r[0] for r in con.execute(STORED).fetchall()]
        params = [
            json.loads(r[0]) for r in con.execute("SELECT params FROM embedding_sets").fetchall()
        ]
    assert stored and all(not Path(p).is_absolute() for p in stored), stored
    assert all(root.resolve(p).is_file() for p in stored)
    assert all(p["head"] is None or not Path(p["head"]).is_absolute() for p in params)
    key = tables.current_model_key(db)
    assert versions.published_index(db, key).path.is_relative_to(root.root)
    assert vectors.current_set(db).parquet_path.is_relative_to(root.root)


def test_a_moved_or_copied_data_folder_keeps_working_on_its_own_files(
    data_dir: Path, labeled_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    db = _use(data_dir, monkeypatch)
    _run(labeled_folder)
    with connect(db) as con:  # a promoted embedding model, so the move has one to lose
        con.execute("UPDATE embedding_models SET promoted = true")
        model_id = con.execute("SELECT max(model_id) FROM embedding_models").fetchall()[0][0]
    assert embedding_training.current_model(DataPaths(db.parent), BASE)[1] == model_id
    _run(labeled_folder)  # embeds with the trained head
    key = tables.current_model_key(db)
    assert "-head-" in key
    _reads_only(db)
    with connect(db, read_only=True) as con:
        image_id = con.execute("SELECT min(image_id) FROM images").fetchall()[0][0]

    # (1) a move: search, the current model and the next run all follow the folder
    moved = tmp_path / "moved"
    shutil.move(data_dir, moved)
    db = _use(moved, monkeypatch)
    _similar_ok(db, image_id)
    params, current = embedding_training.current_model(DataPaths(db.parent), BASE)
    assert current == model_id and Path(params.head).is_relative_to(moved)
    meta = _metadata(_run(labeled_folder))
    assert meta["embeddings"]["embedded_now"] == 0 and REUSED in meta["embeddings"]
    assert meta["embedding_model"]["status"] == "unchanged"
    for asset in DOWNSTREAM:
        assert meta[asset][REUSED].startswith(SKIPPED), (asset, meta[asset][REUSED])
    assert tables.current_model_key(db) == key
    _reads_only(db)

    # (2) a copy works on its own: the original is gone once the copy is made
    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)
    shutil.move(moved, tmp_path / "away")
    db = _use(copy, monkeypatch)
    _reads_only(db)
    _similar_ok(db, image_id)
    assert embedding_training.current_model(DataPaths(db.parent), BASE)[1] == model_id
    # a file not in the catalog is embedded on the fly with the copy's trained head
    query = write_image(tmp_path / "query.png", size=(24, 24), seed=7)
    hits = searcher.similar(db, str(query), k=2)
    assert len(hits) == 2
    meta = _metadata(_run(labeled_folder))
    assert meta["embeddings"]["embedded_now"] == 0
    assert meta["embedding_model"]["status"] == "unchanged"
    assert not (tmp_path / "moved").exists(), "the copy wrote nothing to the old place"


def test_migration_makes_the_old_absolute_rows_relative(tmp_path: Path):
    """A catalog written by the old code under /old/data, now in another folder."""
    root = DataPaths(tmp_path / "data")
    root.ensure(root.root)
    con = duckdb.connect(str(root.catalog_db))
    con.execute(schema_sql())
    old = "/old/data"
    params = {"model": "resnet18", "head": f"{old}/models/embedding/h-head.pt", "weights": "none"}
    con.execute(
        "INSERT INTO embedding_sets (model_key, model, weights, dim, count, parquet_path, params,"
        " updated_at) VALUES ('k', 'resnet18', ?, 512, 3, ?, ?, now())",
        ["/home/me/own.pth", f"{old}/parquet/k.parquet", json.dumps(params)],
    )
    con.execute(
        "INSERT INTO faiss_indexes (model_key, version, path, index_type, vectors, dim, bytes,"
        " created_at) VALUES ('k', 'v1', ?, 'Flat', 3, 512, 10, now())",
        [f"{old}/indexes/k/v1.faiss"],
    )
    con.execute(
        "INSERT INTO images (image_id, path, root, status, first_seen, last_seen)"
        " VALUES (1, '/pics/a.png', '/pics', 'ok', now(), now())"
    )
    con.execute("INSERT OR REPLACE INTO schema_info VALUES ('schema_version', 'before-100')")
    con.close()
    with connect(root.catalog_db) as con:  # the next writable connection migrates
        relativize_paths(con)  # and again is a no-op
        row = con.execute("SELECT parquet_path, weights, params FROM embedding_sets").fetchall()[0]
        assert row[0] == "parquet/k.parquet"
        assert row[1] == "/home/me/own.pth", "a user's own file stays absolute"
        assert json.loads(row[2])["head"] == "models/embedding/h-head.pt"
        path = con.execute("SELECT path FROM faiss_indexes").fetchall()[0][0]
        assert path == "indexes/k/v1.faiss"
        assert con.execute("SELECT path FROM images").fetchall()[0][0] == "/pics/a.png"
    assert root.resolve(path) == root.root / "indexes" / "k" / "v1.faiss"
    assert root.resolve("/home/me/own.pth") == Path("/home/me/own.pth")
    assert root.relative(root.root / "parquet" / "k.parquet") == "parquet/k.parquet"
    assert root.relative("/home/me/own.pth") == "/home/me/own.pth"
