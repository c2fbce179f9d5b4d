"""`emb`: the command line — demo, run, sql, ui, and the label and search commands."""

from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import typer

from embedding_assets.cli.console import emb_command, fail, paths
from embedding_assets.cli.labels import label_app, queue
from embedding_assets.cli.search import map_command, search, serve, similar
from embedding_assets.cli.sql import sql_command
from embedding_assets.common.settings import IMAGE_DIR_ENV, default_dagster_home
from resources.paths import DATA_DIR_ENV

app = typer.Typer(help="Image-embedding platform on Dagster and DuckDB.", no_args_is_help=True)
app.add_typer(label_app, name="label")
app.command("queue")(queue)
app.command("similar")(similar)
app.command("search")(search)
app.command("serve")(serve)
app.command("map")(map_command)
app.command("sql")(sql_command)


VERBOSE = typer.Option(
    False, "--verbose", "-v", help="Show Dagster's log lines, and full tracebacks on failure."
)


def _check_settings() -> None:
    """Environment settings the definitions read when they load, checked first so a bad one is
    one line rather than a traceback out of the definitions' import."""
    from embedding_assets.catalog.shards import shard_count

    try:
        shard_count()
    except ValueError as exc:
        fail(str(exc))


FULL = typer.Option(
    False,
    "--full",
    help="Run every asset even when nothing changed since the last complete run (by default "
    "such a run stops after the catalog scan).",
)


def _run(
    run_config: dict[str, Any], verbose: bool, full: bool = False, command: str = "run"
) -> None:
    """Run every asset (`runner.run_everything`: the catalog, then the rest unless nothing
    changed, or everything with `full`): progress bars on a terminal and a closing summary, or
    Dagster's own log lines with --verbose; exit 1 when a step or check failed."""
    from embedding_assets.cli.runner import run_everything
    from embedding_assets.cli.summary import Pointers, problem_lines, summary_lines
    from embedding_assets.common import progress

    def warn(line: str) -> None:  # a run left STARTED by a killed `emb run`, now failed
        typer.secho(line, fg=typer.colors.YELLOW, err=True)

    bars = progress.bars() if sys.stderr.isatty() and not verbose else nullcontext()
    start = time.perf_counter()
    with bars:
        result = run_everything(run_config, verbose=verbose, on_orphan=warn, full=full)
    seconds = time.perf_counter() - start
    home = str(default_dagster_home().resolve())
    map_ready = paths().map_points.is_file()
    pointers = Pointers(str(paths().catalog_db), home, command, emb_command(), map_ready)
    lines = summary_lines(result, seconds, pointers)
    typer.echo("\n".join(lines))
    for line in problem_lines(result):
        typer.secho(line, fg=typer.colors.YELLOW if result.success else typer.colors.RED, err=True)
    if not result.success:
        raise typer.Exit(1)


@app.command()
def demo(
    labeled_fraction: float = typer.Option(0.3, help="Share of the digits given folder labels."),
    full: bool = FULL,
    verbose: bool = VERBOSE,
) -> None:
    """Write the demo images (scikit-learn's digits) into the data directory and run everything
    with the same settings as `emb run`."""
    from embedding_assets.cli.demo import write_demo_images
    from embedding_assets.cli.runner import catalog_config

    _check_settings()
    folder = paths().demo_images
    counts = write_demo_images(folder, labeled_fraction=labeled_fraction)
    bad = counts.get("bad", 0)
    planted = f", and {bad} bad files on purpose (to show how they are reported)" if bad else ""
    typer.echo(
        f"Demo images: {counts['images']} digits ({counts['labeled']} labeled){planted} in {folder}"
    )
    _run(catalog_config(str(folder.resolve())), verbose, full, "demo")


