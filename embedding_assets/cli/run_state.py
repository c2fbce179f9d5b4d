"""The state a complete `emb run` leaves behind, so that the next `emb run` can tell, right after
its catalog scan, that nothing downstream can change (issue 23: a no-op run costs a scan).

The state hashes every input that decides an asset's result: the catalog's rows, the labels
log, the hand-set splits, the run config, the code, the EMB_* settings and the files under the
data folder (a deleted plot or model must come back). Plain Python over DuckDB and the file
system; deciding and running is `cli.runner`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from embedding_assets.common import tables
from embedding_assets.common.clock import utc_now
from embedding_assets.common.fingerprints import fingerprint
from resources.duckdb_store import connect
from resources.paths import DataPaths

ENV_PREFIX = "EMB_"
# The packages whose files make up the code, and the suffixes that count (source, DDL,
# templates, the packaged word lists).
CODE_PACKAGES = ("embedding_assets", "resources", "sensors")
CODE_SUFFIXES = (".py", ".sql", ".html", ".json")
# Under the data folder but not an output of the assets after the catalog: the demo images
# (catalog rows), lock files, the Dagster home (the instance, checked apart), and the
# catalog's own files (its rows are a part; the catalog's run writes them on every `emb run`).
NOT_OUTPUTS = ("demo_images", "locks", "dagster")
NOT_OUTPUT_FILES = ("embeddings.lmdb/lock.mdb", "parquet/images.parquet")


@dataclass(frozen=True)
class State:
    """One hash per input, and the hash of them all."""

    parts: dict[str, str]

    @property
    def hash(self) -> str:
        return fingerprint(self.parts)


@dataclass(frozen=True)
class Recorded:
    """The state a complete run left, as `run_states` keeps it."""

    run_id: str  # the complete run whose results these are
    state: str
    parts: dict[str, str]
    created_at: datetime
    newest_run_id: str  # the newest Dagster run known to leave this state
    warnings: list[str]  # that run's failed WARN checks, as its summary said them


def _digest(rows: object) -> str:
    return hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()[:16]


def catalog_parts(db_path: Path) -> tuple[dict[str, str], Recorded | None]:
    """The catalog's parts of the state (every `images` row, removed and bad ones too; the
    labels log; the splits set by hand) and the last recorded state, in one read-only
    connection: the scan just refreshed the catalog, so this is what downstream would read."""
    with connect(db_path, read_only=True) as con:
        images = con.execute(
            "SELECT coalesce(md5(string_agg(concat_ws(':', path, root, coalesce(sha256, '-'), "
            "status, coalesce(error, '-'), coalesce(CAST(removed_at AS VARCHAR), '-')), '|' "
            f"ORDER BY path)), 'empty'), count(*) FROM {tables.IMAGES}"
        ).fetchall()[0]
        labels = con.execute(
            f"SELECT coalesce(max(label_id), 0), count(*) FROM {tables.LABELS}"
        ).fetchall()[0]
        splits = con.execute(
            "SELECT coalesce(md5(string_agg(concat_ws(':', image_id, split), '|' "
            f"ORDER BY image_id)), 'empty') FROM {tables.IMAGE_SPLITS}"
        ).fetchall()[0][0]
        recorded = _last_recorded(con) if tables.exists(con, tables.RUN_STATES) else None
    parts = {"catalog": _digest([images, splits]), "labels": _digest(labels)}
    return parts, recorded


def _last_recorded(con: Any) -> Recorded | None:
    rows = con.execute(
        "SELECT run_id, state, parts, created_at, newest_run_id, warnings "
        f"FROM {tables.RUN_STATES} ORDER BY created_at DESC LIMIT 1"
    ).fetchall()
    if not rows:
        return None
    run_id, state, parts, created_at, newest, warnings = rows[0]
    return Recorded(run_id, state, json.loads(parts), created_at, newest, json.loads(warnings))


def config_part(run_config: Mapping[str, Any]) -> str:
    """The run config as given; the loggers the runner adds decide nothing."""
    given = {k: v for k, v in run_config.items() if k != "loggers"}
    return hashlib.sha256(json.dumps(given, sort_keys=True, default=str).encode()).hexdigest()[:16]


def env_part(environ: Mapping[str, str] | None = None) -> str:
    """Every EMB_* variable: the settings the definitions and assets read from the
    environment (shards, executor, lock timeouts, retrain thresholds, ...)."""
    environ = os.environ if environ is None else environ
    return _digest(sorted((k, v) for k, v in environ.items() if k.startswith(ENV_PREFIX)))


_code_hash: str | None = None


def code_part() -> str:
    """A hash of the installed code's files (contents, not times), so that an edit or an
    upgrade never reuses results of other code. Read once per process: ~1.5 MB, a few ms."""
    global _code_hash
    if _code_hash is None:
        root = Path(__file__).resolve().parents[2]
        digest = hashlib.sha256()
        for package in CODE_PACKAGES:
            for path in sorted(_files(root / package)):
                if path.suffix in CODE_SUFFIXES:
                    digest.update(path.relative_to(root).as_posix().encode() + b"\0")
                    digest.update(path.read_bytes())
        _code_hash = digest.hexdigest()[:16]
    return _code_hash


def _files(folder: Path, skip: frozenset[Path] = frozenset()) -> Iterator[Path]:
    """Files under `folder` (not following links to folders), without the folders in `skip`
    and without __pycache__."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            if entry.name != "__pycache__" and path not in skip:
                yield from _files(path, skip)
        else:
            yield path


