"""Run the main job from plain Python (the CLI), recorded in a persistent Dagster instance so
the runs show up in the UI afterwards."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from embedding_assets.settings import default_dagster_home


def instance() -> dg.DagsterInstance:
    """The DAGSTER_HOME instance, creating `<data>/dagster` when DAGSTER_HOME is unset."""
    home = default_dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    return dg.DagsterInstance.get()


def run_everything(run_config: dict[str, Any] | None = None) -> dg.ExecuteInProcessResult:
    """Materialize every asset in one in-process run; raises if a step or blocking check fails."""
    from embedding_assets.definitions import EVERYTHING_JOB, defs

    job = defs.resolve_job_def(EVERYTHING_JOB)
    with instance() as inst:
        return job.execute_in_process(run_config=run_config or {}, instance=inst)


def catalog_config(image_dir: str) -> dict[str, Any]:
    return {"ops": {"image_catalog": {"config": {"image_dir": image_dir}}}}


def demo_config(image_dir: str) -> dict[str, Any]:
    """The demo's digits are 32 px: embed them at 64 px so the demo takes seconds on a CPU; the
    embedding model is trained on the same backbone so the embeddings use it."""
    config = catalog_config(image_dir)
    config["ops"]["embedding_model"] = {"config": {"image_size": 64}}
    config["ops"]["embeddings"] = {"config": {"image_size": 64}}
    return config
