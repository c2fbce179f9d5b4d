"""Input fingerprints, so that a materialization whose inputs did not change reuses its stored
result instead of computing it again: a run with nothing new costs little (issue 12).

An asset hashes what decides its result (the embedding set's content, `sets.content_version`;
the newest label_id where labels matter; its own config) and the hash is recorded next to the
result in `asset_fingerprints`: forgotten before the result is replaced, recorded once it is
written, so a fingerprint never describes rows that are not there. Plain code over DuckDB; the
one mechanism that uses it for every asset is `embedding_assets.assets.reuse`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from embedding_assets.common import tables
from embedding_assets.common.clock import utc_now
from embedding_assets.common.hashing import stable_hash
from resources.duckdb_store import connect

REUSED = "reused"  # metadata key of a materialization that reused its stored result
SKIPPED = "skipped: inputs unchanged"


def fingerprint(*parts: object) -> str:
    """The fingerprint of JSON-able parts (versions, config dicts, ids)."""
    return stable_hash(*parts)


def hash_fraction(sha256: str) -> float:
    """A stable number in [0, 1) from a content hash: held-out splits are decided by it, so an
    image that is evaluation data today stays evaluation data as labels grow, and every model
    trained on the labels holds out the same images."""
    return int(sha256[:8], 16) / 16**8


def labels_version(db_path: Path) -> int:
    """The newest label_id: the log is append-only, so any new label changes it."""
    with connect(db_path, read_only=True) as con:
        found = con.execute(f"SELECT coalesce(max(label_id), 0) FROM {tables.LABELS}").fetchall()
    return int(found[0][0])


@dataclass(frozen=True)
class Stored:
    fingerprint: str
    result: str | None  # which result, where the asset keeps several (an index version, ...)


def stored(db_path: Path, asset: str, scope: str = "") -> Stored | None:
    """What `asset`'s stored result for `scope` (a model key, or '') was computed from."""
    with connect(db_path, read_only=True) as con:
        try:
            rows = con.execute(
                f"SELECT fingerprint, result FROM {tables.ASSET_FINGERPRINTS} "
                "WHERE asset = ? AND scope = ?",
                [asset, scope],
            ).fetchall()
        except duckdb.CatalogException:  # a catalog only ever opened read-only since 090
            return None
    return Stored(*rows[0]) if rows else None


def forget(db_path: Path, asset: str, scope: str = "") -> None:
    """Drop `asset`'s fingerprint for `scope`: its stored result is about to be replaced."""
    with connect(db_path) as con:
        con.execute(
            f"DELETE FROM {tables.ASSET_FINGERPRINTS} WHERE asset = ? AND scope = ?",
            [asset, scope],
        )


def remember(
    db_path: Path, asset: str, fp: str, *, scope: str = "", result: str | None = None
) -> None:
    """Record `fp` as what `asset`'s stored result for `scope` was computed from; call it
    once the result is written."""
    with connect(db_path) as con:
        con.execute(
            f"INSERT OR REPLACE INTO {tables.ASSET_FINGERPRINTS} VALUES (?, ?, ?, ?, ?)",
            [asset, scope, fp, result, utc_now()],
        )
