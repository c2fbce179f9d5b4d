"""The one way an asset reuses its stored result when what decides it did not change.

An asset names what decides its result (`Inputs`: the embedding set's content, the labels
version, its config...) and hands `materialize` a function that computes and writes the result.
`materialize` fingerprints the inputs and compares them with the fingerprint recorded beside
the stored result (`common.fingerprints`, table `asset_fingerprints`, which SQL users read): the
same inputs report the stored result again (`reused: skipped...`, the figures measured when it
was computed, the same data version), other inputs compute it. The fingerprint is forgotten
before computing and recorded after the result is written, so a run that fails in between
leaves no fingerprint and the next one computes again: a fingerprint never describes rows that
are not there. Domain code never sees a fingerprint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import dagster as dg

from embedding_assets.common import fingerprints
from embedding_assets.common.fingerprints import REUSED, SKIPPED, Stored
from embedding_assets.common.markdown import Markdown

DATA_VERSION_TAG = "dagster/data_version"  # the tag holding a materialization's data version


@dataclass(frozen=True)
class Inputs:
    """What decides one result: the asset (or a stage of one) it is recorded under, the scope
    (a model key where results are kept per embedding set) and the JSON-able parts hashed."""

    asset: str
    parts: tuple
    scope: str = ""
    # The stored result is an immutable version that the fingerprint row names (its `result`):
    # the row stays while a new one is computed, and the version it names stays valid.
    versioned: bool = False

    @cached_property
    def fingerprint(self) -> str:
        return fingerprints.fingerprint(self.asset, *self.parts)

    def unchanged(self, db: Path) -> Stored | None:
        """The stored result's record when it was computed from these very inputs."""
        found = fingerprints.stored(db, self.asset, self.scope)
        return found if found is not None and found.fingerprint == self.fingerprint else None

    def forget(self, db: Path) -> None:
        fingerprints.forget(db, self.asset, self.scope)

    def record(self, db: Path, result: str | None = None) -> None:
        fingerprints.remember(db, self.asset, self.fingerprint, scope=self.scope, result=result)


@dataclass
class Report:
    """What a materialization reports, computed or reused: metadata, the data version (None:
    the inputs' fingerprint), asset check results, and `result`, recorded beside the
    fingerprint where an asset keeps several results (an index version, a round number).
    `keep=False`: nothing to reuse next time (e.g. waiting for labels)."""

    metadata: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    checks: list[dg.AssetCheckResult] = field(default_factory=list)
    result: str | None = None
    keep: bool = True
    base: dict | None = None  # reused: shown under `metadata`; None: the latest report's
    note: str = SKIPPED  # reused: why


def materialize(
    context: dg.AssetExecutionContext,
    db: Path,
    inputs: Inputs,
    compute: Callable[[], Report],
    kept: Callable[[Stored], Report | None] | None = None,
) -> dg.MaterializeResult:
    """Reuse the stored result of `inputs` (reported by `kept`, which may return None when
    the result cannot be reused after all, e.g. its file is gone), else `compute` it."""
    found = inputs.unchanged(db)
    if found is not None:
        report = kept(found) if kept else Report()
        if report is not None:
            return reused(
                context,
                report.version or inputs.fingerprint,
                report.metadata,
                check_results=report.checks,
                previous=report.base,
                note=report.note,
            )
    if not inputs.versioned:
        inputs.forget(db)
    started = time.perf_counter()
    report = compute()
    if report.keep:
        inputs.record(db, report.result)
    metadata = {"seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3))}
    return dg.MaterializeResult(
        metadata={**metadata, **report.metadata},
        data_version=dg.DataVersion(report.version or inputs.fingerprint),
        check_results=report.checks or None,
    )


def previous_metadata(
    context: dg.AssetExecutionContext, data_version: str
) -> dict[str, dg.MetadataValue]:
    """The metadata of this asset's latest materialization when it has `data_version`, else {}
    (e.g. a fresh Dagster instance over an existing data directory)."""
    event = context.instance.get_latest_materialization_event(context.asset_key)
    materialization = event.asset_materialization if event else None
    if materialization is None or materialization.tags.get(DATA_VERSION_TAG) != data_version:
        return {}
    return dict(materialization.metadata)


def reused(
    context: dg.AssetExecutionContext,
    data_version: str,
    metadata: dict | None = None,
    *,
    note: str = SKIPPED,
    check_results: list[dg.AssetCheckResult] | None = None,
    previous: dict | None = None,
) -> dg.MaterializeResult:
    """The materialization of a reused result: `previous` (default: the latest one's metadata
    when it had this data version) with `metadata` on top and `reused: note`."""
    if previous is None:
        previous = previous_metadata(context, data_version)
    context.log.info(f"{context.asset_key.to_user_string()}: {note}")
    return dg.MaterializeResult(
        metadata={**previous, **(metadata or {}), REUSED: note},
        data_version=dg.DataVersion(data_version),
        check_results=check_results or None,
    )


def dagster_metadata(values: dict[str, Any]) -> dict[str, Any]:
    """A domain function's metadata for Dagster: `Markdown` rendered as markdown, plain values
    (str, int, float, dict, Path...) as they are, which Dagster types itself."""
    return {
        k: dg.MetadataValue.md(str(v)) if isinstance(v, Markdown) else v for k, v in values.items()
    }
