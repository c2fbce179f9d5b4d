"""The one code location: every asset, check, job, sensor and resource."""

from __future__ import annotations

import os

import dagster as dg

from embedding_assets import assets
from embedding_assets.assets.learning import labels
from resources.gpu import GPUResource
from resources.storage import StorageResource
from sensors.label_sensor import active_learning_automation, label_sensor

EVERYTHING_JOB = "materialize_everything"
EXECUTOR_ENV = "EMB_EXECUTOR"


def executor() -> dg.ExecutorDefinition:
    """In-process unless `$EMB_EXECUTOR=multiprocess`: on the demo, multiprocess took 1.46x as
    long on 2 cores (each step process imports the libraries of its asset, and parallel steps
    that each use every core only fight over them; benchmarks/executor_compare.py). The CLI
    runs in-process too, so UI runs behave like `emb run`."""
    choice = os.environ.get(EXECUTOR_ENV, "in_process")
    if choice not in ("in_process", "multiprocess"):
        raise ValueError(f"${EXECUTOR_ENV}={choice!r}: use in_process or multiprocess")
    return dg.multiprocess_executor if choice == "multiprocess" else dg.in_process_executor


everything_job = dg.define_asset_job(
    EVERYTHING_JOB,
    selection=dg.AssetSelection.all(),
    description="Materialize every asset: catalog, embeddings and everything downstream.",
)

defs = dg.Definitions(
    # Every module in embedding_assets/assets/ is picked up: adding an asset is adding a module.
    # External assets are specs, which the loader leaves out: they are listed here.
    assets=[*dg.load_assets_from_package_module(assets), labels],
    asset_checks=dg.load_asset_checks_from_package_module(assets),
    jobs=[everything_job],
    sensors=[label_sensor, active_learning_automation],
    resources={"storage": StorageResource(), "gpu": GPUResource()},
    executor=executor(),
)
