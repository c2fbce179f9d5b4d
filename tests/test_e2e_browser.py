"""The whole loop as a user clicks it: `dagster dev`, the Dagster UI in headless Chromium,
"Materialize all" on the asset graph, a successful run, a rendered plot, then the open label
requests answered on `emb serve`'s /label page, the retrain run they cause (launched by the
automation sensor) in the UI, and the next round offered on the page.

Screenshots go to tests/artifacts/e2e_browser/ (kept by CI; a failure leaves `failure.png`).
Needs Debian's `chromium` (`.ci/run` installs it with apt); skips where none is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sensors.label_sensor import active_learning_automation
from tests.dagster_server import (
    REPO,
    dagster_dev,
    free_port,
    graphql,
    wait_for_http,
    wait_for_run,
)
from tests.e2e_setup import emb, write_small_digits
from tests.test_e2e_graphql import automation_runs, run_failure_log, wait_for_retrain

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / "tests" / "artifacts" / "e2e_browser"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UI_TIMEOUT_MS = 60_000


def chromium_path() -> str:
    """Debian's chromium (or $CHROMIUM); skip with the reason when there is none."""
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    pytest.skip("no Chromium found (apt-get install chromium, or set $CHROMIUM)")


def all_runs(url: str) -> list[dict]:
    query = "{ runsOrError { ... on Runs { results { runId jobName status } } } }"
    return graphql(url, query)["runsOrError"]["results"]


def wait_for_launched_run(url: str, timeout: float = 60) -> dict:
    """The run the "Materialize all" click launched (the instance starts empty)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = all_runs(url)
        if runs:
            assert len(runs) == 1, runs
            return runs[0]
        time.sleep(1)
    raise TimeoutError(f"no run appeared within {timeout} s of clicking Materialize all")


@contextmanager
def emb_serve(env: dict[str, str]) -> Iterator[str]:
    """`emb serve` (one worker) on the data folder of `env`, on loopback; stopped on exit."""
    port = free_port()
    emb_bin = REPO / ".venv" / "bin" / "emb"
    cmd = [str(emb_bin), "serve", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health", proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def web_label_count(env: dict[str, str]) -> int:
    sql = "select count(*) as n from labels where source = 'web'"
    out = emb(env, "sql", sql, "--format", "csv")
    return int(out.strip().splitlines()[-1])


# Over 90 s (150-250 s on 2 cores, beside the GraphQL test on the other worker) because it must
# be: the user's whole loop in a real browser against a real `dagster dev`, the job, the label
# page, the sensor and its retrain run, each in its own processes; the GraphQL test checks the
# same loop without the browser, this one checks what a person clicks.
def test_materialize_all_in_the_ui_then_labels_trigger_retrain(tmp_path: Path):
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    images = tmp_path / "images"
    write_small_digits(images)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)

    with dagster_dev(tmp_path, images) as (url, env), sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(UI_TIMEOUT_MS)
        # A fresh instance greets a local browser with a "Join the Dagster community" dialog
        # that covers the page; mark it seen, and click it away should it still appear.
        graphql(url, "mutation { setNuxSeen }")
        page.add_locator_handler(
            page.get_by_role("button", name="Skip", exact=True), lambda skip: skip.click()
        )
        expect = sync_api.expect
        try:
            page.goto(f"{url}/asset-groups")
            materialize_all = page.get_by_role("button", name="Materialize all")
            expect(materialize_all).to_be_enabled()
            for group in ("ingest", "embeddings", "analytics", "active_learning", "search"):
                expect(page.get_by_text(group, exact=True).first).to_be_visible()
            page.screenshot(path=ARTIFACTS / "01_asset_graph.png", animations="disabled")

            materialize_all.click()
            run = wait_for_launched_run(url)
            page.goto(f"{url}/runs/{run['runId']}")
            status = wait_for_run(url, run["runId"], timeout=400)
            assert status == "SUCCESS", run_failure_log(url, run["runId"])
            page.reload()
            expect(page.get_by_text("Success", exact=True).first).to_be_visible()
            expect(page.get_by_text("projections", exact=True).first).to_be_visible()
            page.screenshot(path=ARTIFACTS / "02_run_succeeded.png", animations="disabled")

            page.goto(f"{url}/assets/projections")
            expect(page.get_by_text("2-D maps", exact=False).first).to_be_visible()
            page.get_by_text("[Show Markdown]").first.click()
            plot = page.get_by_role("dialog").locator("img").first
            expect(plot).to_be_visible()
            width = plot.evaluate("img => img.complete ? img.naturalWidth : 0")
            assert width > 100, "the plot image did not decode in the browser"
            page.screenshot(path=ARTIFACTS / "03_asset_plot.png", animations="disabled")
            page.keyboard.press("Escape")

            # Label the open requests on emb serve's /label page (Enter accepts the prediction),
            # then the sensor's retrain makes the next round, which the page offers.
            with emb_serve(env) as serve_url:
                page.goto(f"{serve_url}/label")
                cards = page.locator(".card")
                expect(cards.first).to_be_visible()
                answered = cards.count()
                first = cards.first.get_attribute("data-image-id")
                page.keyboard.press("3")  # digit classes: the key "3" is the class "3"
                for _ in range(answered - 1):
                    page.keyboard.press("Enter")
                deadline = time.monotonic() + 60
                while web_label_count(env) < answered:
                    assert time.monotonic() < deadline, "the page's answers never reached labels"
                    time.sleep(0.5)
                sql = f"select label from labels where source = 'web' and image_id = {int(first)}"
                assert emb(env, "sql", sql, "--format", "csv").strip().splitlines()[-1] == "3"
                page.screenshot(path=ARTIFACTS / "04_label_page.png", animations="disabled")
                retrain = wait_for_retrain(url)
                expect(page.locator("#bannertext")).to_contain_text("round 2")
                page.get_by_role("button", name="Show the next round").click()
                expect(page.locator("#roundinfo")).to_contain_text("round 2")
                page.screenshot(path=ARTIFACTS / "05_next_round.png", animations="disabled")
            assert retrain["status"] == "SUCCESS", run_failure_log(url, retrain["runId"])
            assert len(automation_runs(url)) == 1, "one retrain for one batch of labels"
            page.goto(f"{url}/runs")
            sensor = active_learning_automation.name
            expect(page.get_by_text(sensor, exact=True).first).to_be_visible()
            expect(page.get_by_text(retrain["runId"][:8]).first).to_be_visible()
            page.screenshot(path=ARTIFACTS / "06_sensor_run.png", animations="disabled")
        except BaseException:
            page.screenshot(path=ARTIFACTS / "failure.png", animations="disabled")
            raise
        finally:
            browser.close()
