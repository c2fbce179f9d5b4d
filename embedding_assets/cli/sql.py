"""Run a user's SQL on a read-only connection and render the answer: `emb sql`.

What reaches the terminal is bounded (the first `--limit` rows, 1,000 by default, and a line
saying the rest were cut); an `--output` file gets every row, streamed in batches, written to a
temporary file beside it and renamed into place (an existing file is refused unless `--force`).
A query runs for at most `--timeout` seconds (DuckDB's interrupt, from a timer thread).
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import typer

from resources.duckdb_store import connect

FORMATS = ("table", "csv", "json", "parquet")
DEFAULT_LIMIT = 1000
TIMEOUT_ENV = "EMB_SQL_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 300.0
BATCH_ROWS = 50_000


class SqlRefused(RuntimeError):
    """The statement would write or reach outside the data folder; `emb sql` only reads."""


class OutputExists(SqlRefused):
    """--output names an existing file and --force was not given: nothing was run."""


class QueryTimeout(SqlRefused):
    """The query ran past its timeout and was interrupted: nothing was written."""


QUERY_TYPES = ("SELECT", "EXPLAIN")  # DESCRIBE, SHOW and SUMMARIZE parse as SELECT


def default_timeout_s() -> float:
    """$EMB_SQL_TIMEOUT_S, else 300 s (0: no timeout)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        return DEFAULT_TIMEOUT_S


def _warn(line: str) -> None:
    typer.secho(line, fg=typer.colors.YELLOW, err=True)


@dataclass(frozen=True)
class Output:
    """Where a query's rows go: the terminal (at most `limit` rows, 0: all) in `fmt`, or every
    row to the file `path` (replaced only with `force`)."""

    fmt: str = "table"
    path: Path | None = None
    force: bool = False
    limit: int = DEFAULT_LIMIT


def run_query(
    db_path: Path,
    query: str,
    out: Output = Output(),
    *,
    timeout_s: float | None = None,
    note: Callable[[str], None] = _warn,
) -> str:
    """Run `query` read-only in DuckDB's sandbox; return text to print (empty when written to
    `output`, which Python writes: the sandbox lets DuckDB itself write nowhere).

    Text for the terminal holds at most `limit` rows (0: all); when rows were cut the table
    says so in its last line, csv and json through `note` (stderr), so that their text stays
    data. `output` gets every row; an existing one is refused (OutputExists) unless `force`.
    Past `timeout_s` (default: default_timeout_s(); 0: none) the query is interrupted
    (QueryTimeout)."""
    fmt, output, force, limit = out.fmt, out.path, out.force, out.limit
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "parquet" and output is None:
        raise ValueError("--format parquet needs --output FILE.parquet")
    if limit < 0:
        raise ValueError(f"--limit {limit}: give 0 (every row) or more")
    if output is not None:
        if output.is_dir():
            raise ValueError(f"--output {output} is a folder; name a file")
        _refuse_inside(output, db_path.parent)
        if output.exists() and not force:
            raise OutputExists(f"refused: {output} exists; pass --force to replace it")
    _refuse_non_queries(query)
    timeout_s = default_timeout_s() if timeout_s is None else timeout_s
    with connect(db_path, read_only=True) as con:
        _sandbox(con, db_path.parent / "parquet")
        timer = threading.Timer(timeout_s, con.interrupt) if timeout_s > 0 else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            if output is not None:
                _write_file(con, query, fmt, output)
                return ""
            return _terminal_text(con, query, fmt, limit, note)
        except duckdb.InterruptException as exc:
            raise QueryTimeout(
                f"query stopped after {timeout_s:g} s (--timeout, ${TIMEOUT_ENV}); narrow it "
                "(a WHERE or LIMIT) or give it longer (--timeout 0: no limit). Nothing was "
                "written."
            ) from exc
        except duckdb.PermissionException as exc:
            raise SqlRefused(
                f"refused: `emb sql` reads the catalog and the Parquet files under "
                f"{db_path.parent / 'parquet'} only ({' '.join(str(exc).split())})"
            ) from exc
        finally:
            if timer is not None:
                timer.cancel()


def _terminal_text(
    con: duckdb.DuckDBPyConnection,
    query: str,
    fmt: str,
    limit: int,
    note: Callable[[str], None],
) -> str:
    result = con.execute(query)
    if result.description is None:
        return ""
    columns = [d[0] for d in result.description]
    rows = result.fetchmany(limit + 1) if limit else result.fetchall()
    cut = bool(limit) and len(rows) > limit
    rows = rows[:limit] if cut else rows
    more = (
        f"first {limit} rows; more were cut (--limit N shows more, 0 all; --output FILE writes "
        "every row)"
    )
    if fmt == "table":
        return format_table(columns, rows, footer=f"({more})" if cut else None)
    if cut:
        note(more)
    if fmt == "csv":
        buf = io.StringIO()
        _csv_lines(buf, columns, [rows])
        return buf.getvalue()
    return _json_text(columns, [rows])


