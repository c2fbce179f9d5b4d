"""Run the main job from plain Python (the CLI), recorded in a persistent Dagster instance so
the runs show up in the UI afterwards; and the run config the CLI builds for it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

from embedding_assets.cli.runs import CATALOG, Runs
from embedding_assets.common.settings import default_dagster_home

BACKBONE_OPS = ("embedding_model", "embeddings", "image_tags")
INVOCATION_TAG = "emb/invocation"  # the same on every run of one `emb run`
CONFIG_EXAMPLE = "ops: {embeddings: {config: {model: resnet50}}}"


class RunConfigError(ValueError):
    """Run config the job refuses, as one line that names its source and the fix."""


# The dagster.yaml the CLI writes into a home it creates: run monitoring on, so the daemon of
# `emb ui` watches runs left STARTED (a run's `dagster/max_runtime` tag then fails it in time);
# telemetry off, as the platform runs offline by default (and Dagster's first-run banner would
# otherwise fill the terminal above the run summary).
INSTANCE_YAML = """\
# Written by `emb` (the CLI creates this Dagster home); edit freely, it is not overwritten.
run_monitoring:
  enabled: true
  poll_interval_seconds: 60
# Dagster's anonymous usage statistics: set to true to send them.
telemetry:
  enabled: false
"""
NUX_YAML = """\
# The UI's "Join the Dagster community" dialog, which covers the lineage on a first visit.
nux:
  enabled: false
"""
INSTANCE_YAML += NUX_YAML


def ensure_home() -> Path:
    """Create the Dagster home (`<data>/dagster` when DAGSTER_HOME is unset) and export it.
    INSTANCE_YAML goes into a home that is new (missing or an empty folder, wherever
    DAGSTER_HOME points: there is no instance yet to respect) and into the CLI's own home when
    its dagster.yaml is missing or empty (an empty one is what earlier versions wrote: without a
    file Dagster warns on every run); one an earlier `emb` wrote gains the lines that turn off
    the UI's first-visit dialog."""
    home = default_dagster_home()
    new_home = not home.is_dir() or not any(home.iterdir())
    home.mkdir(parents=True, exist_ok=True)
    yaml_path = home / "dagster.yaml"
    if new_home or (
        not os.environ.get("DAGSTER_HOME")
        and (not yaml_path.exists() or not yaml_path.read_text().strip())
    ):
        yaml_path.write_text(INSTANCE_YAML)
    elif yaml_path.is_file() and _ours_without_nux(yaml_path.read_text()):
        yaml_path.write_text(yaml_path.read_text().rstrip("\n") + "\n" + NUX_YAML)
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    return home


def _ours_without_nux(text: str) -> bool:
    """A dagster.yaml an earlier `emb` wrote, from before the dialog was turned off."""
    return text.startswith(INSTANCE_YAML.splitlines()[0]) and "\nnux:" not in text


def instance() -> dg.DagsterInstance:
    """The DAGSTER_HOME instance (see ensure_home)."""
    ensure_home()
    return dg.DagsterInstance.get()


def everything_job() -> dg.JobDefinition:
    from embedding_assets.definitions import EVERYTHING_JOB, defs

    return defs.resolve_job_def(EVERYTHING_JOB)


def run_everything(
    run_config: dict[str, Any] | None = None,
    verbose: bool = True,
    on_orphan: Callable[[str], None] | None = None,
    full: bool = False,
) -> Runs:
    """What `emb run` and `emb demo` do: a run of `image_catalog` (the folder rescanned, the
    run recorded), then, unless the state after it is the one the last complete run left
    (`run_state`) and no run came since, a run of every other asset. `full`: one run of
    everything, no shortcut. With `$EMB_SHARDS`, one run per shard of each partitioned asset and
    one for the rest. Failures are in the result, not raised. The runs share an
    `emb/invocation` tag.

    Not verbose: Dagster's console logger prints nothing (its DEBUG event lines run to hundreds
    per run); the event log still records every line for the UI. First, in the same instance,
    runs left STARTED by a killed `emb` are failed, each line passed to `on_orphan`."""
    from embedding_assets.cli.orphan_runs import orphan_lines

    config = dict(run_config or {})
    if not verbose:
        config["loggers"] = {"console": {"config": {"log_level": "CRITICAL"}}}
    tags = {INVOCATION_TAG: str(uuid.uuid4())}
    with instance() as inst:
        for line in orphan_lines(inst):
            if on_orphan is not None:
                on_orphan(line)
        job = everything_job()
        if job.partitions_def is not None:
            return execute_sharded(job, inst, config, tags)
        if full:
            runs = Runs([execute(job, inst, config, tags=tags)], job)
        else:
            runs = execute_in_two(job, inst, run_config or {}, config, tags)
        if runs.up_to_date is None and complete(runs):
            _record_state(run_config or {}, runs)
        return runs


