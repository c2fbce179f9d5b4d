"""What search needs of one index version, written next to its FAISS file, so that answering a
query never opens DuckDB (a run holding the DuckDB writer would otherwise stall search).

`indexes/<model_key>/<version>.faiss` gets a folder `<version>.snapshot/` with
- `ids.npy`, `vectors.npy`: the indexed image ids and their vectors (memory-mapped when served;
  query-by-id reads its vector there, and the next incremental build diffs against them);
- `rows.parquet`: image_id, path, label, cluster at build time (labels and clusters are refreshed
  from the catalog in the background by the server);
- `build.json`: the index record, the embedding parameters (to embed uploads) and the hash of
  the settings the index was built with (an incremental build needs the same settings).
Publication writes `indexes/<model_key>/published.json` and `indexes/published.json`, which the
server polls to switch versions without a restart.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedding_assets.common import tables
from embedding_assets.common.ids import positions
from resources.paths import DataPaths

POINTER = "published.json"


def snapshot_dir(index_path: Path) -> Path:
    return Path(index_path).with_suffix(".snapshot")


def _write_json(path: Path, payload: dict) -> None:
    """Atomically (temp file + rename), so a polling reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(path)


@dataclass
class Rows:
    """Per image of a snapshot, in the order of `ids`: its path, label and cluster (-1: none)."""

    ids: np.ndarray
    paths: list[str | None]
    labels: list[str | None]
    clusters: np.ndarray


def catalog_rows(
    db_path: Path, model_key: str, ids: np.ndarray, timeout_s: float | None = None
) -> Rows:
    """Paths, current labels and clusters of `ids` from the catalog (one short read-only
    connection)."""
    from resources.duckdb_store import connect

    with connect(db_path, read_only=True, timeout_s=timeout_s) as con:
        has_clusters = tables.exists(con, tables.CLUSTERS)
        cluster_sql = (
            f"(SELECT cluster FROM {tables.CLUSTERS} c "
            "WHERE c.image_id = q.image_id AND c.model_key = ?)"
            if has_clusters
            else "NULL::INTEGER"
        )
        args = ([model_key] if has_clusters else []) + [ids.tolist()]  # in textual order
        rows = con.execute(
            f"SELECT q.image_id, i.path, l.label, {cluster_sql} "
            "FROM (SELECT unnest(?::BIGINT[]) AS image_id) q "
            f"LEFT JOIN {tables.IMAGES} i ON i.image_id = q.image_id "
            f"LEFT JOIN {tables.CURRENT_LABELS} l ON l.image_id = q.image_id",
            args,
        ).fetchall()
    info = {r[0]: r[1:] for r in rows}
    empty = (None, None, None)
    paths = [info.get(int(i), empty)[0] for i in ids.tolist()]
    labels = [info.get(int(i), empty)[1] for i in ids.tolist()]
    clusters = np.asarray(
        [-1 if (c := info.get(int(i), empty)[2]) is None else c for i in ids.tolist()],
        dtype=np.int64,
    )
    return Rows(np.asarray(ids, dtype=np.int64), paths, labels, clusters)


def rows_signature(db_path: Path, model_key: str, timeout_s: float | None = None) -> tuple:
    """Changes when labels or the clusters of `model_key` change: a cheap query that tells a
    server whether `catalog_rows` is worth reading again."""
    from resources.duckdb_store import connect

    with connect(db_path, read_only=True, timeout_s=timeout_s) as con:
        return con.execute(
            f"SELECT (SELECT max(label_id) FROM {tables.LABELS}), (SELECT fingerprint FROM "
            f"{tables.ASSET_FINGERPRINTS} WHERE asset = '{tables.CLUSTERS}' AND scope = ?)",
            [model_key],
        ).fetchone()


def write(
    index_path: Path,
    record: dict[str, Any],
    ids: np.ndarray,
    vectors: np.ndarray,
    rows: Rows,
) -> Path:
    """Write the snapshot of one index version (a temp folder renamed into place)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    final = snapshot_dir(index_path)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "ids.npy", np.asarray(ids, dtype=np.int64))
    np.save(tmp / "vectors.npy", np.ascontiguousarray(vectors, dtype=np.float32))
    table = pa.table(
        {
            "image_id": pa.array(rows.ids, pa.int64()),
            "path": pa.array(rows.paths, pa.string()),
            "label": pa.array(rows.labels, pa.string()),
            "cluster": pa.array(rows.clusters, pa.int64()),
        }
    )
    pq.write_table(table, tmp / "rows.parquet")
    _write_json(tmp / "build.json", record)
    shutil.rmtree(final, ignore_errors=True)
    tmp.replace(final)
    return final


def exists(index_path: Path) -> bool:
    return (snapshot_dir(index_path) / "build.json").is_file()


def build_info(index_path: Path) -> dict[str, Any]:
    return json.loads((snapshot_dir(index_path) / "build.json").read_text())


def stored_vectors(index_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of a snapshot, the vectors memory-mapped (read only what is touched)."""
    folder = snapshot_dir(index_path)
    return np.load(folder / "ids.npy"), np.load(folder / "vectors.npy", mmap_mode="r")


def read_rows(index_path: Path) -> Rows:
    import pyarrow.parquet as pq

    table = pq.read_table(snapshot_dir(index_path) / "rows.parquet")
    return Rows(
        table.column("image_id").to_numpy(),
        table.column("path").to_pylist(),
        table.column("label").to_pylist(),
        table.column("cluster").to_numpy(),
    )


@dataclass
class Lookup:
    """Image id → row of a snapshot, vectorized (sorted ids + binary search)."""

    ids: np.ndarray
    _order: np.ndarray = field(init=False)
    _sorted: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]

    def rows(self, image_ids: np.ndarray) -> np.ndarray:
        """Row of each id, -1 where the snapshot does not have it."""
        return positions(self._sorted, image_ids, self._order)


def prune(folder: Path, keep: set[str]) -> list[str]:
    """Delete the snapshots of versions not in `keep` (a snapshot holds a full copy of the
    vectors; the index files themselves stay). Returns the versions pruned."""
    pruned = []
    for snap in Path(folder).glob("*.snapshot"):
        if snap.is_dir() and snap.stem not in keep:
            shutil.rmtree(snap, ignore_errors=True)
            pruned.append(snap.stem)
    return sorted(pruned)


# -- which version is published (polled by the server) ---------------------------------------
def write_pointer(paths: DataPaths, model_key: str, version: str) -> None:
    """Record the published version of `model_key`, and that it is the newest publication."""
    folder = paths.indexes_dir / model_key
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / POINTER, {"model_key": model_key, "version": version})
    _write_json(paths.indexes_dir / POINTER, {"model_key": model_key, "version": version})


def read_pointer(paths: DataPaths, model_key: str | None) -> tuple[str, str] | None:
    """(model_key, version) published for `model_key` (None: the newest publication), or None
    when nothing was published since pointers were introduced."""
    folder = paths.indexes_dir / model_key if model_key else paths.indexes_dir
    try:
        found = json.loads((folder / POINTER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return found["model_key"], found["version"]
