"""The label sensor and the retrain it causes, in a real Dagster instance over a real DuckDB:
labels land → one `labels` materialization → one automation run of the three AL assets."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)

from embedding_assets.assets.learning import labels
from embedding_assets.catalog.labels import set_label
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.definitions import defs as project_defs
from resources.storage import DataPaths
from sensors.label_sensor import MIN_LABELS_ENV, active_learning_automation, label_sensor
from tests.al_helpers import AL_ASSETS, catalog_with_vectors, query
from tests.helpers import resources

REPO = Path(__file__).resolve().parents[1]
AUTOMATED = {a.key for a in AL_ASSETS}


def _tick(
    instance: dg.DagsterInstance, data_dir: Path, cursor: str | None
) -> tuple[dg.SensorResult | dg.SkipReason, str | None]:
    """One label_sensor evaluation: its result and the cursor it leaves."""
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"storage": resources(data_dir, lock_timeout_s=30)["storage"]},
    )
    result = label_sensor(context)
    return result, result.cursor if isinstance(result, dg.SensorResult) else cursor


def _report(instance: dg.DagsterInstance, data_dir: Path, cursor: str | None) -> str | None:
    """A tick as the daemon runs it: the sensor's asset events are recorded in the instance."""
    result, cursor = _tick(instance, data_dir, cursor)
    for event in result.asset_events if isinstance(result, dg.SensorResult) else []:
        instance.report_runless_asset_event(event)
    return cursor


def _enqueue(instance: dg.DagsterInstance, job: dg.JobDefinition) -> dg.DagsterRun:
    """A run of `job` waiting in the run queue, as a launch from the UI leaves it (a queued run
    names its code location; nothing here loads it)."""
    repository = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("test"), "__repository__")
    return instance.create_run_for_job(
        job_def=job,
        status=dg.DagsterRunStatus.QUEUED,
        remote_job_origin=RemoteJobOrigin(repository, job.name),
    )


