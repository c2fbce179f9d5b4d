"""Bring the `images` table in line with a folder (or an object-storage URL), touching only
what changed.

Three short DuckDB connections per scan: read what we knew, (no connection while hashing and
decoding), write what changed. A re-run over an unchanged folder only stats files (lists
objects: size and ETag).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from embedding_assets.catalog import files, labels, object_store, probe
from embedding_assets.catalog.quality import QUALITY_COLUMNS
from embedding_assets.catalog.shards import Shard
from embedding_assets.common import tables
from embedding_assets.common.clock import utc_now
from resources.duckdb_store import connect

UPSERT_COLUMNS = [
    "path",
    "path_bytes",
    "root",
    "sha256",
    "bytes",
    "mtime_ns",
    "width",
    "height",
    "mode",
    "format",
    "status",
    "error",
    "etag",
]
UPSERT_TYPES = [
    pa.string(),
    pa.binary(),
    pa.string(),
    pa.string(),
    pa.int64(),
    pa.int64(),
    pa.int32(),
    pa.int32(),
    pa.string(),
    pa.string(),
    pa.string(),
    pa.string(),
    pa.string(),
]


@dataclass
class ScanSummary:
    """What one scan found and did; becomes the asset's metadata."""

    root: str
    found: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    probed: int = 0
    labels_added: int = 0
    duplicate_groups: int = 0
    usable: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    by_format: dict[str, int] = field(default_factory=dict)
    label_classes: dict[str, int] = field(default_factory=dict)  # current label -> live images
    probe_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.found / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class ScanSettings:
    """How a scan reads the folder (the image_catalog config)."""

    max_pixels: int = probe.DEFAULT_MAX_PIXELS  # larger images are refused (decompression bombs)
    labels_from_folders: bool = True  # a file's folder names its label
    workers: int | None = None  # probe threads (None: automatic)
    unlabeled_folders: tuple[str, ...] = labels.UNLABELED_FOLDERS  # folders that name no label


def scan_catalog(
    db_path: Path,
    root: str | Path,
    settings: ScanSettings = ScanSettings(),
    *,
    shard: Shard | None = None,
) -> ScanSummary:
    """Scan `root` (a folder or an fsspec URL) into the catalog at `db_path` incrementally and
    return what happened."""
    started = time.perf_counter()
    if object_store.is_url(root):
        root_str = object_store.normalize(str(root))
        found = object_store.list_images(
            root_str, files.IMAGE_EXTENSIONS | files.KNOWN_UNSUPPORTED_EXTENSIONS
        )
    else:
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise NotADirectoryError(
                f"image folder {root_path} does not exist or is not a folder; set image_dir in "
                "the image_catalog config (or EMB_IMAGE_DIR) to a folder of images"
            )
        root_str = str(root_path.resolve())
        found = list(files.walk_images(root_path))
    summary = ScanSummary(root=root_str)

    known = _known_files(db_path, root_str)
    if shard is not None:  # one partition: the rest of the folder is another run's
        found = [f for f in found if shard.contains(f.path)]
    seen_paths = {f.path for f in found}
    gone = [p for p in known if p not in seen_paths and (shard is None or shard.contains(p))]

    summary.found = len(found)
    to_probe = []
    for f in found:
        old = known.get(f.path)
        if old is None:
            summary.new += 1
            to_probe.append(f)
        elif old[:3] != (f.size, f.mtime_ns, f.etag) or old[3] == "unreadable" or f.error:
            summary.changed += 1
            to_probe.append(f)
        else:
            summary.unchanged += 1

    t0 = time.perf_counter()
    probes = probe.probe_many(to_probe, settings.max_pixels, settings.workers)
    summary.probe_seconds = time.perf_counter() - t0
    summary.probed = len(probes)

    now = utc_now()
    with connect(db_path) as con:
        con.begin()
        con.register("seen", _paths(seen_paths))
        con.register("gone", _paths(gone))
        if to_probe:
            _write_probed(con, to_probe, probes, root_str, now)
        con.execute(
            f"UPDATE {tables.IMAGES} SET last_seen = $now, removed_at = NULL FROM seen "
            f"WHERE {tables.IMAGES}.path = seen.path AND {tables.IMAGES}.last_seen < $now",
            {"now": now},
        )
        summary.removed = con.execute(
            f"UPDATE {tables.IMAGES} SET removed_at = $now FROM gone "
            f"WHERE {tables.IMAGES}.path = gone.path AND removed_at IS NULL",
            {"now": now},
        ).fetchone()[0]
        if to_probe:
            _write_quality(con, to_probe, probes)
            summary.labels_added = _write_folder_labels(con, to_probe, root_str, settings)
        con.commit()
        _fill_counts(con, summary)
    summary.seconds = time.perf_counter() - started
    return summary


