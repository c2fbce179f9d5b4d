"""The catalog's tables and views, created idempotently by every writable connection.

Each feature adds its tables as one idempotent file in `resources/ddl/` (CREATE ... IF NOT EXISTS,
CREATE OR REPLACE VIEW); the schema version is a hash of those files, so an existing catalog
picks new DDL up on its next writable connection.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

import duckdb

DDL_DIR = Path(__file__).with_name("ddl")


def schema_sql() -> str:
    """All DDL files in name order: each feature owns one file, so features never collide."""
    return "\n".join(p.read_text() for p in sorted(DDL_DIR.glob("*.sql")))


SCHEMA_VERSION = hashlib.sha256(schema_sql().encode()).hexdigest()[:16]


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every table and view that does not exist yet; safe to call on every connection.

    Skipped when the file already carries SCHEMA_VERSION, so short connections stay cheap.
    """
    if _schema_version(con) == SCHEMA_VERSION:
        return
    con.execute(schema_sql())
    relativize_paths(con)
    con.execute("INSERT OR REPLACE INTO schema_info VALUES ('schema_version', ?)", [SCHEMA_VERSION])


def _schema_version(con: duckdb.DuckDBPyConnection) -> str | None:
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_info'"
    ).fetchall()[0][0]  # fetchall: DuckDB 2 keeps a fetchone() result open and blocks register()
    if not exists:
        return None
    rows = con.execute("SELECT value FROM schema_info WHERE key = 'schema_version'").fetchall()
    return rows[0][0] if rows else None


# Columns naming our own files, with the sub-folder of the data directory each lies in: the
# prefix before it in an absolute row is the data directory the row was written under.
_OWN_FILES = (
    ("embedding_sets", "parquet_path", "/parquet/"),
    ("faiss_indexes", "path", "/indexes/"),
    ("embedding_models", "head_path", "/models/"),
    ("embedding_models", "trunk_path", "/models/"),
    ("model_versions", "model_path", "/models/"),
    ("embedding_sets", "weights", None),  # a fine-tuned trunk of ours, or a user's own file
)


def relativize_paths(con: duckdb.DuckDBPyConnection) -> None:
    """Rewrite absolute paths of our own files (written before 100_relative_paths.sql) relative to
    the data directory they were written under, so a moved or copied folder finds its files.

    Idempotent: relative rows are left alone, and so are files outside every inferred data
    directory (a user's own head or weights in `embedding_sets.params`; `images` is never
    touched).
    """
    roots: set[str] = set()
    for table, column, folder in _OWN_FILES:
        for (value,) in con.execute(f"SELECT DISTINCT {column} FROM {table}").fetchall():
            if folder and value and value.startswith("/") and folder in value:
                roots.add(value[: value.rindex(folder)])
    if not roots:
        return
    longest_first = sorted(roots, key=len, reverse=True)

    def relative(value: object) -> object:
        for root in longest_first:
            if isinstance(value, str) and value.startswith(root + "/"):
                return str(PurePosixPath(value).relative_to(root))
        return value

    for table, column, _ in _OWN_FILES:
        for (value,) in con.execute(f"SELECT DISTINCT {column} FROM {table}").fetchall():
            if relative(value) != value:
                con.execute(
                    f"UPDATE {table} SET {column} = ? WHERE {column} = ?", [relative(value), value]
                )
    for key, params in con.execute("SELECT model_key, params FROM embedding_sets").fetchall():
        loaded = json.loads(params or "{}")
        fixed = {k: relative(v) if k in ("head", "weights") else v for k, v in loaded.items()}
        if fixed != loaded:
            con.execute(
                "UPDATE embedding_sets SET params = ? WHERE model_key = ?", [json.dumps(fixed), key]
            )
