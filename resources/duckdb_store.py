"""Short-lived DuckDB connections that wait out another process's write lock.

DuckDB lets one process write a database file at a time; a second process (the sensor, the CLI,
another Dagster step) that opens it meanwhile gets an IOException about the lock. Every
connection in this project is opened here, used briefly and closed, so retrying with backoff is
enough for processes to take turns.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from resources.schema import ensure_schema

LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "lock on file")


class CatalogLockedError(RuntimeError):
    """The catalog stayed locked by another process for longer than we were willing to wait."""


def is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.Error) and any(m in str(exc) for m in LOCK_MARKERS)


@contextmanager
def connect(
    db_path: str | Path,
    *,
    read_only: bool = False,
    timeout_s: float = 60.0,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open `db_path`, retrying while another process holds the write lock, and always close.

    A writable connection also creates the schema (idempotent), so every writer sees the tables.
    A read-only connection of a file that does not exist yet raises a clear FileNotFoundError.
    """
    db_path = Path(db_path)
    if read_only and not db_path.exists():
        raise FileNotFoundError(
            f"No catalog at {db_path}. Materialize `image_catalog` first (emb run / emb demo), "
            "or set EMB_DATA_DIR to the data directory that holds catalog.duckdb."
        )
    db_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(db_path), read_only=read_only)
            break
        except duckdb.Error as exc:
            if not is_lock_error(exc):
                raise
            if time.monotonic() >= deadline:
                raise CatalogLockedError(
                    f"{db_path} stayed locked by another process for {timeout_s:.0f} s "
                    f"({exc}). Wait for the running materialization to finish and retry."
                ) from exc
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)
    try:
        if not read_only:
            ensure_schema(con)
        yield con
    finally:
        con.close()
