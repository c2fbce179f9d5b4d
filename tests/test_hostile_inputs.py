"""Hostile or sloppy inputs (issue 14): bad label CSVs, labels on unusable images, CSV output
line endings, EXIF-rotated photos, a killed run's instance settings, look-alike folder names."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image
from typer.testing import CliRunner

from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.cli.app import app
from resources.storage import DataPaths
from tests.al_helpers import query
from tests.helpers import resources, write_image

runner = CliRunner()


def _catalog(data_dir: Path, folder: Path, **kwargs):
    return scan_catalog(DataPaths(data_dir).catalog_db, folder, **kwargs)


def _label_count(data_dir: Path) -> int:
    return query(data_dir, "SELECT count(*) FROM labels")[0][0]


# a. labels on corrupt or removed images


def test_labels_on_corrupt_or_removed_images_are_rejected_per_row(
    data_dir: Path, labeled_folder: Path, tmp_path: Path
):
    broken = labeled_folder / "class_0" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    gone = labeled_folder / "class_1" / "img_0.png"
    _catalog(data_dir, labeled_folder)
    gone.unlink()
    _catalog(data_dir, labeled_folder)
    ok = labeled_folder / "unlabeled" / "u_0.png"
    csv = tmp_path / "labels.csv"
    csv.write_text(f"path,label\n{broken},class_0\n{ok},class_2\n{gone},class_1\n")
    before = _label_count(data_dir)
    out = runner.invoke(app, ["label", "import", str(csv)])
    assert out.exit_code == 1, out.output
    assert "line 2: rejected: image " in out.output and "is corrupt" in out.output
    assert "line 4: rejected: image " in out.output and "removed" in out.output
    assert "1 label(s) added, 2 row(s) rejected" in out.output
    assert _label_count(data_dir) == before + 1
    (image_id,) = query(data_dir, f"SELECT image_id FROM images WHERE path = '{broken}'")[0]
    one = runner.invoke(app, ["label", "set", str(image_id), "x"])
    assert one.exit_code == 1 and "is corrupt" in one.output
    assert _label_count(data_dir) == before + 1


# b. extra columns


def test_extra_columns_are_named_in_a_warning_and_the_rows_still_import(
    data_dir: Path, labeled_folder: Path, tmp_path: Path
):
    _catalog(data_dir, labeled_folder)
    u0, u1 = labeled_folder / "unlabeled" / "u_0.png", labeled_folder / "unlabeled" / "u_1.png"
    csv = tmp_path / "labels.csv"
    csv.write_text(f"path,label,notes,annotator\n{u0},class_0,blurry,ann\n{u1},class_1,,bob\n")
    out = runner.invoke(app, ["label", "import", str(csv)])
    assert out.exit_code == 0, out.output
    warnings = [line for line in out.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "notes, annotator" in warnings[0]
    assert "2 label(s) added, 0 row(s) rejected" in out.output
    headerless = tmp_path / "plain.csv"
    headerless.write_text(f"{u0},class_2,extra\n")
    out = runner.invoke(app, ["label", "import", str(headerless)])
    assert out.exit_code == 0 and "warning: ignored column(s) 3-3" in out.output


# c. wrong delimiter


@pytest.mark.parametrize(("sep", "name"), [(";", "semicolon"), ("\t", "tab")])
def test_wrong_delimiter_names_the_expected_and_the_found_one(
    data_dir: Path, labeled_folder: Path, tmp_path: Path, sep: str, name: str
):
    _catalog(data_dir, labeled_folder)
    u0 = labeled_folder / "unlabeled" / "u_0.png"
    csv = tmp_path / "labels.csv"
    csv.write_text(f"path{sep}label\n{u0}{sep}class_0\n")
    before = _label_count(data_dir)
    out = runner.invoke(app, ["label", "import", str(csv)])
    assert out.exit_code == 1, out.output
    for line in (1, 2):
        assert f"line {line}: rejected: malformed row: expected a comma (,)" in out.output
    assert f"seems to use {name}" in out.output
    assert _label_count(data_dir) == before


# d. latin-1


def test_latin1_csv_names_the_line_and_asks_for_utf8(
    data_dir: Path, labeled_folder: Path, tmp_path: Path
):
    _catalog(data_dir, labeled_folder)
    u0 = labeled_folder / "unlabeled" / "u_0.png"
    csv = tmp_path / "labels.csv"
    csv.write_bytes(f"path,label\n{u0},class_0\n{u0},café\n".encode("latin-1"))
    out = runner.invoke(app, ["label", "import", str(csv)])
    assert out.exit_code == 2, out.output
    assert "line 3 is not UTF-8" in out.output and "save it as UTF-8" in out.output


# e. CSV output line endings


def test_sql_csv_output_uses_lf_line_endings(data_dir: Path, labeled_folder: Path, tmp_path: Path):
    from embedding_assets.cli.sql import Output, run_query

    _catalog(data_dir, labeled_folder)
    db = DataPaths(data_dir).catalog_db
    text = run_query(db, "SELECT path, status FROM images ORDER BY path LIMIT 3", Output("csv"))
    assert "\r" not in text and text.count("\n") == 4
    out = tmp_path / "out.csv"
    run_query(db, "SELECT 1 AS a, 2 AS b", Output("csv", out))
    assert out.read_bytes() == b"a,b\n1,2\n"


# f. EXIF rotation


def test_exif_rotated_jpeg_records_its_displayed_size(data_dir: Path, tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(folder / "rotated.jpg", exif=exif)
    write_image(folder / "plain.jpg", size=(40, 20), fmt="JPEG")
    _catalog(data_dir, folder)
    rows = dict(
        (Path(p).name, (w, h))
        for p, w, h in query(data_dir, "SELECT path, width, height FROM images")
    )
    assert rows == {"rotated.jpg": (20, 40), "plain.jpg": (40, 20)}


# g. run monitoring on, telemetry off in the instance the CLI creates


def test_cli_created_instance_monitors_runs_without_telemetry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
):
    import dagster as dg

    from embedding_assets.cli import runner as run_mod

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("EMB_DATA_DIR", str(tmp_path / "data"))
    home = tmp_path / "data" / "dagster"
    home.mkdir(parents=True)
    (home / "dagster.yaml").touch()  # what earlier versions wrote: upgraded in place

    @dg.asset
    def one() -> int:
        return 1

    capfd.readouterr()
    with run_mod.instance() as inst:
        assert inst.run_monitoring_enabled
        assert inst.run_monitoring_settings.get("poll_interval_seconds") == 60
        assert not inst.telemetry_enabled
        assert dg.materialize([one], instance=inst).success
    # the first run in a new home: no telemetry banner above the run summary
    assert "Telemetry" not in capfd.readouterr().err
    assert os.environ["DAGSTER_HOME"] == str(home.resolve())
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")
    monkeypatch.delenv("DAGSTER_HOME")
    run_mod.ensure_home()  # a file the user edited (telemetry back on) is left alone
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"


def test_empty_dagster_home_of_the_users_is_set_up_an_existing_one_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
):
    from embedding_assets.cli import runner as run_mod

    new_home = tmp_path / "new_home"
    new_home.mkdir()  # what a user does before `export DAGSTER_HOME=...`
    monkeypatch.setenv("DAGSTER_HOME", str(new_home))
    capfd.readouterr()
    with run_mod.instance() as inst:
        assert inst.run_monitoring_enabled and not inst.telemetry_enabled
    err = capfd.readouterr().err
    assert "Telemetry" not in err and "No dagster instance configuration" not in err
    assert (new_home / "dagster.yaml").read_text() == run_mod.INSTANCE_YAML

    used_home = tmp_path / "used_home"
    (used_home / "storage").mkdir(parents=True)  # an instance on Dagster's defaults
    monkeypatch.setenv("DAGSTER_HOME", str(used_home))
    run_mod.ensure_home()
    assert not (used_home / "dagster.yaml").exists()


# h. folder names that look like "unlabeled"


def _materialize_catalog(data_dir: Path, folder: Path, **config):
    from embedding_assets.assets.catalog import image_catalog

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [image_catalog],
        resources=resources(data_dir),
        run_config={"ops": {"image_catalog": {"config": {"image_dir": str(folder), **config}}}},
        instance=instance,
    )
    assert result.success
    warnings = [
        e.user_message
        for e in instance.all_logs(result.run_id)
        if e.level == logging.WARNING and "unlabeled_folders" in e.user_message
    ]
    return result.asset_materializations_for_node("image_catalog")[0], warnings


def test_label_classes_are_listed_and_unlabeled_folders_configurable(
    data_dir: Path, tmp_path: Path
):
    folder = tmp_path / "imgs"
    for i, sub in enumerate(["cat", "cat", "unlabeled", "unlabeled2", "todo"]):
        write_image(folder / sub / f"{i}.png", seed=i)
    mat, warnings = _materialize_catalog(data_dir, folder)
    assert mat.metadata["label_classes"].value == {"cat": 2, "todo": 1, "unlabeled2": 1}
    assert mat.metadata["unlabeled_folders"].value == ["unlabeled", "_unlabeled", "unknown"]
    assert len(warnings) == 1 and "unlabeled2" in warnings[0] and "todo" not in warnings[0]

    other = tmp_path / "imgs2"
    for i, sub in enumerate(["cat", "todo", "Unlabeled2"]):
        write_image(other / sub / f"{i}.png", seed=10 + i)
    mat, warnings = _materialize_catalog(
        tmp_path / "data2", other, unlabeled_folders=["todo", "unlabeled2"]
    )
    assert mat.metadata["label_classes"].value == {"cat": 1} and not warnings


def test_look_alike_unlabeled_folder_is_warned_about():
    from embedding_assets.catalog.labels import UNLABELED_FOLDERS, folder_label, looks_unlabeled

    assert looks_unlabeled("unlabeled2") and looks_unlabeled("Unknown_old")
    assert not looks_unlabeled("cat")
    assert folder_label("/r/unlabeled2/a.png", "/r") == "unlabeled2"
    assert folder_label("/r/UNKNOWN/a.png", "/r") is None
    assert folder_label("/r/todo/a.png", "/r", ["todo"]) is None
    assert UNLABELED_FOLDERS == ("unlabeled", "_unlabeled", "unknown")
