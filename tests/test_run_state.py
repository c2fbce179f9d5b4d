"""A run with nothing new is a catalog scan (issue 23): `emb run` makes a run of `image_catalog`
and, when the state after it (catalog, labels, settings, code, outputs) is the one the last
complete run left and no run came since, nothing else. Anything new, and `--full`, goes through
every asset. Real Dagster runs and DuckDB, on small images with a small random-init backbone
(the settings of test_noop_run)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import dagster as dg
import pytest

from embedding_assets import definitions
from embedding_assets.catalog.labels import set_label
from embedding_assets.cli import run_state
from embedding_assets.cli.runner import INVOCATION_TAG, run_everything
from embedding_assets.cli.runs import CATALOG, Runs
from embedding_assets.cli.summary import Pointers, problem_lines, summary_lines
from resources.duckdb_store import connect
from resources.paths import DataPaths
from tests.helpers import write_image
from tests.test_noop_run import small_config

CATALOG_CHECK = "catalog_has_usable_images"


@pytest.fixture(autouse=True)
def definitions_on_this_data_dir(data_dir: Path) -> None:
    importlib.reload(definitions)  # the definitions bind the data directory when imported


def _run(config: dict, full: bool = False) -> Runs:
    runs = run_everything(config, verbose=False, full=full)
    assert runs.success, problem_lines(runs)
    return runs


def _materialized(runs: Runs) -> set[str]:
    return {e.asset_key.to_user_string() for e in runs.get_asset_materialization_events()}


def _checked(runs: Runs) -> set[str]:
    return {c.check_name for c in runs.get_asset_check_evaluations()}


def _every_asset() -> set[str]:
    job = definitions.defs.resolve_job_def(definitions.EVERYTHING_JOB)
    return {k.to_user_string() for k in job.asset_layer.executable_asset_keys}


def _assert_up_to_date(runs: Runs) -> None:
    assert len(runs.results) == 1 and runs.up_to_date is not None
    assert _materialized(runs) == {CATALOG} and _checked(runs) == {CATALOG_CHECK}


def _assert_every_asset(runs: Runs) -> None:
    assert runs.up_to_date is None
    assert _materialized(runs) == _every_asset()


def _states(db: Path) -> list[tuple]:
    with connect(db, read_only=True) as con:
        return con.execute(
            "SELECT run_id, state, newest_run_id FROM run_states ORDER BY created_at"
        ).fetchall()


def test_nothing_new_runs_the_catalog_alone_and_says_so(data_dir: Path, labeled_folder: Path):
    db = DataPaths(data_dir).catalog_db
    config = small_config(labeled_folder)
    cold = _run(config)
    assert len(cold.results) == 2, "the catalog's run, then the rest's"
    catalog_run, rest_run = cold.run_ids
    assert _materialized(cold.results[0]) == {CATALOG}
    assert _checked(cold.results[0]) == {CATALOG_CHECK}, "the check comes with its asset"
    assert CATALOG not in _materialized(cold.results[1])
    _assert_every_asset(cold)
    assert _states(db) == [(rest_run, _states(db)[0][1], rest_run)]
    lines = summary_lines(cold, 1.0, Pointers(str(db), "home"))
    assert (
        lines[0]
        == f"Runs {catalog_run} (image_catalog) and {rest_run} (the rest) succeeded in 1.0 s."
    )
    assert not any(line.startswith("Up to date") for line in lines)

    second = _run(config)
    _assert_up_to_date(second)
    steps = {e.step_key for e in second.get_step_success_events()}
    assert steps == {CATALOG, f"{CATALOG}_{CATALOG_CHECK}"}, "no other step"
    assert [str(k.to_user_string()) for k in second.not_run] and len(second.not_run) == len(
        _every_asset()
    ) - 1
    with dg.DagsterInstance.get() as instance:
        newest = instance.get_runs(limit=3)
        assert newest[0].run_id == second.run_ids[0], "the catalog's run is recorded"
        assert newest[0].status == dg.DagsterRunStatus.SUCCESS
        assert newest[0].asset_selection == {dg.AssetKey(CATALOG)}
        assert newest[1].tags[INVOCATION_TAG] == newest[2].tags[INVOCATION_TAG], "one invocation"
        assert newest[0].tags[INVOCATION_TAG] != newest[1].tags[INVOCATION_TAG]
    assert [(r, n) for r, _, n in _states(db)] == [(rest_run, second.run_ids[0])]

    text = " ".join(" ".join(summary_lines(second, 1.0, Pointers(str(db), "home"))).split())
    assert text.startswith(f"Run {second.run_ids[0]} succeeded in 1.0 s.")
    assert f"Up to date nothing changed since run {rest_run} at " in text
    assert (
        "(catalog, labels, settings, code, outputs): "
        f"{len(_every_asset()) - 1} assets not run; emb run --full checks every asset anyway"
    ) in text
    assert "0 new this run" in text and "Embeddings" not in text and "Reused" not in text
    # the warnings of the run whose results stand, once more (a challenger not promoted here)
    warned = problem_lines(cold)
    assert warned and all(" warning: " in line for line in warned)
    assert problem_lines(second) == [f"{line} (run {rest_run})" for line in warned]

    third = _run(config)  # still nothing new: the catalog's run of `second` is the newest
    _assert_up_to_date(third)
    assert [(r, n) for r, _, n in _states(db)] == [(rest_run, third.run_ids[0])]


def test_anything_new_goes_through_every_asset(
    data_dir: Path, labeled_folder: Path, monkeypatch: pytest.MonkeyPatch
):
    paths = DataPaths(data_dir)
    config = small_config(labeled_folder)
    _run(config)
    _assert_up_to_date(_run(config))

    def through_every_asset_then_up_to_date(what: str, config: dict = config) -> Runs:
        runs = _run(config)
        assert len(runs.results) == 2, what
        _assert_every_asset(runs)
        _assert_up_to_date(_run(config))
        return runs

    unlabeled = sorted((labeled_folder / "unlabeled").glob("*.png"))
    assert set_label(paths.catalog_db, str(unlabeled[0]), "class_0").inserted == 1
    through_every_asset_then_up_to_date("a new label")

    write_image(labeled_folder / "unlabeled" / "new.png", size=(24, 24), seed=4242)
    runs = through_every_asset_then_up_to_date("a new image")
    embeddings = [
        e for e in runs.get_asset_materialization_events() if e.asset_key.path == ["embeddings"]
    ]
    assert embeddings[0].step_materialization_data.materialization.metadata["embedded_now"].value

    changed = json.loads(json.dumps(config))
    changed["ops"]["projections"]["config"]["plot_points"] = 1000
    through_every_asset_then_up_to_date("another config", changed)

    plot = next(paths.plots_dir.rglob("pca.png"))
    plot.unlink()
    through_every_asset_then_up_to_date("a deleted output")
    assert plot.is_file(), "drawn again"

    monkeypatch.setenv("EMB_RETRAIN_MIN_LABELS", "3")
    through_every_asset_then_up_to_date("another EMB_ setting")

    job = definitions.defs.resolve_job_def(definitions.EVERYTHING_JOB)
    with dg.DagsterInstance.get() as instance:
        outside = job.execute_in_process(
            run_config={"ops": {"classifier": config["ops"]["classifier"]}},
            instance=instance,
            asset_selection=[dg.AssetKey("classifier")],
        )
    assert outside.success
    through_every_asset_then_up_to_date("a run made outside `emb run`")


def test_full_runs_every_asset_in_one_run(data_dir: Path, labeled_folder: Path):
    config = small_config(labeled_folder)
    for _ in range(2):
        runs = _run(config, full=True)
        assert len(runs.results) == 1
        _assert_every_asset(runs)
    _assert_up_to_date(_run(config))  # a complete --full run records its state too
    runs = _run(config, full=True)
    assert len(runs.results) == 1 and runs.up_to_date is None
    _assert_every_asset(runs)


def test_a_failed_run_records_no_state(data_dir: Path, labeled_folder: Path):
    db = DataPaths(data_dir).catalog_db
    config = small_config(labeled_folder)
    config["ops"]["embedding_model"]["config"]["model"] = "no_such_model"
    for _ in range(2):
        runs = run_everything(config, verbose=False)
        assert not runs.success and len(runs.results) == 2, "not up to date: it failed"
        assert "embeddings" not in _materialized(runs)
    assert _states(db) == []


def test_a_failed_catalog_stops_the_runs(data_dir: Path, tmp_path: Path):
    bad = tmp_path / "bad"
    (bad / "x.png").parent.mkdir()
    (bad / "x.png").write_text("not an image")
    runs = run_everything(small_config(bad), verbose=False)
    assert not runs.success and len(runs.results) == 1, "a failed catalog stops the runs"
    assert any("steps did not run" in line for line in problem_lines(runs))
    assert _states(DataPaths(data_dir).catalog_db) == []


def test_the_state_sees_every_part(data_dir: Path, tmp_path: Path, monkeypatch):
    """Each part on its own: what changes it and what does not."""
    paths = DataPaths(data_dir)
    folder = tmp_path / "images"
    write_image(folder / "a" / "1.png", seed=1)
    from embedding_assets.catalog.scan import scan_catalog

    scan_catalog(paths.catalog_db, folder)
    home = data_dir / "dagster"
    (paths.models_dir).mkdir(parents=True)
    (paths.models_dir / "m.bin").write_bytes(b"1")
    (home / "runs").mkdir(parents=True)
    (paths.locks_dir).mkdir()

    def state(config: dict | None = None) -> dict[str, str]:
        return run_state.current_state(paths, config or {"ops": {}}, home)[0].parts

    before = state()
    assert state({"ops": {}, "loggers": {"console": {}}}) == before, "loggers decide nothing"
    (home / "runs" / "x.db").write_bytes(b"x")  # the Dagster home, checked apart
    (paths.locks_dir / "l").write_bytes(b"x")
    scan_catalog(paths.catalog_db, folder)  # rescanned, nothing new: only last_seen moves
    assert state() == before

    assert state({"ops": {"clusters": {"config": {"k": 3}}}})["config"] != before["config"]
    monkeypatch.setenv("EMB_ANYTHING", "1")
    assert state()["env"] != before["env"]
    monkeypatch.delenv("EMB_ANYTHING")
    (paths.models_dir / "m.bin").unlink()
    assert state()["outputs"] != before["outputs"]
    (paths.models_dir / "m.bin").write_bytes(b"1")
    set_label(paths.catalog_db, str(folder / "a" / "1.png"), "b")
    after = state()
    assert after["labels"] != before["labels"] and after["catalog"] == before["catalog"]
    (folder / "a" / "1.png").unlink()
    scan_catalog(paths.catalog_db, folder)
    assert state()["catalog"] != after["catalog"], "a removed image"
