"""`emb`: the command line — demo, run, sql, ui."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from embedding_assets.settings import IMAGE_DIR_ENV, default_dagster_home
from resources.storage import DATA_DIR_ENV, DataPaths, default_data_dir

app = typer.Typer(help="Image-embedding platform on Dagster and DuckDB.", no_args_is_help=True)


def _paths() -> DataPaths:
    return DataPaths(default_data_dir())


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _report_run(result) -> None:
    paths = _paths()
    state = "succeeded" if result.success else "FAILED"
    typer.echo(f"Run {result.run_id} {state}.")
    typer.echo(f"DuckDB catalog: {paths.catalog_db}")
    typer.echo('Query it:       emb sql "select status, count(*) from images group by 1"')
    typer.echo(f"Open the UI:    emb ui   (DAGSTER_HOME={default_dagster_home().resolve()})")
    if not result.success:
        raise typer.Exit(1)


@app.command()
def demo(
    labeled_fraction: float = typer.Option(0.3, help="Share of the digits given folder labels."),
) -> None:
    """Write the demo images (scikit-learn's digits) into the data directory and run everything."""
    from embedding_assets.demo import write_demo_images
    from embedding_assets.runner import demo_config, run_everything

    folder = _paths().demo_images
    counts = write_demo_images(folder, labeled_fraction=labeled_fraction)
    typer.echo(f"Demo images: {counts['images']} digits ({counts['labeled']} labeled) in {folder}")
    _report_run(run_everything(demo_config(str(folder))))


@app.command()
def run(
    image_dir: Path = typer.Option(
        None, help=f"Folder of images (default: ${IMAGE_DIR_ENV} or the demo folder)."
    ),
) -> None:
    """Materialize every asset on a folder of images."""
    from embedding_assets.runner import catalog_config, run_everything
    from embedding_assets.settings import default_image_dir

    folder = image_dir or Path(default_image_dir())
    if not folder.is_dir():
        _fail(f"{folder} is not a folder of images; pass --image-dir or set {IMAGE_DIR_ENV}.")
    _report_run(run_everything(catalog_config(str(folder.resolve()))))


@app.command()
def sql(
    query: str = typer.Argument(..., help='SQL to run, e.g. "select * from images limit 5".'),
    format: str = typer.Option("table", "--format", "-f", help="table | csv | json | parquet"),
    output: Path = typer.Option(None, "--output", "-o", help="Write to this file."),
) -> None:
    """Query the catalog read-only (any DuckDB client can open the same file)."""
    import duckdb

    from embedding_assets.sql import SqlRefused, run_query

    try:
        text = run_query(_paths().catalog_db, query, format, output)
    except SqlRefused as exc:
        _fail(str(exc))
    except (duckdb.Error, ValueError, FileNotFoundError) as exc:
        _fail(f"error: {exc}")
    if text:
        typer.echo(text)
    elif output is not None:
        typer.echo(f"wrote {output}")


@app.command()
def ui(port: int = typer.Option(3000, help="Port of the Dagster UI.")) -> None:
    """Start `dagster dev` (webserver and daemon, so sensors run) on this project."""
    home = default_dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    os.environ.setdefault(DATA_DIR_ENV, str(_paths().root))
    workspace = Path(__file__).resolve().parent.parent / "workspace.yaml"
    args = ["dagster", "dev", "-p", str(port)]
    if workspace.exists():
        args += ["-w", str(workspace)]
    else:
        args += ["-m", "embedding_assets.definitions"]
    os.execvp(args[0], args)


from embedding_assets.cli_labels import label_app, queue  # noqa: E402

app.add_typer(label_app, name="label")
app.command("queue")(queue)

from embedding_assets.cli_search import serve, similar  # noqa: E402

app.command("similar")(similar)
app.command("serve")(serve)


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":
    sys.exit(app())
