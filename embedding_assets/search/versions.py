"""Versioned FAISS index files and their rows in the catalog.

An index is written to `indexes/<model_key>/<version>.faiss` and registered in `faiss_indexes`
unpublished; the `published_index` asset publishes it once its recall check passed (in the
catalog and in the pointer files servers poll, `snapshot`). Search opens the newest published
version of a model key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import faiss

from embedding_assets.common import fingerprints, tables
from embedding_assets.common.clock import utc_now
from embedding_assets.search import snapshot
from resources.duckdb_store import connect
from resources.paths import DataPaths

ASSET = "similarity_index"  # the asset whose builds these are (its row in asset_fingerprints)


@dataclass(frozen=True)
class IndexRecord:
    """One build of an index: where it is, what it holds, how to search it and how well it did
    (recall@5 against exact search, the `faiss_indexes.recall_at_5` column)."""

    model_key: str
    version: str
    path: Path
    index_type: str
    vectors: int
    dim: int
    search_params: dict
    recall_at_5: float | None
    published: bool = False

    # The catalog columns of a record, in the order `from_row` reads them.
    COLUMNS = (
        "model_key, version, path, index_type, vectors, dim, search_params, recall_at_5, published"
    )

    @classmethod
    def from_row(cls, row: tuple, root: DataPaths) -> IndexRecord:
        key, version, path, index_type, n, dim, params, recall, published = row
        return cls(
            model_key=key,
            version=version,
            path=root.resolve(path),
            index_type=index_type,
            vectors=n,
            dim=dim,
            search_params=json.loads(params or "{}"),
            recall_at_5=recall,
            published=published,
        )

    @classmethod
    def from_snapshot(cls, model_key: str, version: str, path: Path) -> IndexRecord:
        """The record a published version's snapshot carries (no DuckDB needed to serve it)."""
        r = snapshot.build_info(path)["record"]
        return cls(
            model_key=model_key,
            version=version,
            path=path,
            index_type=r["index_type"],
            vectors=r["vectors"],
            dim=r["dim"],
            search_params=r["search_params"],
            recall_at_5=r["recall_at_5"],
            published=True,
        )

    def as_snapshot_info(self) -> dict:
        """What `from_snapshot` reads back."""
        return {
            "index_type": self.index_type,
            "vectors": self.vectors,
            "dim": self.dim,
            "search_params": self.search_params,
            "recall_at_5": self.recall_at_5,
        }


def new_version() -> str:
    """Sortable and unique per build: UTC time to the microsecond."""
    return utc_now().strftime("%Y%m%dT%H%M%S%f")


def index_path(indexes_dir: Path, model_key: str, version: str) -> Path:
    return Path(indexes_dir) / model_key / f"{version}.faiss"


def save_index(index: faiss.Index, path: Path) -> int:
    """Write atomically (temp file + rename) so a reader never opens half a file; returns bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".faiss.tmp")
    faiss.write_index(index, str(tmp))
    tmp.replace(path)
    return path.stat().st_size


def register_index(
    paths: DataPaths,
    record: IndexRecord,
    *,
    nbytes: int,
    build_seconds: float,
) -> None:
    """Insert the build unpublished (`similarity_index` then records it as the current build
    of its model key)."""
    with connect(paths.catalog_db) as con:
        con.begin()
        con.execute(
            f"INSERT INTO {tables.FAISS_INDEXES} (model_key, version, path, index_type, vectors,"
            " dim, bytes, search_params, build_seconds, recall_at_5, published, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, false, ?)",
            [
                record.model_key,
                record.version,
                paths.relative(record.path),
                record.index_type,
                record.vectors,
                record.dim,
                nbytes,
                json.dumps(record.search_params),
                build_seconds,
                record.recall_at_5,
                utc_now(),
            ],
        )
        con.commit()


def publish(paths: DataPaths, model_key: str, version: str, check_recall: float) -> None:
    """Mark a version as the one search uses (the newest published version wins), in the
    catalog and in the pointer files that running servers poll; drop older snapshots."""
    with connect(paths.catalog_db) as con:
        con.execute(
            f"UPDATE {tables.FAISS_INDEXES} SET published = true, published_at = ?, "
            "check_recall_at_5 = ? WHERE model_key = ? AND version = ?",
            [utc_now(), check_recall, model_key, version],
        )
    previous = snapshot.read_pointer(paths, model_key)
    snapshot.write_pointer(paths, model_key, version)
    # keep what a server may still be switching from, and what was just built
    keep = {
        version,
        previous[1] if previous else "",
        getattr(current_build(paths.catalog_db, model_key), "version", ""),
    }
    snapshot.prune(paths.indexes_dir / model_key, keep)


def _one(db_path: Path, where: str, params: list) -> IndexRecord | None:
    with connect(db_path, read_only=True) as con:
        row = con.execute(
            f"SELECT {IndexRecord.COLUMNS} FROM {tables.FAISS_INDEXES} WHERE {where}", params
        ).fetchone()
    return IndexRecord.from_row(row, DataPaths(Path(db_path).parent)) if row else None


def latest_index(db_path: Path, model_key: str, *, published_only: bool) -> IndexRecord | None:
    """The newest build (or newest published build) of a model key."""
    published = " AND published" if published_only else ""
    where = f"model_key = ?{published} ORDER BY version DESC LIMIT 1"
    return _one(db_path, where, [model_key])


def current_build(db_path: Path, model_key: str) -> IndexRecord | None:
    """The build that `similarity_index` last materialized for a model key (built or reused):
    what its recall check checks and `published_index` publishes."""
    found = fingerprints.stored(db_path, ASSET, model_key)
    if found is None or found.result is None:
        return None
    return _one(db_path, "model_key = ? AND version = ?", [model_key, found.result])


def published_index(db_path: Path, model_key: str | None = None) -> IndexRecord:
    """The newest published index of `model_key` (default: the current embedding set's)."""
    key = model_key or tables.current_model_key(db_path)
    record = latest_index(db_path, key, published_only=True)
    if record is not None:
        return record
    with connect(db_path, read_only=True) as con:
        keys = [
            r[0]
            for r in con.execute(
                f"SELECT DISTINCT model_key FROM {tables.FAISS_INDEXES} WHERE published ORDER BY 1"
            ).fetchall()
        ]
    hint = f" Published indexes exist for: {', '.join(keys)} (pass --model-key)." if keys else ""
    raise LookupError(
        f"No published similarity index for model key {key!r}: materialize `published_index` "
        f"(after `similarity_index` and its recall check; emb run does all).{hint}"
    )


def served_record(root: DataPaths, db_path: Path, model_key: str | None) -> IndexRecord:
    """The published version to serve: from the pointer file publication writes (no DuckDB),
    else (an index published before pointers existed, or none) from the catalog."""
    found = snapshot.read_pointer(root, model_key)
    if found is None:
        return published_index(db_path, model_key)
    key, version = found
    path = with_snapshot(index_path(root.indexes_dir, key, version), key, version)
    return IndexRecord.from_snapshot(key, version, path)


def with_snapshot(path: Path, model_key: str, version: str) -> Path:
    """`path` when its version has a search snapshot; LookupError saying what to run if not."""
    if not snapshot.exists(path):
        raise LookupError(
            f"Index {version} of {model_key} has no search snapshot (it was built by an older "
            "version): re-materialize `similarity_index` and `published_index` (emb run)."
        )
    return path
