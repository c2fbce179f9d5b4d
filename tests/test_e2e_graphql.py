"""The whole loop against a real `dagster dev`, through the webserver's GraphQL API.

The fast everyday twin of test_e2e_browser.py: launch `materialize_everything` with the
launchpad's defaults, see every asset materialized, import labels with the CLI and see the
label sensor's `retrain_classifier` run succeed in the same instance.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sensors.label_sensor import RETRAIN_JOB
from tests.dagster_server import dagster_dev, graphql, runs_of_job, wait_for_run
from tests.e2e_setup import import_labels, write_small_digits

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LOCATION = "embedding_assets"
EVERYTHING_JOB = "materialize_everything"

LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
} }"""

ASSETS = """{ assetNodes { assetKey { path } groupName description
    assetMaterializations(limit: 1) { runId } } }"""


def launch_job(url: str, job: str, run_config: dict | None = None) -> str:
    """Launch `job` as the launchpad does (its defaults unless `run_config` says otherwise)."""
    params = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": "__repository__",
            "jobName": job,
        },
        "runConfigData": run_config or {},
        "mode": "default",
    }
    result = graphql(url, LAUNCH, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def run_failure_log(url: str, run_id: str) -> str:
    """The error messages of a run, so a failed run explains itself in the test output."""
    query = """query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events {
        __typename ... on MessageEvent { message } } } } }"""
    events = graphql(url, query, {"id": run_id})["logsForRun"]["events"]
    return "\n".join(
        e.get("message", "")
        for e in events
        if "Failure" in e["__typename"] or "Error" in e.get("message", "")
    )


def wait_for_retrain(url: str, min_label_id: int, timeout: float = 240) -> dict:
    """The label sensor's run that covers label_id `min_label_id`, once it has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in runs_of_job(url, RETRAIN_JOB):
            tags = {t["key"]: t["value"] for t in run["tags"]}
            covered = tags.get("emb/label_ids", "0-0").split("-")
            if int(covered[1]) >= min_label_id:
                run["status"] = wait_for_run(url, run["runId"], timeout=timeout)
                run["tags"] = tags
                return run
        time.sleep(3)
    raise TimeoutError(f"no {RETRAIN_JOB} run for label_id {min_label_id} within {timeout} s")


def test_materialize_everything_then_labels_trigger_retrain(tmp_path: Path):
    images = tmp_path / "images"
    hidden = write_small_digits(images)
    with dagster_dev(tmp_path, images) as (url, env):
        run_id = launch_job(url, EVERYTHING_JOB)
        status = wait_for_run(url, run_id, timeout=400)
        assert status == "SUCCESS", run_failure_log(url, run_id)

        nodes = graphql(url, ASSETS)["assetNodes"]
        assert len(nodes) >= 10
        for node in nodes:
            key = "/".join(node["assetKey"]["path"])
            assert node["assetMaterializations"], f"{key} was not materialized"
            assert node["assetMaterializations"][0]["runId"] == run_id, key
            assert node["description"], f"{key} has no description in the UI"
            assert node["groupName"] != "default", f"{key} is in no named group"

        hi = import_labels(env, hidden[:20], tmp_path / "labels.csv")
        retrain = wait_for_retrain(url, hi)
        assert retrain["status"] == "SUCCESS", run_failure_log(url, retrain["runId"])
        assert int(retrain["tags"]["emb/new_labels"]) >= 20
        # The folder labels were trained on by the run itself: no second, racing retrain.
        assert len(runs_of_job(url, RETRAIN_JOB)) == 1
