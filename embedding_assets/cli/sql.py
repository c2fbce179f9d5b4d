"""Run a user's SQL on a read-only connection and render the answer."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import duckdb

from resources.duckdb_store import connect

FORMATS = ("table", "csv", "json", "parquet")


class SqlRefused(RuntimeError):
    """The statement would write or reach outside the data folder; `emb sql` only reads."""


QUERY_TYPES = ("SELECT", "EXPLAIN")  # DESCRIBE, SHOW and SUMMARIZE parse as SELECT


def run_query(db_path: Path, query: str, fmt: str = "table", output: Path | None = None) -> str:
    """Run `query` read-only in DuckDB's sandbox; return text to print (empty when written to
    `output`, which Python writes: the sandbox lets DuckDB itself write nowhere)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "parquet" and output is None:
        raise ValueError("--format parquet needs --output FILE.parquet")
    _refuse_non_queries(query)
    with connect(db_path, read_only=True) as con:
        _sandbox(con, db_path.parent / "parquet")
        try:
            rel = con.sql(query)
        except duckdb.PermissionException as exc:
            raise SqlRefused(
                f"refused: `emb sql` reads the catalog and the Parquet files under "
                f"{db_path.parent / 'parquet'} only ({exc})"
            ) from exc
        if rel is None:
            return ""
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(rel.fetch_arrow_table(), output)
            return ""
        text = {"csv": _to_csv, "json": _to_json, "table": _to_table}[fmt](rel)
    if output is not None:
        output.write_text(text)
        return ""
    return text


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


def _to_csv(rel: duckdb.DuckDBPyRelation) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(rel.columns)
    writer.writerows(rel.fetchall())
    return buf.getvalue()


def _to_json(rel: duckdb.DuckDBPyRelation) -> str:
    rows = [dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall()]
    return json.dumps(rows, default=str, indent=2)


def _to_table(rel: duckdb.DuckDBPyRelation) -> str:
    return format_table(rel.columns, rel.fetchall())


def format_table(columns: list[str], rows: list[tuple]) -> str:
    """An aligned plain-text table; numbers right-aligned, NULL shown as NULL."""
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
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)