def _batches(result: duckdb.DuckDBPyConnection) -> Iterator[list[tuple]]:
    while True:
        rows = result.fetchmany(BATCH_ROWS)
        if not rows:
            return
        yield rows


def _refuse_inside(output: Path, data_root: Path) -> None:
    """The data folder holds the catalog, its Parquet, indexes and models: a result written
    there (even by a symlink that leads there) could replace one of them, `--force` or not."""
    target, root = output.resolve(), data_root.resolve()
    if target == root or root in target.parents:
        raise ValueError(
            f"refused: --output {output} is inside the data folder {root}, whose files are the "
            "catalog's own; write the result somewhere else"
        )


def _write_file(con: duckdb.DuckDBPyConnection, query: str, fmt: str, output: Path) -> None:
    """Every row into `output`, through a temporary file beside it renamed into place: a failed
    or interrupted query leaves the file there was (or none)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            rel = con.sql(query)
            if rel is None:
                return
            reader = rel.to_arrow_reader(BATCH_ROWS)
            with pq.ParquetWriter(tmp, reader.schema) as writer:
                for batch in reader:
                    writer.write_batch(batch)
        else:
            result = con.execute(query)
            if result.description is None:
                return
            columns = [d[0] for d in result.description]
            with tmp.open("w", newline="", encoding="utf-8") as out:
                if fmt == "csv":
                    _csv_lines(out, columns, _batches(result))
                elif fmt == "json":
                    out.write(_json_text(columns, _batches(result)))
                else:
                    rows = [r for batch in _batches(result) for r in batch]
                    out.write(format_table(columns, rows))
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def _csv_lines(out, columns: list[str], batches: Iterable[list[tuple]]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for rows in batches:
        writer.writerows(rows)


def _json_text(columns: list[str], batches: Iterable[list[tuple]]) -> str:
    """A JSON array of row objects, indented as json.dumps(rows, indent=2) does."""
    items = [
        "  "
        + json.dumps(dict(zip(columns, row, strict=True)), default=str, indent=2).replace(
            "\n", "\n  "
        )
        for rows in batches
        for row in rows
    ]
    return "[\n" + ",\n".join(items) + "\n]" if items else "[]"


def _refuse_non_queries(query: str) -> None:
    """Only queries, judged by DuckDB's own parser: the sandbox alone would still let
    `COPY ... TO` write into the allowed Parquet folder."""
    for statement in duckdb.extract_statements(query):
        kind = statement.type.name
        if kind not in QUERY_TYPES:
            raise SqlRefused(
                f"refused: `emb sql` opens the catalog read-only and runs queries only "
                f"({', '.join(QUERY_TYPES)}), not {kind}. Write a result with --output FILE; "
                "change labels with `emb label ...`."
            )


def _sandbox(con: duckdb.DuckDBPyConnection, parquet_dir: Path) -> None:
    """DuckDB's own sandbox: no file access but the data folder's Parquet hand-offs, and the
    settings locked so a query cannot undo it."""
    folders = sorted({f"{parquet_dir.absolute()}/", f"{parquet_dir.resolve()}/"})  # via a link too
    con.execute("SET allowed_directories = ?", [folders])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def format_table(columns: list[str], rows: list[tuple], footer: str | None = None) -> str:
    """An aligned plain-text table; numbers right-aligned, NULL shown as NULL; the last line
    counts the rows (or is `footer`)."""
    cells = [["NULL" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows) and bool(rows)
        for i in range(len(columns))
    ]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    out.append(footer or f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def sql_command(
    query: str = typer.Argument(..., help='SQL to run, e.g. "select * from images limit 5".'),
    format: str = typer.Option("table", "--format", "-f", help="table | csv | json | parquet"),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Write every row to this file (refused if it exists, unless --force).",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing --output file."),
    limit: int = typer.Option(
        DEFAULT_LIMIT,
        "--limit",
        min=0,
        help="Most rows printed to the terminal (0: all); an --output file gets every row.",
    ),
    timeout: float = typer.Option(
        None,
        "--timeout",
        min=0,
        help=f"Stop the query after this many seconds (0: never; default ${TIMEOUT_ENV} or "
        f"{DEFAULT_TIMEOUT_S:g}).",
    ),
) -> None:
    """Query the catalog read-only (any DuckDB client can open the same file)."""
    from embedding_assets.cli.console import fail, paths
    from resources.duckdb_store import CatalogLockedError

    replacing = output is not None and output.exists() and force
    try:
        text = run_query(
            paths().catalog_db, query, Output(format, output, force, limit), timeout_s=timeout
        )
    except CatalogLockedError as exc:
        fail(exc.one_line())
    except SqlRefused as exc:
        fail(str(exc))
    except (duckdb.Error, ValueError, FileNotFoundError) as exc:
        fail(f"error: {' '.join(str(exc).split())}")
    except OSError as exc:
        fail(f"error: cannot write {output}: {exc.strerror or exc}")
    if text:
        typer.echo(text)
    elif output is not None:
        typer.echo(f"{'replaced' if replacing else 'wrote'} {output}")
