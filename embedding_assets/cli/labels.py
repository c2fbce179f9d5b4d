"""`emb label import|set` and `emb queue`: labels into DuckDB, the next batch out."""

from __future__ import annotations

from pathlib import Path

import typer

from embedding_assets.cli.console import catalog_db, emb_command, fail
from embedding_assets.common import tables

label_app = typer.Typer(help="Add labels to the catalog's append-only labels log.")


def _report(result, lines: bool = True) -> None:
    """What was added and each rejection, by line of the file (`lines`) or alone (one label
    from the command line has no line number)."""
    from embedding_assets.catalog.labels import printable

    for warning in getattr(result, "warnings", []):
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    listing = (
        f'; list ids and paths: {emb_command()} sql "select image_id, path from usable_images"'
    )
    for r in result.rejected:
        where = f"line {r.line}: " if lines else ""
        hint = listing if "unknown image" in r.reason else ""
        typer.secho(f"{where}rejected: {printable(r.reason)}{hint}", fg=typer.colors.RED, err=True)
    if not lines:  # one label: its line above, or that it was added
        if result.inserted:
            typer.echo("1 label added.")
        raise typer.Exit(1 if result.rejected else 0)
    typer.echo(f"{result.inserted} label(s) added, {len(result.rejected)} row(s) rejected.")
    if result.rejected:
        raise typer.Exit(1)


def _check_catalog(db: Path) -> None:
    if not db.exists():
        fail(f"No catalog at {db}: run `emb run --image-dir ...` first or set EMB_DATA_DIR.")


@label_app.command("import")
def import_labels(
    file: Path = typer.Argument(..., help="CSV: path (or image_id), label; a header is optional."),
) -> None:
    """Validate every row, then add the valid ones in one transaction (exit 1 if any rejected)."""
    from embedding_assets.catalog.labels import import_csv
    from resources.duckdb_store import CatalogLockedError

    db = catalog_db()
    _check_catalog(db)
    try:
        result = import_csv(db, file)
    except CatalogLockedError as exc:
        fail(exc.one_line())
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    _report(result)


@label_app.command("set")
def set_one(
    image: str = typer.Argument(..., help="Image path or image_id."),
    label: str = typer.Argument(..., help="The label."),
    source: str = typer.Option("cli", help="Recorded as labels.source."),
) -> None:
    """Label one image."""
    from embedding_assets.catalog.labels import set_label
    from resources.duckdb_store import CatalogLockedError

    db = catalog_db()
    _check_catalog(db)
    try:
        result = set_label(db, image, label, source)
    except CatalogLockedError as exc:
        fail(exc.one_line())
    _report(result, lines=False)


QUEUE_COLUMNS = ("round", "rank", "image_id", "predicted", "uncertainty", "path")


def queue(
    export: Path = typer.Option(None, "--export", help="Write the open requests to this CSV."),
    label_issues: int = typer.Option(
        0,
        "--label-issues",
        min=0,
        help="Instead: a review round of the N likeliest wrong labels (table label_issues).",
    ),
    format: str = typer.Option("table", "--format", "-f", help="table | csv | json"),
) -> None:
    """Show (or export as CSV with paths) the latest batch the platform asks you to label, or
    with --label-issues N the labels most likely wrong, to confirm or correct."""
    import duckdb

    from embedding_assets.learning.rounds import export_queue
    from resources.duckdb_store import connect

    if format not in ("table", "csv", "json"):
        fail(f"--format {format!r}: choose table, csv or json")
    db = catalog_db()
    _check_catalog(db)
    if label_issues:
        _review_round(db, label_issues, export)
        return
    try:
        if export is not None:
            n = export_queue(db, export)
            typer.echo(f"wrote {n} image(s) to {export}: fill in `label`, then `emb label import`")
            return
        with connect(db, read_only=True) as con:
            rows = con.execute(
                "SELECT round, rank, image_id, predicted, round(uncertainty, 3), path "
                f"FROM {tables.OPEN_LABEL_REQUESTS} ORDER BY rank"
            ).fetchall()
    except duckdb.CatalogException as exc:
        fail(f"No label queue yet: materialize `label_queue` ({exc})")
    _print_rows(rows, format)


def _print_rows(rows: list[tuple], format: str) -> None:
    """The open requests as a table with a header and a count, or as CSV or JSON."""
    import csv
    import json
    import sys

    if format == "json":
        typer.echo(json.dumps([dict(zip(QUEUE_COLUMNS, r, strict=True)) for r in rows], indent=2))
        return
    if format == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerows([QUEUE_COLUMNS, *rows])
        return
    typer.echo(
        f"{'round':>5} {'rank':>4} {'image_id':>8}  {'predicted':<16} {'uncertainty':>11}  path"
    )
    cold = bool(rows) and all(r[3] is None for r in rows)
    for rnd, rank, image_id, predicted, uncertainty, path in rows:
        shown = predicted if predicted is not None else "-"
        score = "-" if cold else uncertainty
        typer.echo(f"{rnd:>5} {rank:>4} {image_id:>8}  {shown:<16} {score:>11}  {path}")
    if cold:
        typer.echo(
            "Cold start: no classifier yet, so no prediction or uncertainty; these images are "
            "the ones nearest k-means centres, to cover the data."
        )
    emb = emb_command()
    typer.echo(
        f"{len(rows)} open request(s): label them with `{emb} label import FILE.csv` (`{emb} "
        f"queue --export FILE.csv` writes one to fill in) or on the label page of `{emb} serve`."
    )


def _review_round(db: Path, n: int, export: Path | None) -> None:
    import duckdb

    from embedding_assets.learning.rounds import export_label_issues, label_issue_rows

    try:
        if export is not None:
            written = export_label_issues(db, export, n)
            typer.echo(
                f"wrote {written} image(s) to {export}: keep `label` to confirm or correct it, "
                "then `emb label import`"
            )
            return
        rows = label_issue_rows(db, n)
    except duckdb.CatalogException as exc:
        fail(f"No label issues yet: materialize `label_issues` ({exc})")
    for path, _, given, suggested, score, _ in rows:
        typer.echo(f"{path}\t{given}\t{suggested}\t{score}")
    typer.echo(f"{len(rows)} label(s) to review (path, given, suggested, score).")
