"""One clock for every timestamp the catalog stores: naive UTC, as DuckDB's TIMESTAMP keeps it."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """Now in UTC without a time zone (a TIMESTAMP column, not TIMESTAMPTZ)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
