"""The whole loop against a real `dagster dev`, through the webserver's GraphQL API.

The fast everyday twin of test_e2e_browser.py: launch `materialize_everything` with the
launchpad's defaults, see every asset materialized, import labels with the CLI, see
`label_sensor` report them as a materialization of `labels` and the automation sensor launch
exactly one run of classifier → predictions → label_queue, and no second one after more ticks.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sensors.label_sensor import active_learning_automation, label_sensor
from tests.dagster_server import dagster_dev, graphql, wait_for_run
from tests.e2e_setup import import_labels, write_small_digits

pytestmark = pytest.mark.e2e

LOCATION = "embedding_assets"
EVERYTHING_JOB = "materialize_everything"
RETRAINED = {"classifier", "predictions", "label_queue"}
SENSORS = (label_sensor.name, active_learning_automation.name)

LAUNCH = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
} }"""

ASSETS = """{ assetNodes { assetKey { path } groupName description isMaterializable
    assetMaterializations(limit: 1) { runId } } }"""

LATEST = """query($key: AssetKeyInput!) { assetOrError(assetKey: $key) { ... on Asset {
    assetMaterializations(limit: 1) { runId tags { key value }
        metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }"""

AUTOMATION_RUNS = """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) {
    ... on Runs { results { runId status endTime assetSelection { path } } } } }"""

TICKS = """query($sensor: SensorSelector!, $after: Float) { sensorOrError(sensorSelector: $sensor) {
    ... on Sensor { sensorState { ticks(afterTimestamp: $after) { timestamp } } } } }"""


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


def automation_runs(url: str) -> list[dict]:
    """The runs that the automation sensor launched, newest first."""
    tags = [{"key": "dagster/sensor_name", "value": active_learning_automation.name}]
    return graphql(url, AUTOMATION_RUNS, {"tags": tags})["runsOrError"]["results"]


def wait_for_retrain(url: str, timeout: float = 240) -> dict:
    """The automation run that retrains the classifier, once it has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in automation_runs(url):
            if "classifier" in {"/".join(a["path"]) for a in run["assetSelection"]}:
                wait_for_run(url, run["runId"], timeout=timeout)
                return next(r for r in automation_runs(url) if r["runId"] == run["runId"])
        time.sleep(3)
    raise TimeoutError(f"no automation run retrained the classifier within {timeout} s")


def selector(sensor: str) -> dict:
    return {
        "repositoryLocationName": LOCATION,
        "repositoryName": "__repository__",
        "sensorName": sensor,
    }


def wait_for_ticks(url: str, after: float, ticks: int = 2, timeout: float = 180) -> None:
    """Until both sensors have evaluated `ticks` times after `after` (a Unix time): enough for
    any run they would still launch to show up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = [
            len(
                graphql(url, TICKS, {"sensor": selector(name), "after": after})["sensorOrError"][
                    "sensorState"
                ]["ticks"]
            )
            for name in SENSORS
        ]
        if min(counts) >= ticks:
            return
        time.sleep(3)
    raise TimeoutError(f"{SENSORS} did not tick {ticks} times within {timeout} s")


def latest_materialization(url: str, key: str) -> dict:
    """runId, tags and integer metadata of the latest materialization of `key`."""
    asset = graphql(url, LATEST, {"key": {"path": [key]}})["assetOrError"]
    (event,) = asset["assetMaterializations"]
    return {
        "runId": event["runId"],
        "tags": {t["key"]: t["value"] for t in event["tags"]},
        "metadata": {m["label"]: m.get("intValue") for m in event["metadataEntries"]},
    }


# Over 90 s (about 150 s on 2 cores) because it must be: a real `dagster dev` (webserver,
# daemon, code server) runs the whole job in its own processes, then the sensor's retrain is a
# second real run; nothing cheaper checks that the daemon, the sensor and the automation
# conditions start exactly one retrain per batch of labels.
def test_materialize_everything_then_labels_trigger_one_retrain(tmp_path: Path):
    images = tmp_path / "images"
    hidden = write_small_digits(images)
    with dagster_dev(tmp_path, images) as (url, env):
        assert graphql(url, "{ shouldShowNux }")["shouldShowNux"] is False, "no community dialog"
        assert "Warning" not in (tmp_path / "dagster_dev.log").read_text(), "`emb ui` starts clean"
        run_id = launch_job(url, EVERYTHING_JOB)
        status = wait_for_run(url, run_id, timeout=400)
        assert status == "SUCCESS", run_failure_log(url, run_id)

        nodes = graphql(url, ASSETS)["assetNodes"]
        assert len(nodes) >= 10
        for node in nodes:
            key = "/".join(node["assetKey"]["path"])
            assert node["description"], f"{key} has no description in the UI"
            assert node["groupName"] != "default", f"{key} is in no named group"
            if not node["isMaterializable"]:
                assert key == "labels", f"{key} is external"
                continue
            assert node["assetMaterializations"], f"{key} was not materialized"
            assert node["assetMaterializations"][0]["runId"] == run_id, key

        # The folder labels were trained on by that run itself: no second, racing retrain.
        wait_for_ticks(url, after=time.time())
        assert automation_runs(url) == []

        hi = import_labels(env, hidden[:20], tmp_path / "labels.csv")
        retrain = wait_for_retrain(url)
        assert retrain["status"] == "SUCCESS", run_failure_log(url, retrain["runId"])
        assert {"/".join(a["path"]) for a in retrain["assetSelection"]} == RETRAINED
        labels = latest_materialization(url, "labels")
        assert labels["runId"] == "", "reported by the sensor, outside any run"
        assert labels["metadata"]["last_label_id"] == hi
        assert labels["metadata"]["count"] == 20, "one import, one report"
        assert labels["metadata"]["first_label_id"] == hi - 19
        assert labels["tags"]["dagster/data_version"] == str(hi)
        classifier = latest_materialization(url, "classifier")
        assert classifier["runId"] == retrain["runId"]
        assert classifier["metadata"]["max_label_id"] == hi
        assert classifier["tags"]["dagster/input_data_version/labels"] == str(hi)

        wait_for_ticks(url, after=retrain["endTime"])
        assert len(automation_runs(url)) == 1, "one batch of labels, one retrain"