def _paths(paths: Iterable[str]) -> dict[str, np.ndarray]:
    """A one-column table of paths for DuckDB to scan. NumPy, not Arrow: building an Arrow array
    from Python objects imports pandas (0.2-0.4 s), which a scan with nothing new needs nowhere
    else."""
    return {"path": np.array(list(paths), dtype=object)}


def _write_probed(
    con, found: list[files.FoundFile], probes: list[probe.Probe], root: str, now: datetime
) -> None:
    """Insert the new files and update the changed ones, as just probed."""
    con.register("upserts", _upsert_table(found, probes, root))
    con.execute(
        f"""
        INSERT INTO {tables.IMAGES} ({", ".join(UPSERT_COLUMNS)}, first_seen, last_seen)
        SELECT *, $now, $now FROM upserts
        ON CONFLICT (path) DO UPDATE SET
            {", ".join(f"{c} = excluded.{c}" for c in UPSERT_COLUMNS if c != "path")},
            last_seen = excluded.last_seen, removed_at = NULL
        """,
        {"now": now},
    )
    con.unregister("upserts")


def _write_folder_labels(
    con, found: list[files.FoundFile], root: str, settings: ScanSettings
) -> int:
    """Each probed file's folder label, where it differs from its latest folder label; how many
    were added."""
    folder_labels = pa.table(
        {
            "path": pa.array([f.path for f in found], pa.string()),
            "label": pa.array(
                [
                    labels.folder_label(f.path, root, settings.unlabeled_folders)
                    if settings.labels_from_folders
                    else None
                    for f in found
                ],
                pa.string(),
            ),
        }
    )
    con.register("folder_labels", folder_labels)
    added = con.execute(
        f"""
        INSERT INTO {tables.LABELS} (image_id, label, source)
        SELECT i.image_id, f.label, 'folder'
        FROM folder_labels f JOIN {tables.IMAGES} i USING (path)
        LEFT JOIN (SELECT image_id, arg_max(label, label_id) AS label
                   FROM {tables.LABELS} WHERE source = 'folder' GROUP BY image_id) cur
            USING (image_id)
        WHERE f.label IS NOT NULL AND cur.label IS DISTINCT FROM f.label
        """
    ).fetchone()[0]
    con.unregister("folder_labels")
    return added


def _known_files(db_path: Path, root: str) -> dict[str, tuple[int, int, str | None, str]]:
    """path -> (bytes, mtime_ns, etag, status) of what the catalog already holds for `root`."""
    if not db_path.exists():
        return {}
    with connect(db_path, read_only=True) as con:
        cols = con.execute(
            f"SELECT path, bytes, mtime_ns, etag, status FROM {tables.IMAGES} WHERE root = ?",
            [root],
        ).fetchnumpy()
    return dict(
        zip(
            cols["path"].tolist(),
            zip(
                cols["bytes"].tolist(),
                cols["mtime_ns"].tolist(),
                cols["etag"].tolist(),
                cols["status"].tolist(),
                strict=True,
            ),
            strict=True,
        )
    )


def _upsert_table(found: list[files.FoundFile], probes: list[probe.Probe], root: str) -> pa.Table:
    rows = {
        "path": [f.path for f in found],
        "path_bytes": [f.path_bytes for f in found],
        "root": [root] * len(found),
        "sha256": [p.sha256 for p in probes],
        "bytes": [f.size for f in found],
        "mtime_ns": [f.mtime_ns for f in found],
        "width": [p.width for p in probes],
        "height": [p.height for p in probes],
        "mode": [p.mode for p in probes],
        "format": [p.format for p in probes],
        "status": [p.status for p in probes],
        "error": [p.error for p in probes],
        "etag": [f.etag for f in found],
    }
    return pa.table(
        [pa.array(rows[c], t) for c, t in zip(UPSERT_COLUMNS, UPSERT_TYPES, strict=True)],
        names=UPSERT_COLUMNS,
    )


