"""`emb sql`: read-only queries in several formats, and a clear refusal for writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.cli.app import app

runner = CliRunner()


@pytest.fixture
def catalog(data_dir: Path, labeled_folder: Path) -> Path:
    db = data_dir / "catalog.duckdb"
    scan_catalog(db, labeled_folder)
    return db


def test_table_output_is_aligned(catalog: Path):
    res = runner.invoke(app, ["sql", "select status, count(*) as n from images group by 1"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split() == ["status", "n"]
    assert lines[2].split() == ["ok", "28"]
    assert lines[-1] == "(1 row)"


def test_csv_json_and_parquet(catalog: Path, tmp_path: Path):
    res = runner.invoke(
        app,
        ["sql", "select label, count(*) n from current_labels group by 1 order by 1", "-f", "csv"],
    )
    assert res.output.splitlines()[:2] == ["label,n", "class_0,8"]
    res = runner.invoke(app, ["sql", "select count(*) n from images", "--format", "json"])
    assert json.loads(res.output) == [{"n": 28}]
    out = tmp_path / "x.parquet"
    res = runner.invoke(app, ["sql", "select * from images", "-f", "parquet", "-o", str(out)])
    assert res.exit_code == 0, res.output
    with duckdb.connect() as con:
        assert con.execute(f"select count(*) from read_parquet('{out}')").fetchone()[0] == 28


@pytest.mark.parametrize(
    "stmt",
    [
        "delete from images",
        "insert into labels (image_id, label, source) values (1, 'x', 'y')",
        "drop table images",
    ],
)
def test_writes_are_refused_and_change_nothing(catalog: Path, stmt: str):
    res = runner.invoke(app, ["sql", stmt])
    assert res.exit_code == 2
    assert "refused" in res.output and "read-only" in res.output
    with duckdb.connect(str(catalog), read_only=True) as con:
        assert con.execute("select count(*) from images").fetchone()[0] == 28


def test_errors_are_clear(data_dir: Path):
    res = runner.invoke(app, ["sql", "select 1"])
    assert res.exit_code == 2 and "No catalog" in res.output
    data_dir.mkdir(parents=True)
    scan_catalog(data_dir / "catalog.duckdb", data_dir)
    res = runner.invoke(app, ["sql", "selec 1"])
    assert res.exit_code == 2 and "syntax error" in res.output
    res = runner.invoke(app, ["sql", "select 1", "-f", "xml"])
    assert res.exit_code == 2 and "choose one of" in res.output


def test_console_script_runs_in_a_real_process(catalog: Path, data_dir: Path):
    exe = Path(sys.executable).parent / "emb"
    out = subprocess.run(
        [str(exe), "sql", "select count(*) as n from usable_images"],
        capture_output=True,
        text=True,
        env={"EMB_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert "28" in out.stdout


@pytest.mark.parametrize(
    ("stmt", "why"),
    [
        ("copy (select * from images) to '{parquet}/images.parquet'", "not COPY"),
        ("export database '{tmp}/dump'", "not EXPORT"),
        ("select 1; copy images to '{tmp}/x.csv'", "not COPY"),
        ("set enable_external_access = true", "not SET"),
        ("attach '{tmp}/other.duckdb' as o", "not ATTACH"),
        ("select * from read_text('/etc/passwd')", "reads the catalog and the Parquet files"),
        ("select * from glob('/root/*')", "reads the catalog and the Parquet files"),
        ("select * from read_csv('{tmp}/secret.csv')", "reads the catalog and the Parquet files"),
    ],
)
def test_sandbox_keeps_queries_inside_the_data_folder(
    catalog: Path, data_dir: Path, tmp_path: Path, stmt: str, why: str
):
    (tmp_path / "secret.csv").write_text("a\n1\n")
    parquet = data_dir / "parquet"
    parquet.mkdir(parents=True, exist_ok=True)
    before = sorted(p.name for p in parquet.rglob("*"))
    res = runner.invoke(app, ["sql", stmt.format(parquet=parquet, tmp=tmp_path)])
    assert res.exit_code == 2 and "refused" in res.output and why in res.output, res.output
    assert sorted(p.name for p in parquet.rglob("*")) == before  # nothing written
    assert not (tmp_path / "dump").exists() and not (tmp_path / "x.csv").exists()


def test_the_documented_parquet_files_stay_readable(catalog: Path, data_dir: Path):
    parquet = data_dir / "parquet" / "images.parquet"
    parquet.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(catalog), read_only=True) as con:
        con.execute(f"copy (select image_id from images) to '{parquet}'")
    res = runner.invoke(app, ["sql", f"select count(*) n from read_parquet('{parquet}')"])
    assert res.exit_code == 0 and "28" in res.output, res.output
    res = runner.invoke(app, ["sql", "explain select * from images"])
    assert res.exit_code == 0, res.output
