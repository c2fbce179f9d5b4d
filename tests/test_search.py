"""`emb similar` and the Python search API on a published index of real embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from embedding_assets.cli.app import app
from embedding_assets.search.searcher import QueryError, Searcher, UnknownImageError, similar
from resources.duckdb_store import connect
from resources.storage import DataPaths
from tests.search_setup import class_image, searchable

runner = CliRunner()


@pytest.fixture(scope="module")
def searchable_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("search")
    data_dir = tmp / "data"
    assert searchable(data_dir, tmp).success
    return data_dir


@pytest.fixture
def env(searchable_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EMB_DATA_DIR", str(searchable_dir))
    return searchable_dir


def _id_of(data_dir: Path, suffix: str) -> int:
    """The catalog id of an image (indexed or not: the search snapshot has only indexed ones)."""
    with connect(DataPaths(data_dir).catalog_db, read_only=True) as con:
        path = str((data_dir.parent / "images" / suffix).resolve())
        return con.execute("SELECT image_id FROM images WHERE path = ?", [path]).fetchone()[0]


def test_cli_by_id_returns_the_query_class_as_json(env: Path):
    query = _id_of(env, "class_1/img_2.png")
    out = runner.invoke(app, ["similar", str(query), "-k", "4", "--format", "json"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.output)
    assert len(payload["results"]) == 4
    assert {r["label"] for r in payload["results"]} == {"class_1"}
    assert {"path", "similarity", "label", "cluster", "image_id", "rank"} <= set(
        payload["results"][0]
    )
    title = runner.invoke(app, ["similar", str(query), "-k", "4"]).output.splitlines()[0]
    path = (env.parent / "images" / "class_1" / "img_2.png").resolve()
    assert title.startswith(f"4 images like #{query} {path} (label class_1) (model key "), title


def test_cli_by_catalog_path_and_by_new_file(env: Path, tmp_path: Path):
    out = runner.invoke(app, ["similar", str(env.parent / "images" / "class_2" / "img_5.png")])
    assert out.exit_code == 0, out.output
    rows = out.output.strip().splitlines()[2:]  # a title line, a header line, then results
    assert len(rows) == 10 and not any("class_2/img_5.png" in r for r in rows)  # not itself
    assert all("class_2" in row for row in rows[:6])  # the 7 other class_2 images rank first
    new = class_image(tmp_path / "new_dark.png", 30, seed=999)  # not in the catalog
    hits = similar(DataPaths(env).catalog_db, new, k=5)
    assert len(hits) == 5 and {h.label for h in hits} == {"class_0"}


def test_bad_queries_get_clear_errors(env: Path, tmp_path: Path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff garbage")
    out = runner.invoke(app, ["similar", str(corrupt)])
    assert out.exit_code == 2 and "corrupt.jpg" in out.output and "cannot" in out.output
    out = runner.invoke(app, ["similar", "987654"])
    assert out.exit_code == 2 and "987654 is not in the catalog" in out.output
    broken = _id_of(env, "class_1/broken.png")
    out = runner.invoke(app, ["similar", str(broken)])
    assert out.exit_code == 2 and "no embedding under model key" in out.output
    assert "status corrupt" in out.output
    out = runner.invoke(app, ["similar", str(tmp_path / "missing.png")])
    assert out.exit_code == 2 and "is not a file" in out.output
    out = runner.invoke(app, ["similar", "1", "--model-key", "other-model"])
    assert "No published similarity index for model key 'other-model'" in out.output
    assert out.exit_code == 2
    assert "Published indexes exist for" in out.output
    out = runner.invoke(app, ["similar", "1", "--format", "xml"])
    assert out.exit_code == 2 and "choose table or json" in out.output


def test_python_api_checks_the_vector_of_another_model(env: Path):
    searcher = Searcher(DataPaths(env).catalog_db)
    with pytest.raises(QueryError, match="has 512"):
        searcher.by_vector(np.ones(64, dtype=np.float32), 5)
    with pytest.raises(QueryError, match="NaN"):
        searcher.by_vector(np.full(512, np.nan, dtype=np.float32), 5)
    with pytest.raises(UnknownImageError):
        searcher.by_id(10**9, 5)


def test_no_index_yet_says_what_to_run(data_dir: Path):
    out = runner.invoke(app, ["similar", "1"])
    assert out.exit_code == 2 and "No catalog at" in out.output
