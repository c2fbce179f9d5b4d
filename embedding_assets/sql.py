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
    """The statement would change the catalog; `emb sql` only reads."""


def run_query(db_path: Path, query: str, fmt: str = "table", output: Path | None = None) -> str:
    """Run `query` read-only; return text to print (empty when written to `output`)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "parquet" and output is None:
        raise ValueError("--format parquet needs --output FILE.parquet")
    with connect(db_path, read_only=True) as con:
        try:
            rel = con.sql(query)
        except duckdb.InvalidInputException as exc:
            if "read-only" in str(exc):
                raise SqlRefused(
                    "refused: `emb sql` opens the catalog read-only and this statement writes. "
                    "Change labels with `emb label ...`, or open the file with any DuckDB client "
                    f"while no run is active. ({exc})"
                ) from exc
            raise
        if rel is None:  # a statement with no result set, e.g. SET or PRAGMA
            return ""
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            rel.write_parquet(str(output))
            return ""
        text = {"csv": _to_csv, "json": _to_json, "table": _to_table}[fmt](rel)
    if output is not None:
        output.write_text(text)
        return ""
    return text


def _to_csv(rel: duckdb.DuckDBPyRelation) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
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
