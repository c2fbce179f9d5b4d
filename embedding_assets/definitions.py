"""The one code location: every asset, check, job, sensor and resource."""

from __future__ import annotations

import dagster as dg

from embedding_assets.assets import catalog
from resources import GPUResource, StorageResource

EVERYTHING_JOB = "materialize_everything"

everything_job = dg.define_asset_job(
    EVERYTHING_JOB,
    selection=dg.AssetSelection.all(),
    description="Materialize every asset: catalog, embeddings and everything downstream.",
)

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([catalog]),
    asset_checks=dg.load_asset_checks_from_modules([catalog]),
    jobs=[everything_job],
    resources={"storage": StorageResource(), "gpu": GPUResource()},
)
