"""What a finished `emb run` tells its user, read from the run's own events: the counts worth
knowing, seconds per asset, one line per failure, and where to look next."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

import dagster as dg

from embedding_assets.cli.runs import Runs
from embedding_assets.common.fingerprints import REUSED
from embedding_assets.learning.selection import WAITING

LABEL_WIDTH = 12
EVALUATION = {"holdout": "held out", **{f"cv{k}": f"{k}-fold cv" for k in range(2, 11)}}
WIDTH = 100
STATE_WORDS = ("catalog", "labels", "settings", "code", "outputs")  # what run_state compares


@dataclass(frozen=True)
class Pointers:
    """What the closing summary points the user at: where the results are and how to call
    `emb` (as the shell finds it) for the next steps."""

    catalog_db: str
    dagster_home: str
    command: str = "run"  # the `emb` command that ran (`run`, `demo`)
    emb: str = "emb"
    map_ready: bool = False  # a map export exists (written by this run or an earlier one)


def summary_lines(result: Runs, seconds: float, pointers: Pointers) -> list[str]:
    """The closing summary, one labelled field per line."""
    catalog_db, dagster_home = pointers.catalog_db, pointers.dagster_home
    command, emb, map_ready = pointers.command, pointers.emb, pointers.map_ready
    state = "succeeded" if result.success else "FAILED"
    lines = [f"{result.title} {state} in {seconds:.1f} s."]
    catalog = _materialization_metadata(result, "image_catalog")
    if catalog:
        if catalog.get("image_dir"):
            lines.append(_field("Folder", str(catalog["image_dir"])))
        lines.append(_field("Images", *_images_items(catalog)))
        bad = {k: v for k, v in (catalog.get("by_status") or {}).items() if k != "ok"}
        if bad:
            counts = ", ".join(f"{n} {status}" for status, n in sorted(bad.items()))
            query = "select path, status, error from images where status <> 'ok'"
            lines.append(
                _field("Bad files", counts)
                + "\n"
                + " " * LABEL_WIDTH
                + f'list them: {emb} sql "{query}"'
            )
    embedded = _materialization_metadata(result, "embeddings")
    if embedded:
        lines.append(_field("Embeddings", *_embeddings_items(embedded)))
    tuned = _materialization_metadata(result, "embedding_model")
    if tuned.get("status") == "trained" and str(tuned.get("decision", "")).startswith("promoted"):
        lines.append(_wrapped("Fine-tune", f"of the backbone on your labels, {tuned['decision']}"))
    elif tuned.get("status") == "waiting":
        lines.append(_wrapped("Fine-tune", f"not trained again: {tuned['decision']}"))
    timings = [f"{name} {s:.1f}" for name, s in _seconds_per_asset(result).items()]
    if timings:
        lines.append(_field("Seconds", *timings))
    reused = _reused_assets(result)
    if reused:
        lines.append(_field("Reused", *reused[:-1], f"{reused[-1]} (inputs unchanged)"))
    if result.up_to_date is not None:
        lines.append(_up_to_date_line(result, f"{emb} {command} --full"))
    labels = _labels_line(result, emb)
    if labels:
        lines.append(labels)
    lines.append(_field("DuckDB", catalog_db))
    lines.append(_field("Query", f'{emb} sql "select status, count(*) from images group by 1"'))
    lines.append(_field("UI", f"{emb} ui   (DAGSTER_HOME={dagster_home})"))
    if map_ready or _materialization_metadata(result, "map_export"):
        lines.append(_field("Map", f"{emb} map  (Embedding Atlas in the browser)"))
    return lines


def _up_to_date_line(result: Runs, full_flag: str) -> str:
    """Why nothing ran after the catalog, and how to run it anyway."""
    found = result.up_to_date
    text = (
        f"nothing changed since run {found.run_id} at {found.created_at:%Y-%m-%d %H:%M:%S} UTC "
        f"({', '.join(STATE_WORDS)}): {len(result.not_run)} assets not run; {full_flag} checks "
        "every asset anyway"
    )
    return _wrapped("Up to date", text)


def _labels_line(result: Runs, emb: str) -> str | None:
    """Where the labeling stands after this run: the classifier waits for labels (and which
    images to label first), or what the new classifier scored and how many images to label
    next."""
    classifier = _materialization_metadata(result, "classifier")
    queue = _materialization_metadata(result, "label_queue")
    n = queue.get("batch_size")
    asked = f"the {n} image{'s' if n != 1 else ''}" if n else "the images"
    if classifier.get("status") == WAITING:
        text = (
            "the classifier waits for 2+ classes with 2+ labeled images each; label "
            f"{asked} `{emb} queue` lists first (chosen to cover the data), with `{emb} label "
            f"import` or the label page of `{emb} serve`, then `{emb} run` again"
        )
    elif classifier.get("status") == "trained":
        judged = EVALUATION.get(classifier["eval_method"], classifier["eval_method"])
        outcome = (
            "the champion now"
            if classifier["promoted"]
            else f"champion v{classifier['champion_version']} stays"
        )
        text = (
            f"classifier v{classifier['version_id']} ({classifier['algorithm']}): accuracy "
            f"{classifier['accuracy']:.3f}, macro-F1 {classifier['macro_f1']:.3f} ({judged}, "
            f"{classifier['labeled_images']} labels), {outcome}"
        )
        if n:
            text += f"; label {asked} `{emb} queue` lists next (the most uncertain)"
    else:
        return None
    return _wrapped("Labels", text)


def problem_lines(result: Runs) -> list[str]:
    """One line per failed step and failed check (Dagster's verbose log has the tracebacks);
    when nothing ran after the catalog, the warnings of the run whose results stand."""
    if result.up_to_date is not None:
        return [f"{line} (run {result.up_to_date.run_id})" for line in result.up_to_date.warnings]
    lines = [
        _check_line(c)
        for c in result.get_asset_check_evaluations()
        if not c.passed and not (c.description or "").startswith(WAITING)  # the Labels line
    ]
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        if error is None or error.cls_name == "DagsterAssetCheckFailedError":
            continue  # the failed check's own line says why
        lines.append(f"step {event.step_key} failed: {_error_text(error)}")
    not_run = [n.name for n in result.job_def.nodes_in_topological_order]
    not_run = [name for name in not_run if result.is_node_untouched(name)]
    if not_run and not result.success:
        lines.append(f"{len(not_run)} steps did not run: they depend on a failed one.")
    return lines


# Counts of one partition's run, added up over the shards of a sharded `emb run`.
PER_SHARD = (
    "files_found",
    "new",
    "changed",
    "removed",
    "embedded_now",
    "from_cache",
    "failed_to_decode",
)


def _materialization_metadata(result: Runs, asset: str) -> dict[str, Any]:
    """The plain values of the asset's materialization metadata in this run ({} if none); the
    last one's, with the per-shard counts summed when it materialized once per shard."""
    found: dict[str, Any] = {}
    for event in result.get_asset_materialization_events():
        if event.asset_key == dg.AssetKey(asset):
            meta = event.step_materialization_data.materialization.metadata
            values = {k: v.value for k, v in meta.items()}
            for k in PER_SHARD:
                if k in found and k in values:
                    values[k] += found[k]
            if isinstance(found.get("by_status"), dict):
                counts = dict(found["by_status"])
                for status, n in (values.get("by_status") or {}).items():
                    counts[status] = counts.get(status, 0) + n
                values["by_status"] = counts
            found = values
    return found


def _reused_assets(result: Runs) -> list[str]:
    """Assets whose materialization in this run reused the stored result."""
    return [
        event.asset_key.to_user_string()
        for event in result.get_asset_materialization_events()
        if REUSED in event.step_materialization_data.materialization.metadata
    ]


def _seconds_per_asset(result: Runs) -> dict[str, float]:
    """Step durations in the order they finished, a separate check step counted with its
    asset."""
    asset_of = {
        e.step_key: e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
    }
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            check_asset = event.asset_check_evaluation_data.asset_key
            asset_of.setdefault(event.step_key, check_asset.to_user_string())
    seconds: dict[str, float] = {}
    for event in result.get_step_success_events():
        name = asset_of.get(event.step_key, event.step_key)
        seconds[name] = seconds.get(name, 0.0) + event.step_success_data.duration_ms / 1000
    return seconds


def _images_items(meta: dict[str, Any]) -> list[str]:
    items = [f"{meta['files_found']} in the catalog ({meta['usable_images']} usable)"]
    items.append(f"{meta['new']} new this run")
    items += [f"{meta['changed']} changed"] if meta.get("changed") else []
    return items + ([f"{meta['removed']} removed"] if meta.get("removed") else [])


def _embeddings_items(meta: dict[str, Any]) -> list[str]:
    cached = meta["from_cache"]
    why = " (embedded earlier: by a past run, or by embedding_model's evaluation)"
    items = [f"{meta['embedded_now']} embedded now", f"{cached} from cache{why if cached else ''}"]
    if meta.get("failed_to_decode"):
        items.append(f"{meta['failed_to_decode']} failed to decode")
    items.append(f"model key {meta['model_key']}")
    runtime = meta.get("runtime", "")
    if meta["embedded_now"] and runtime in ("torch", "onnxruntime"):
        items.append(f"forward pass on {runtime}")
    return items


def _check_line(evaluation: dg.AssetCheckEvaluation) -> str:
    name = f"{evaluation.asset_key.to_user_string()}/{evaluation.check_name}"
    severity = "warning" if evaluation.severity == dg.AssetCheckSeverity.WARN else "failed"
    return f"check {name} {severity}: {evaluation.description or 'see its metadata in the UI'}"


def _error_text(error: Any) -> str:
    """The user's exception rather than Dagster's wrapper, on one line."""
    while error.cause is not None and error.cls_name.startswith("Dagster"):
        error = error.cause
    return " ".join(error.message.split())


def _wrapped(label: str, text: str) -> str:
    """`label` and a sentence, wrapped between words under the label's width (a path or a
    command is never cut)."""
    rows = textwrap.wrap(text, WIDTH - LABEL_WIDTH, break_on_hyphens=False, break_long_words=False)
    return f"{label:<{LABEL_WIDTH}}" + ("\n" + " " * LABEL_WIDTH).join(rows)


def _field(label: str, *items: str) -> str:
    """`label` and its comma-separated items, wrapped between items under the label's width."""
    rows = [""]
    for item in items:
        if rows[-1] and len(rows[-1]) + len(item) + 2 > WIDTH - LABEL_WIDTH:
            rows[-1] += ","
            rows.append("")
        rows[-1] += f", {item}" if rows[-1] else item
    return f"{label:<{LABEL_WIDTH}}" + ("\n" + " " * LABEL_WIDTH).join(rows)
