"""The catalog's tables and views, created idempotently by every writable connection.

Each feature adds its tables as one idempotent file in `resources/ddl/` (CREATE ... IF NOT EXISTS,
CREATE OR REPLACE VIEW); the schema version is a hash of those files, so an existing catalog
picks new DDL up on its next writable connection.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

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
    con.execute("INSERT OR REPLACE INTO schema_info VALUES ('schema_version', ?)", [SCHEMA_VERSION])


def _schema_version(con: duckdb.DuckDBPyConnection) -> str | None:
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_info'"
    ).fetchall()[0][0]  # fetchall: DuckDB 2 keeps a fetchone() result open and blocks register()
    if not exists:
        return None
    rows = con.execute("SELECT value FROM schema_info WHERE key = 'schema_version'").fetchall()
    return rows[0][0] if rows else None