def _write_quality(con, found: list[files.FoundFile], probes: list[probe.Probe]) -> None:
    """The quality measures taken while decoding, replacing those of every re-probed file (a
    file that no longer decodes loses its old measures)."""
    measured = [(f.path, p.quality) for f, p in zip(found, probes, strict=True) if p.quality]
    columns = {"path": pa.array([path for path, _ in measured], pa.string())}
    for c in QUALITY_COLUMNS:
        columns[c] = pa.array([getattr(q, c) for _, q in measured], pa.float64())
    con.register("quality", pa.table(columns))
    con.register("probed", pa.table({"path": pa.array([f.path for f in found], pa.string())}))
    con.execute(
        f"DELETE FROM {tables.IMAGE_QUALITY_MEASURES} WHERE image_id IN "
        f"(SELECT image_id FROM {tables.IMAGES} JOIN probed USING (path))"
    )
    con.execute(
        f"INSERT INTO {tables.IMAGE_QUALITY_MEASURES} "
        f"SELECT i.image_id, {', '.join(QUALITY_COLUMNS)} "
        f"FROM quality q JOIN {tables.IMAGES} i USING (path)"
    )
    con.unregister("quality")
    con.unregister("probed")


def _fill_counts(con, summary: ScanSummary) -> None:
    live = f"FROM {tables.IMAGES} WHERE root = ? AND removed_at IS NULL"
    summary.by_status = dict(
        con.execute(
            f"SELECT status, count(*) {live} GROUP BY 1 ORDER BY 1", [summary.root]
        ).fetchall()
    )
    summary.by_format = {
        str(k): v
        for k, v in con.execute(
            f"SELECT coalesce(format, '(none)'), count(*) {live} GROUP BY 1 ORDER BY 1",
            [summary.root],
        ).fetchall()
    }
    summary.usable = summary.by_status.get("ok", 0)
    summary.label_classes = dict(
        con.execute(
            f"SELECT c.label, count(*) FROM {tables.IMAGES} i "
            f"JOIN {tables.CURRENT_LABELS} c USING (image_id) "
            "WHERE i.root = ? AND i.removed_at IS NULL GROUP BY 1 ORDER BY 1",
            [summary.root],
        ).fetchall()
    )
    summary.duplicate_groups = con.execute(
        f"SELECT count(*) FROM (SELECT sha256 {live} AND status = 'ok' "
        "GROUP BY sha256 HAVING count(*) > 1)",
        [summary.root],
    ).fetchone()[0]


def write_snapshot(db_path: Path, parquet_path: Path) -> Path:
    """Copy the whole `images` table to Parquet for tools that read files, not databases."""
    parquet_path.parent.mkdir(parents=True, exist_ok=True)
    with connect(db_path, read_only=True) as con:
        target = str(parquet_path).replace("'", "''")
        con.execute(f"COPY {tables.IMAGES} TO '{target}' (FORMAT PARQUET)")
    return parquet_path


def usable_version(db_path: Path, shard: Shard | None = None) -> str:
    """A hash of (path, sha256) over the usable images (of one shard): the catalog's data
    version, which changes exactly when what downstream may read changes."""
    with connect(db_path, read_only=True) as con:
        if shard is None:
            return con.execute(
                "SELECT coalesce(md5(string_agg(path || ':' || sha256, ',' ORDER BY path)), "
                f"'empty') FROM {tables.USABLE_IMAGES}"
            ).fetchone()[0]
        rows = con.execute(
            f"SELECT path, sha256 FROM {tables.USABLE_IMAGES} ORDER BY path"
        ).fetchall()
    mine = [f"{p}:{h}" for p, h in rows if shard.contains(p)]
    return hashlib.md5(",".join(mine).encode()).hexdigest() if mine else "empty"
