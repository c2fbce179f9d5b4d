"""`emb label import|set` and `emb queue --export` against a real catalog."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.cli.app import app
from embedding_assets.cli.console import emb_command
from resources.storage import DataPaths
from tests.al_helpers import query

runner = CliRunner()


def _catalog(data_dir: Path, folder: Path) -> None:
    scan_catalog(DataPaths(data_dir).catalog_db, folder)


def test_import_rejects_bad_rows_with_line_numbers_and_keeps_good_ones(
    data_dir: Path, labeled_folder: Path, tmp_path: Path
):
    _catalog(data_dir, labeled_folder)
    u0, u1 = labeled_folder / "unlabeled" / "u_0.png", labeled_folder / "unlabeled" / "u_1.png"
    (image_id,) = query(data_dir, f"SELECT image_id FROM images WHERE path = '{u1}'")[0]
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "path,label\n"
        f"{u0},class_2\n"  # 2: ok
        f"{tmp_path}/nope.png,class_1\n"  # 3: unknown image
        f"{u1},   \n"  # 4: empty label
        "only-one-column\n"  # 5: malformed
        f"{image_id},class_0\n"  # 6: ok, by id
        "\n"
        "unlabeled/u_2.png,class_1\n"  # 8: relative to the CSV's folder -> unknown
    )
    before = query(data_dir, "SELECT count(*) FROM labels")[0][0]
    out = runner.invoke(app, ["label", "import", str(csv)])
    assert out.exit_code == 1, out.output
    for line, reason in [
        (3, "unknown image"),
        (4, "empty label"),
        (5, "malformed"),
        (8, "unknown"),
    ]:
        assert f"line {line}: rejected: {reason}" in out.output
    assert "2 label(s) added, 4 row(s) rejected" in out.output
    rows = query(
        data_dir,
        "SELECT i.path, l.label, l.source FROM labels l JOIN images i USING (image_id) "
        f"WHERE label_id > {before} ORDER BY label_id",
    )
    assert rows == [(str(u0), "class_2", "csv:labels.csv"), (str(u1), "class_0", "csv:labels.csv")]


def test_latest_label_counts_and_set_by_path_or_id(data_dir: Path, labeled_folder: Path):
    _catalog(data_dir, labeled_folder)
    path = labeled_folder / "class_0" / "img_0.png"
    assert runner.invoke(app, ["label", "set", str(path), "class_9"]).exit_code == 0
    (image_id,) = query(data_dir, f"SELECT image_id FROM images WHERE path = '{path}'")[0]
    assert runner.invoke(app, ["label", "set", str(image_id), "class_8"]).exit_code == 0
    current = query(
        data_dir, f"SELECT label, source FROM current_labels WHERE image_id = {image_id}"
    )
    assert current == [("class_8", "cli")]
    history = query(data_dir, f"SELECT label FROM labels WHERE image_id = {image_id} ORDER BY 1")
    assert history == [("class_0",), ("class_8",), ("class_9",)]
    bad = runner.invoke(app, ["label", "set", "999999", "x"])
    assert bad.exit_code == 1 and "line 1" not in bad.output, "an argument has no line number"
    assert bad.output.startswith("rejected: unknown image 999999: not in the catalog; list ids")
    assert f"list ids and paths: {emb_command()} sql" in bad.output


def test_all_rows_bad_writes_nothing(data_dir: Path, labeled_folder: Path, tmp_path: Path):
    _catalog(data_dir, labeled_folder)
    csv = tmp_path / "bad.csv"
    csv.write_text("image_id,label\nabc,x\n123456,y\n")
    before = query(data_dir, "SELECT count(*) FROM labels")
    out = runner.invoke(app, ["label", "import", str(csv)])
    assert out.exit_code == 1
    assert "line 2: rejected: image_id 'abc' is not an integer" in out.output
    assert "line 3: rejected: unknown image 123456" in out.output
    assert query(data_dir, "SELECT count(*) FROM labels") == before


def test_bad_file_and_missing_catalog_name_the_fix(data_dir: Path, tmp_path: Path):
    out = runner.invoke(app, ["label", "import", str(tmp_path / "x.csv")])
    assert out.exit_code == 2 and "No catalog" in out.output
    data_dir.mkdir(parents=True)
    (tmp_path / "img").mkdir()
    _catalog(data_dir, tmp_path / "img")
    out = runner.invoke(app, ["label", "import", str(tmp_path / "x.csv")])
    assert out.exit_code == 2 and "not found" in out.output
    headed = tmp_path / "h.csv"
    headed.write_text("file,label\na.png,x\n")
    out = runner.invoke(app, ["label", "import", str(headed)])
    assert out.exit_code == 2 and "no image column" in out.output
