"""The one code location: every asset, check, job, sensor and resource."""

from __future__ import annotations

import dagster as dg

from embedding_assets import assets
from resources import GPUResource, StorageResource
from sensors.label_sensor import label_sensor, retrain_job

EVERYTHING_JOB = "materialize_everything"

everything_job = dg.define_asset_job(
    EVERYTHING_JOB,
    selection=dg.AssetSelection.all(),
    description="Materialize every asset: catalog, embeddings and everything downstream.",
)

defs = dg.Definitions(
    # Every module in embedding_assets/assets/ is picked up: adding an asset is adding a module.
    assets=dg.load_assets_from_package_module(assets),
    asset_checks=dg.load_asset_checks_from_package_module(assets),
    jobs=[everything_job, retrain_job],
    sensors=[label_sensor],
    resources={"storage": StorageResource(), "gpu": GPUResource()},
)