@app.command()
def run(  # noqa: PLR0913 (typer options, like a Config's fields)
    image_dir: str = typer.Option(
        None,
        help=f"Folder of images, or an s3://, gs://, az://... URL (default: ${IMAGE_DIR_ENV} or "
        "the demo folder).",
    ),
    model: str | None = typer.Option(
        None, help="Backbone, e.g. efficientnet_lite0 (default), resnet50, any timm model."
    ),
    weights: str | None = typer.Option(
        None, help="DEFAULT (pretrained), none (random init), a weights name or a .pth file."
    ),
    image_size: int | None = typer.Option(
        None, help="Crop size in pixels; 0 = the weights' own size (the default)."
    ),
    runtime: str | None = typer.Option(
        None,
        help="What runs the forward pass: auto (ONNX Runtime on the CPU, the default), torch "
        "or onnxruntime.",
    ),
    text_model: str | None = typer.Option(
        None,
        help="Also search by text with this open_clip model, as ARCH:PRETRAINED (e.g. "
        "ViT-B-32:laion2b_s34b_b79k or ViT-B-32:/path/to/checkpoint.bin); needs the [clip] "
        "extra. Default: text search by the backbone's ImageNet tags, offline.",
    ),
    config: Path = typer.Option(
        None,
        "--config",
        help="Run-config YAML as in the Dagster launchpad (ops: {embeddings: {config: {...}}}); "
        "the options above override it.",
    ),
    full: bool = FULL,
    verbose: bool = VERBOSE,
) -> None:
    """Materialize every asset on a folder of images. --model, --weights, --image-size and
    --runtime set the backbone of both `embeddings` and `embedding_model`."""
    from embedding_assets.cli.runner import RunConfigError, backbone_config, merge

    _check_settings()
    flags = backbone_config(model, weights, image_size, runtime)
    if text_model is not None:
        flags = merge(flags, {"ops": {"clip_embeddings": {"config": {"text_model": text_model}}}})
    try:
        run_config = _run_config(image_dir, config, flags)
    except RunConfigError as exc:
        fail(str(exc))
    _run(run_config, verbose, full)


def _run_config(
    image_dir: str | None, config_file: Path | None, flags: dict[str, Any]
) -> dict[str, Any]:
    """The file's config, the flags on top, then the image folder (or object-storage URL): the
    flag's, else the file's, else the default. Validated before anything runs."""
    from embedding_assets.catalog import object_store
    from embedding_assets.cli import image_source
    from embedding_assets.cli.runner import catalog_config, load_config_file, merge, validate

    run_config = merge(load_config_file(config_file) if config_file else {}, flags)
    validate(run_config, str(config_file) if config_file else "run config")
    catalog = (run_config.get("ops") or {}).get("image_catalog") or {}
    file_dir = (catalog.get("config") or {}).get("image_dir")
    source = image_source.choose(image_dir, file_dir, str(config_file))
    if object_store.is_url(source.folder):
        try:
            object_store.check_folder(source.folder)
        except (ImportError, ValueError, OSError) as exc:
            fail(str(exc))
        return merge(run_config, catalog_config(source.folder))
    try:
        folder = image_source.check_local(source, paths().catalog_db)
    except image_source.SourceError as exc:
        fail(str(exc))
    return merge(run_config, catalog_config(str(folder)))


@app.command()
def ui(
    port: int = typer.Option(3000, help="Port of the Dagster UI."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 exposes it)."),
) -> None:
    """Start the Dagster UI (`dg dev`: webserver and daemon, so sensors run) on this project."""
    from embedding_assets.cli.orphan_runs import orphan_lines
    from embedding_assets.cli.runner import instance

    _check_settings()
    with instance() as inst:  # runs left STARTED by a killed `emb run` (sets DAGSTER_HOME)
        for line in orphan_lines(inst):
            typer.secho(line, fg=typer.colors.YELLOW, err=True)
    os.environ.setdefault(DATA_DIR_ENV, str(paths().root))
    args = ui_command(port, host)
    os.execvp(args[0], args)


def ui_command(port: int, host: str) -> list[str]:
    """`dg dev` on this project's workspace (`dagster dev`, which it runs, now warns that it is
    superseded), found beside this Python so that no activated venv is needed."""
    workspace = Path(__file__).resolve().parents[2] / "workspace.yaml"
    beside = Path(sys.executable).with_name("dg")
    args = [str(beside) if beside.exists() else "dg", "dev", "-p", str(port), "-h", host]
    if workspace.exists():
        return [*args, "-w", str(workspace)]
    return [*args, "-m", "embedding_assets.definitions"]