def outputs_part(paths: DataPaths, dagster_home: Path) -> str:
    """(relative path, size, mtime_ns) of every file under the data folder but the catalog's,
    the Dagster home, the demo images and the lock files: a result file deleted or replaced by
    hand makes the next run go through every asset, which writes it again."""
    root = paths.root
    skip = {root / name for name in NOT_OUTPUTS}
    home = dagster_home.expanduser().resolve()
    if home.is_relative_to(root):
        skip.add(home)
    rows = []
    for path in _files(root, frozenset(skip)):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(paths.catalog_db.name) or rel in NOT_OUTPUT_FILES:
            continue  # catalog.duckdb, its .wal and .tmp
        try:
            st = path.stat()
        except OSError:  # a broken link
            rows.append((rel, -1, -1))
            continue
        rows.append((rel, st.st_size, st.st_mtime_ns))
    return _digest(sorted(rows))


def current_state(
    paths: DataPaths,
    run_config: Mapping[str, Any],
    dagster_home: Path,
) -> tuple[State, Recorded | None]:
    """The state now, and the last one recorded."""
    parts, recorded = catalog_parts(paths.catalog_db)
    parts |= {
        "config": config_part(run_config),
        "env": env_part(),
        "code": code_part(),
        "outputs": outputs_part(paths, dagster_home),
    }
    return State(parts), recorded


def up_to_date(state: State, recorded: Recorded | None, newest_run_before: str | None) -> bool:
    """Whether nothing downstream can change: the state is the one the last complete run left,
    and no run (from the UI, a sensor, another process) came after it."""
    return (
        recorded is not None
        and recorded.state == state.hash
        and newest_run_before is not None
        and recorded.newest_run_id == newest_run_before
    )


def record_state(db_path: Path, run_id: str, state: State, warnings: list[str]) -> None:
    """Record the state that the complete run `run_id` left, and the warnings it gave."""
    now = utc_now()
    parts = json.dumps(state.parts, sort_keys=True)
    with connect(db_path) as con:
        con.execute(
            f"INSERT OR REPLACE INTO {tables.RUN_STATES} (run_id, state, parts, warnings, "
            "created_at, newest_run_id, checked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [run_id, state.hash, parts, json.dumps(warnings), now, run_id, now],
        )


def confirm_state(db_path: Path, recorded: Recorded, newest_run_id: str) -> None:
    """After a run that found the state unchanged (itself a catalog run), it is the newest run
    known to leave the state, so the next one compares with it."""
    with connect(db_path) as con:
        con.execute(
            f"UPDATE {tables.RUN_STATES} SET newest_run_id = ?, checked_at = ? WHERE run_id = ?",
            [newest_run_id, utc_now(), recorded.run_id],
        )