def _dequeue(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRun:
    """Start a queued run as the run queue daemon does (RUN_STARTING, then launch)."""
    event = dg.DagsterEvent(dg.DagsterEventType.RUN_STARTING.value, job_name=run.job_name)
    instance.report_dagster_event(event, run_id=run.run_id)
    return instance.get_run_by_id(run.run_id)


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


def _reported(result: dg.SensorResult | dg.SkipReason) -> tuple[int, int, int, str]:
    """(first, last label_id, count, data version) of the one `labels` materialization."""
    assert isinstance(result, dg.SensorResult), result
    (event,) = result.asset_events
    assert isinstance(event, dg.AssetMaterialization) and event.asset_key == labels.key
    meta = {k: v.value for k, v in event.metadata.items()}
    return (
        meta["first_label_id"],
        meta["last_label_id"],
        meta["count"],
        event.tags["dagster/data_version"],
    )


def test_project_runs_both_sensors_by_default():
    sensor = project_defs.resolve_sensor_def("label_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert not sensor.targets, "the sensor reports labels; it launches no run itself"
    automation = project_defs.resolve_sensor_def(active_learning_automation.name)
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING
    graph = project_defs.resolve_asset_graph()
    assert automation.asset_selection.resolve(graph) == AUTOMATED
    # Nothing else starts on its own: only the three retrain assets carry a condition.
    assert {k for k in graph.get_all_asset_keys() if graph.get(k).automation_condition} == (
        AUTOMATED
    )
    assert not graph.get(labels.key).is_executable
    assert labels.key in graph.get(dg.AssetKey("classifier")).parent_keys


def test_new_labels_are_reported_as_materializations_of_labels(
    data_dir: Path, labeled_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with dg.DagsterInstance.ephemeral() as instance:
        skipped, _ = _tick(instance, data_dir, None)
        assert isinstance(skipped, dg.SkipReason) and "No catalog" in skipped.skip_message
        paths = DataPaths(data_dir)
        scan_catalog(paths.catalog_db, labeled_folder)
        skipped, _ = _tick(instance, data_dir, None)
        assert isinstance(skipped, dg.SkipReason) and "no embeddings" in skipped.skip_message

        catalog_with_vectors(data_dir, labeled_folder)  # the folder labels, 24 of them
        first, cursor = _tick(instance, data_dir, None)
        assert _reported(first) == (1, 24, 24, "24") and cursor == "24"
        idle, cursor = _tick(instance, data_dir, cursor)
        assert isinstance(idle, dg.SkipReason) and cursor == "24"

        unlabeled = sorted((labeled_folder / "unlabeled").glob("*.png"))
        monkeypatch.setenv(MIN_LABELS_ENV, "2")
        set_label(paths.catalog_db, str(unlabeled[0]), "class_1")
        waiting, cursor = _tick(instance, data_dir, cursor)
        assert isinstance(waiting, dg.SkipReason) and "waiting for 2" in waiting.skip_message
        assert cursor == "24", "labels below the minimum wait for the next ones"
        proc = _import(data_dir, [(str(unlabeled[1]), "class_2")], tmp_path / "new.csv")
        assert proc.wait(120) == 0, proc.stdout.read()
        batch, cursor = _tick(instance, data_dir, cursor)
        assert _reported(batch) == (25, 26, 2, "26") and cursor == "26"


def test_labels_a_classifier_was_trained_on_are_not_reported(data_dir: Path, labeled_folder: Path):
    catalog_with_vectors(data_dir, labeled_folder)
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize(
            AL_ASSETS, resources=resources(data_dir, lock_timeout_s=30), instance=instance
        ).success
        skipped, cursor = _tick(instance, data_dir, None)
        assert isinstance(skipped, dg.SkipReason) and cursor is None
        assert query(data_dir, "SELECT max(max_label_id) FROM model_versions") == [(24,)]


def test_one_batch_of_labels_gives_one_retrain(data_dir: Path, labeled_folder: Path):
    """The daemon's loop, tick by tick: label_sensor reports, the eager conditions decide.
    Labels that land while a run including the classifier is queued or running are that run's
    to train on; a batch after it gives exactly one request of the three assets."""
    catalog_with_vectors(data_dir, labeled_folder)
    db = DataPaths(data_dir).catalog_db
    unlabeled = [str(p) for p in sorted((labeled_folder / "unlabeled").glob("*.png"))]
    defs = dg.Definitions(
        assets=[*AL_ASSETS, labels],
        jobs=[dg.define_asset_job("materialize_all", selection=AL_ASSETS)],
        resources=resources(data_dir, lock_timeout_s=30),
        executor=dg.in_process_executor,
    )
    job = defs.resolve_job_def("materialize_all")

    def requested(cursor):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        return {k for k in AUTOMATED if result.get_requested_partitions(k)}, result.cursor

    with dg.DagsterInstance.ephemeral() as instance:
        # the synthetic vectors stand in for a materialized `embeddings`
        instance.report_runless_asset_event(dg.AssetMaterialization("embeddings"))
        nothing, ac = requested(None)
        assert not nothing

        # "Materialize all" (a run that includes the classifier) waits in the run queue
        queued = _enqueue(instance, job)
        label_cursor = _report(instance, data_dir, None)  # the folder labels 1-24
        assert label_cursor == "24"
        nothing, ac = requested(ac)
        assert not nothing, "the queued run includes the classifier: no second retrain"
        # ... then runs; one more label lands before its classifier step
        running = _dequeue(instance, queued)
        set_label(db, unlabeled[0], "class_1")
        label_cursor = _report(instance, data_dir, label_cursor)
        assert label_cursor == "25"
        nothing, ac = requested(ac)
        assert not nothing, "the running run includes the classifier: no second retrain"
        assert execute_run(InMemoryJob(job), running, instance).success
        for _ in range(2):
            nothing, ac = requested(ac)
            assert not nothing, "that run trained on the labels reported meanwhile"
        assert query(data_dir, "SELECT max(max_label_id) FROM model_versions") == [(25,)]

        set_label(db, unlabeled[1], "class_2")
        label_cursor = _report(instance, data_dir, label_cursor)
        assert label_cursor == "26"
        retrain, ac = requested(ac)
        assert retrain == AUTOMATED, "one batch of labels: one run of the three assets"
        nothing, ac = requested(ac)
        assert not nothing, "requested once, not on every tick"
        assert dg.materialize(
            AL_ASSETS, resources=resources(data_dir, lock_timeout_s=30), instance=instance
        ).success
        nothing, ac = requested(ac)
        assert not nothing
        assert isinstance(_tick(instance, data_dir, label_cursor)[0], dg.SkipReason)
        assert query(data_dir, "SELECT max(version_id), max(max_label_id) FROM model_versions") == [
            (2, 26)
        ]


def test_import_and_sensor_while_a_materialization_holds_the_writer(
    data_dir: Path, labeled_folder: Path, tmp_path: Path
):
    catalog_with_vectors(data_dir, labeled_folder)
    db = data_dir / "catalog.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from resources.duckdb_store import connect\n"
            f"with connect({str(db)!r}) as con:\n"
            "    con.execute('SELECT count(*) FROM images').fetchall()\n"
            "    print('locked', flush=True)\n"
            "    sys.stdin.readline()  # held until the test has seen the lock\n",
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
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
        holder.stdin.close()  # the materialization ends: the writer is free
        assert holder.wait(30) == 0
        output = proc.communicate(timeout=120)[0]
        assert proc.returncode == 0, output
        assert "4 label(s) added" in output and "locked" not in output.lower()
        deadline = time.monotonic() + 30
        result = None
        while time.monotonic() < deadline:  # the importer may still be writing at first
            result, cursor = _tick(instance, data_dir, cursor)
            if isinstance(result, dg.SensorResult):
                break
            time.sleep(0.5)
    assert _reported(result) == (25, 28, 4, "28") and cursor == "28"
    assert query(data_dir, "SELECT count(*) FROM current_labels") == [(28,)]
