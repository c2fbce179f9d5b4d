"""Short-lived DuckDB connections that wait out another process's write lock.

DuckDB lets one process write a database file at a time; a second process (the sensor, the CLI,
another Dagster step) that opens it meanwhile gets an IOException about the lock. Every
connection in this project is opened here, used briefly and closed, so retrying with backoff is
enough for processes to take turns.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from resources.schema import ensure_schema

# The last marker is the same conflict inside one process: a connection of this process holds
# the file in the other mode (read-only vs writable) until it closes.
LOCK_MARKERS = (
    "Could not set lock",
    "Conflicting lock",
    "lock on file",
    "different configuration than existing connections",
)


LOCK_TIMEOUT_ENV = "EMB_LOCK_TIMEOUT_S"
DEFAULT_LOCK_TIMEOUT_S = 60.0


def default_lock_timeout_s() -> float:
    """How long to wait for another process's write lock: $EMB_LOCK_TIMEOUT_S, else 60 s."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_LOCK_TIMEOUT_S
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT_S


def lock_holder(message: str) -> str | None:
    """Who holds the lock, as DuckDB's error names it: "PID 1234, /usr/bin/python"."""
    m = re.search(r"held in (.+?) \(PID (\d+)\)", message)
    if m:
        return f"PID {m.group(2)}, {m.group(1)}"
    m = re.search(r"PID (\d+)", message)
    return f"PID {m.group(1)}" if m else None


class CatalogLockedError(RuntimeError):
    """The catalog stayed locked by another process for longer than we were willing to wait."""

    def __init__(self, db_path: Path, timeout_s: float, cause: BaseException) -> None:
        self.db_path = db_path
        self.timeout_s = timeout_s
        self.holder = lock_holder(str(cause))
        super().__init__(
            f"{db_path} stayed locked by another process for {timeout_s:.0f} s "
            f"({' '.join(str(cause).split())}). Wait for the running materialization to "
            "finish and retry."
        )

    def one_line(self) -> str:
        """The whole story in one line, for a command line: who, that nothing was written, what
        to do."""
        who = f"another process ({self.holder})" if self.holder else "another process"
        return (
            f"The catalog {self.db_path} is locked by {who}; gave up after "
            f"{self.timeout_s:g} s and nothing was written. Wait for the running "
            f"materialization to finish (or stop it), then retry; ${LOCK_TIMEOUT_ENV} sets "
            "how long to wait."
        )


def is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.Error) and any(m in str(exc) for m in LOCK_MARKERS)


@contextmanager
def connect(
    db_path: str | Path,
    *,
    read_only: bool = False,
    timeout_s: float | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open `db_path`, retrying while another connection holds the file in the other mode, and
    always close.

    A writable connection also creates the schema (idempotent), so every writer sees the tables.
    A read-only connection of a file that does not exist yet raises a clear FileNotFoundError.
    `timeout_s` defaults to $EMB_LOCK_TIMEOUT_S (else 60 s); past it, CatalogLockedError.
    """
    if timeout_s is None:
        timeout_s = default_lock_timeout_s()
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
                raise CatalogLockedError(db_path, timeout_s, exc) from exc
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)
    try:
        if not read_only:
            ensure_schema(con)
        yield con
    finally:
        con.close()
