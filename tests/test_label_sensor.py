"""The label sensor in a real Dagster instance: labels land → one retrain run → new version."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from embedding_assets.definitions import defs as project_defs
from sensors.label_sensor import RETRAIN_JOB, label_sensor, retrain_job
from tests.al_helpers import AL_ASSETS, catalog_with_vectors, query, resources

REPO = Path(__file__).resolve().parents[1]


def _defs(data_dir: Path) -> dg.Definitions:
    return dg.Definitions(
        assets=AL_ASSETS, jobs=[retrain_job], sensors=[label_sensor], resources=resources(data_dir)
    )


def _tick(instance: dg.DagsterInstance, data_dir: Path, cursor: str | None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"storage": resources(data_dir)["storage"]}
    )
    result = label_sensor(context)
    return result, context.cursor


def _import(data_dir: Path, rows: list[tuple[str, str]], csv_path: Path) -> subprocess.Popen:
    csv_path.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows))
    env = {**os.environ, "EMB_DATA_DIR": str(data_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "embedding_assets.cli", "label", "import", str(csv_path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_project_runs_the_sensor_by_default():
    sensor = project_defs.resolve_sensor_def("label_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name == RETRAIN_JOB
    assert project_defs.resolve_job_def(RETRAIN_JOB) is not None


def test_label_import_triggers_exactly_one_retrain(data_dir: Path, labeled_folder: Path, tmp_path):
    catalog_with_vectors(data_dir, labeled_folder)
    defs = _defs(data_dir)
    with dg.DagsterInstance.ephemeral() as instance:
        first, cursor = _tick(instance, data_dir, None)  # the folder labels
        assert isinstance(first, dg.RunRequest) and first.run_key == "labels-1-24"
        job = defs.resolve_job_def(RETRAIN_JOB)
        assert job.execute_in_process(instance=instance, tags=first.tags).success
        assert query(data_dir, "SELECT count(*) FROM model_versions") == [(1,)]

        idle, cursor2 = _tick(instance, data_dir, cursor)
        assert isinstance(idle, dg.SkipReason) and cursor2 == cursor == "24"

        unlabeled = sorted((labeled_folder / "unlabeled").glob("*.png"))
        proc = _import(data_dir, [(str(unlabeled[0]), "class_1")], tmp_path / "new.csv")
        assert proc.wait(120) == 0, proc.stdout.read()
        request, cursor3 = _tick(instance, data_dir, cursor)
        assert isinstance(request, dg.RunRequest) and request.run_key == "labels-25-25"
        result = job.execute_in_process(instance=instance, tags=request.tags)
        assert result.success
        assert query(data_dir, "SELECT max(version_id), max(max_label_id) FROM model_versions") == [
            (2, 25)
        ]
        again, cursor4 = _tick(instance, data_dir, cursor3)
        assert isinstance(again, dg.SkipReason) and cursor4 == "25"


def test_import_and_sensor_while_a_materialization_holds_the_writer(
    data_dir: Path, labeled_folder: Path, tmp_path: Path
):
    catalog_with_vectors(data_dir, labeled_folder)
    db = data_dir / "catalog.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from resources.duckdb_store import connect\n"
            f"with connect({str(db)!r}) as con:\n"
            "    con.execute('SELECT count(*) FROM images').fetchall()\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(4)\n",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    unlabeled = sorted((labeled_folder / "unlabeled").glob("*.png"))
    rows = [(str(p), f"class_{i % 3}") for i, p in enumerate(unlabeled)]
    proc = _import(data_dir, rows, tmp_path / "during_lock.csv")
    with dg.DagsterInstance.ephemeral() as instance:
        skipped, cursor = _tick(instance, data_dir, "24")
        assert isinstance(skipped, dg.SkipReason) and "locked" in skipped.skip_message
        assert cursor == "24", "a skipped tick must not move the cursor"
        assert holder.wait(30) == 0
        output = proc.communicate(timeout=120)[0]
        assert proc.returncode == 0, output
        assert "4 label(s) added" in output and "locked" not in output.lower()
        deadline = time.monotonic() + 30
        request = None
        while time.monotonic() < deadline:  # the importer may still be writing at first
            request, cursor = _tick(instance, data_dir, cursor)
            if isinstance(request, dg.RunRequest):
                break
            time.sleep(0.5)
    assert isinstance(request, dg.RunRequest) and request.run_key == "labels-25-28"
    assert query(data_dir, "SELECT count(*) FROM current_labels") == [(28,)]