def execute_in_two(
    job: dg.JobDefinition,
    inst: dg.DagsterInstance,
    given_config: dict[str, Any],
    run_config: dict[str, Any],
    tags: dict[str, str],
) -> Runs:
    """The catalog's run, then the run of every other asset unless nothing can change."""
    from embedding_assets.cli import run_state
    from embedding_assets.cli.console import paths

    before = newest_run_id(inst)
    catalog = execute(job, inst, only_ops(run_config, {CATALOG}), [dg.AssetKey(CATALOG)], tags=tags)
    rest = [k for k in job.asset_layer.executable_asset_keys if k != dg.AssetKey(CATALOG)]
    if not complete(Runs([catalog], job)):
        return Runs([catalog], job)
    data = paths()
    state, recorded = run_state.current_state(data, given_config, default_dagster_home())
    if run_state.up_to_date(state, recorded, before) and newest_run_id(inst) == catalog.run_id:
        run_state.confirm_state(data.catalog_db, recorded, catalog.run_id)
        return Runs([catalog], job, up_to_date=recorded, not_run=rest)
    others = execute(job, inst, without_ops(run_config, {CATALOG}), rest, tags=tags)
    return Runs([catalog, others], job)


def _record_state(given_config: dict[str, Any], runs: Runs) -> None:
    """Record the state complete runs left (computed now: the runs wrote their outputs), with
    the id of the last and the warnings they gave."""
    from embedding_assets.cli import run_state
    from embedding_assets.cli.console import paths
    from embedding_assets.cli.summary import problem_lines

    data = paths()
    state, _ = run_state.current_state(data, given_config, default_dagster_home())
    run_state.record_state(data.catalog_db, runs.run_ids[-1], state, problem_lines(runs))


def newest_run_id(inst: dg.DagsterInstance) -> str | None:
    runs = inst.get_run_ids(limit=1)
    return runs[0] if runs else None


def complete(runs: Runs) -> bool:
    """Every step succeeded and no check failed with an error. A failed WARN check (a challenger
    not promoted, with too few held-out images to decide) says the same on the same inputs:
    blocking the shortcut on it would stop it for good; the summary repeats its line instead."""
    return runs.success and all(
        c.passed or c.severity == dg.AssetCheckSeverity.WARN
        for c in runs.get_asset_check_evaluations()
    )


def only_ops(run_config: dict[str, Any], ops: set[str]) -> dict[str, Any]:
    """The run config of a run of some assets: the others' op config left out (refused)."""
    return {**run_config, "ops": {k: v for k, v in run_config.get("ops", {}).items() if k in ops}}


def without_ops(run_config: dict[str, Any], ops: set[str]) -> dict[str, Any]:
    keep = set(run_config.get("ops", {})) - ops
    return only_ops(run_config, keep)


