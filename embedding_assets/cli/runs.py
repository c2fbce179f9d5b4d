"""The Dagster runs of one `emb run`, read as one result by the run summary."""

from __future__ import annotations

import dagster as dg

from embedding_assets.cli.run_state import Recorded

CATALOG = "image_catalog"  # the asset every `emb run` runs first, alone


class Runs:
    """The Dagster runs of one `emb run`, read as one result by the run summary: one run of
    everything; the catalog's run and the rest's; the catalog's alone when the state was
    `up_to_date` (the assets `not_run` left as the last complete run made them); or the runs
    of a sharded job."""

    def __init__(
        self,
        results: list[dg.ExecuteInProcessResult],
        job_def: dg.JobDefinition,
        up_to_date: Recorded | None = None,
        not_run: list[dg.AssetKey] | None = None,
        sharded: bool = False,
    ) -> None:
        self.results = results
        self.job_def = job_def
        self.sharded = sharded
        self.run_ids = [r.run_id for r in results]
        self.up_to_date = up_to_date  # the state found unchanged
        self.not_run = not_run or []
        self.success = all(r.success for r in results)
        self.all_events = [e for r in results for e in r.all_events]

    @property
    def title(self) -> str:
        """The runs as the summary's first line names them."""
        first, more = self.run_ids[0], len(self.run_ids) - 1
        if self.sharded and more:
            return f"Run {first} and {more} more"
        if more:
            return f"Runs {first} ({CATALOG}) and {self.run_ids[1]} (the rest)"
        return f"Run {first}"

    def _each(self, method: str) -> list:
        return [item for r in self.results for item in getattr(r, method)()]

    def get_asset_materialization_events(self) -> list:
        return self._each("get_asset_materialization_events")

    def get_asset_check_evaluations(self) -> list:
        return self._each("get_asset_check_evaluations")

    def get_step_failure_events(self) -> list:
        return self._each("get_step_failure_events")

    def get_step_success_events(self) -> list:
        return self._each("get_step_success_events")

    def is_node_untouched(self, name: str) -> bool:
        """No run touched the node: it depends on a failed step (or the runs stopped at a
        failed catalog); an up-to-date invocation's not-run assets are not counted here."""
        return all(r.is_node_untouched(name) for r in self.results)
