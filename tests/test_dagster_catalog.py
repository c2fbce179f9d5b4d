"""The code location loads, and `image_catalog` materializes in a real Dagster run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb

from embedding_assets.assets.catalog import catalog_has_usable_images, image_catalog
from tests.helpers import resources

REPO = Path(__file__).resolve().parents[1]


def test_definitions_validate():
    out = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _materialize(data_dir: Path, image_dir: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [image_catalog, catalog_has_usable_images],
        resources=resources(data_dir, device="auto"),
        run_config={"ops": {"image_catalog": {"config": {"image_dir": str(image_dir)}}}},
        raise_on_error=False,
    )


def test_materialize_catalog_reports_metadata(data_dir: Path, labeled_folder: Path):
    result = _materialize(data_dir, labeled_folder)
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["usable_images"].value == 28
    assert meta["new"].value == 28
    assert meta["by_status"].value == {"ok": 28}
    assert (data_dir / "parquet" / "images.parquet").exists()
    with duckdb.connect() as con:
        n = con.execute(
            f"SELECT count(*) FROM read_parquet('{data_dir / 'parquet' / 'images.parquet'}')"
        ).fetchone()[0]
    assert n == 28
    checks = result.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [True]

    second = _materialize(data_dir, labeled_folder)
    meta2 = second.get_asset_materialization_events()[0].materialization.metadata
    assert meta2["new"].value == 0 and meta2["unchanged (not rehashed)"].value == 28
    v1 = result.get_asset_materialization_events()[0].materialization.tags
    v2 = second.get_asset_materialization_events()[0].materialization.tags
    assert v1["dagster/data_version"] == v2["dagster/data_version"], "same images, same version"


def test_blocking_check_fails_when_nothing_is_usable(data_dir: Path, tmp_path: Path):
    folder = tmp_path / "all_bad"
    folder.mkdir()
    (folder / "x.png").write_text("not an image")
    (folder / "y.jpg").write_bytes(b"")
    result = _materialize(data_dir, folder)
    checks = result.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [False]
    assert "No usable image" in checks[0].description