def execute(
    job: dg.JobDefinition,
    inst: dg.DagsterInstance,
    run_config: dict[str, Any],
    assets: list[dg.AssetKey] | None = None,
    partition_key: str | None = None,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Execute `job` (or some of its assets, with their checks, for one partition) in this
    process, its run tagged with this process (orphan_runs.run_tags) so that a later `emb`
    fails the run if this process is killed before it ends, and with `tags`."""
    from embedding_assets.cli.orphan_runs import run_tags

    run_id = str(uuid.uuid4())
    return job.execute_in_process(
        run_config=run_config,
        instance=inst,
        raise_on_error=False,
        run_id=run_id,
        tags={**(tags or {}), **run_tags(run_id)},
        asset_selection=assets,
        partition_key=partition_key,
    )


def execute_sharded(
    job: dg.JobDefinition,
    inst: dg.DagsterInstance,
    run_config: dict[str, Any],
    tags: dict[str, str] | None = None,
) -> Runs:
    """What a backfill of every asset from the UI does, in sequence here: in dependency order,
    each partitioned stage one run per shard, each other stage one run. Stops at a failed run."""
    results = []
    for assets, partitioned in stages(job):
        config = only_ops(run_config, {k.path[-1] for k in assets})
        for key in job.partitions_def.get_partition_keys() if partitioned else [None]:
            results.append(execute(job, inst, config, assets, key, tags))
            if not results[-1].success:
                return Runs(results, job, sharded=True)
    return Runs(results, job, sharded=True)


def stages(job: dg.JobDefinition) -> list[tuple[list[dg.AssetKey], bool]]:
    """The job's assets in dependency order, cut where partitioned and unpartitioned alternate."""
    graph = job.asset_layer.asset_graph
    out: list[tuple[list[dg.AssetKey], bool]] = []
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        if not node.is_materializable:
            continue
        if out and out[-1][1] == node.is_partitioned:
            out[-1][0].append(key)
        else:
            out.append(([key], node.is_partitioned))
    return out


def catalog_config(image_dir: str) -> dict[str, Any]:
    return {"ops": {"image_catalog": {"config": {"image_dir": image_dir}}}}


def backbone_config(
    model: str | None = None,
    weights: str | None = None,
    image_size: int | None = None,
    runtime: str | None = None,
) -> dict[str, Any]:
    """The given backbone settings for both ops that share the backbone (a trained head is used
    only on the backbone it was trained on); settings not given are left to the assets."""
    given = {"model": model, "weights": weights, "image_size": image_size, "runtime": runtime}
    settings = {k: v for k, v in given.items() if v is not None}
    if not settings:
        return {}
    return {"ops": {op: {"config": dict(settings)} for op in BACKBONE_OPS}}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`, mappings merged key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config_file(path: Path) -> dict[str, Any]:
    """A run-config YAML as the Dagster launchpad takes it; RunConfigError if it is not one."""
    import yaml

    hint = f"give a YAML file like `{CONFIG_EXAMPLE}` (the launchpad's format)"
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RunConfigError(f"{path}: no such file; {hint}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunConfigError(f"{path}: cannot be read ({exc}); {hint}.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid syntax"
        raise RunConfigError(f"{path}: not valid YAML ({problem}{where}); {hint}.") from None
    if not isinstance(data, dict):
        kind = "nothing" if data is None else f"a {type(data).__name__}"
        raise RunConfigError(f"{path}: holds {kind}, not a mapping; {hint}.")
    return data


def validate(run_config: dict[str, Any], source: str) -> None:
    """Check the run config against the job before a run is recorded; RunConfigError with
    Dagster's first complaint (without its type dump) and what `source` may hold there."""
    job = everything_job()
    try:
        dg.validate_run_config(job, run_config)
    except dg.DagsterInvalidConfigError as exc:
        error = exc.errors[0]
        message = error.message.split(" Expected: ")[0].rstrip(".")
        keys = _allowed_there(job, error.stack.levels)
        fix = (
            f"allowed there: {', '.join(keys)}"
            if keys
            else f"run config looks like `{CONFIG_EXAMPLE}`"
        )
        raise RunConfigError(f"{source}: {message}; {fix}.") from None
    _check_bounds(job, run_config, source)


def _check_bounds(job: dg.JobDefinition, run_config: dict[str, Any], source: str) -> None:
    """The bounds of the assets' Config fields (`ge`, `le`...), which Dagster's schema does not
    hold: checked the way each step builds its Config, so a bad value is refused before the
    run rather than failing its step after the steps before it ran."""
    import pydantic

    for op_name, entry in (run_config.get("ops") or {}).items():
        config_class = _config_class(job, op_name)
        if config_class is None:
            continue
        try:
            config_class(**entry.get("config", {}))
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"][0].lower() + error["msg"][1:]
            raise RunConfigError(
                f"{source}: ops.{op_name}.config.{where} is {error['input']!r}; {message}."
            ) from None


def _config_class(job: dg.JobDefinition, op_name: str) -> type[dg.Config] | None:
    """The Config class the op's function takes, if it takes one."""
    compute_fn = job.graph.node_named(op_name).definition.compute_fn
    if not compute_fn.has_config_arg():
        return None
    annotation = compute_fn.get_config_arg().annotation
    is_config = isinstance(annotation, type) and issubclass(annotation, dg.Config)
    return annotation if is_config else None


def _allowed_there(job: dg.JobDefinition, levels: list[str]) -> list[str]:
    """Keys the config schema accepts at `levels` (ops without settings left out), or the
    values where a setting is a choice of values (or a list of them)."""
    config_type = job.run_config_schema.config_type
    for name in levels:
        fields = getattr(config_type, "fields", {})
        if name not in fields:
            return []
        config_type = fields[name].config_type
    while hasattr(config_type, "inner_type"):  # an optional setting, a list's items
        config_type = config_type.inner_type
    if hasattr(config_type, "enum_values"):
        return [value.config_value for value in config_type.enum_values]
    fields = getattr(config_type, "fields", {})
    return sorted(k for k, f in fields.items() if _has_settings(f.config_type))


def _has_settings(config_type: Any) -> bool:
    """False for an op whose only entry is an untyped `config` (an asset check, or an asset
    without a Config class)."""
    inner = getattr(config_type, "fields", {}).get("config")
    return inner is None or hasattr(inner.config_type, "fields")
