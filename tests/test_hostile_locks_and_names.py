"""Issue 14: a catalog locked by another process, and file names that are not UTF-8.

The CLI runs in a real subprocess, as a user runs it: real argv bytes, real stderr, and a write
lock held by yet another real process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedding_assets.catalog.scan import scan_catalog
from resources.duckdb_store import connect
from resources.storage import DataPaths
from tests.al_helpers import query
from tests.helpers import fs_supports_non_utf8, write_image

HOLD_WRITER = (
    "import sys, time, duckdb\n"
    "con = duckdb.connect(sys.argv[1])\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def _emb(*args: str | bytes, timeout_s: str = "1") -> subprocess.CompletedProcess:
    env = {**os.environ, "EMB_LOCK_TIMEOUT_S": timeout_s, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONIOENCODING", None)
    return subprocess.run(
        [sys.executable, "-m", "embedding_assets.cli", *args],
        capture_output=True,
        env=env,
        timeout=60,
    )


@pytest.fixture
def writer_held(data_dir: Path, labeled_folder: Path) -> Iterator[subprocess.Popen]:
    """A catalog whose write lock another process holds until the test ends."""
    db = DataPaths(data_dir).catalog_db
    scan_catalog(db, labeled_folder)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        yield holder
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("command", ["set", "import", "sql"])
def test_a_held_write_lock_gives_one_line_and_writes_nothing(
    command: str, writer_held: subprocess.Popen, data_dir: Path, labeled_folder: Path
):
    image = labeled_folder / "unlabeled" / "u_0.png"
    csv = data_dir.parent / "labels.csv"
    csv.write_text(f"path,label\n{image},class_1\n")
    args = {
        "set": ["label", "set", str(image), "cat"],
        "import": ["label", "import", str(csv)],
        "sql": ["sql", "select count(*) from labels"],
    }[command]
    out = _emb(*args)
    stderr = out.stderr.decode("utf-8", "replace")
    assert out.returncode != 0
    assert "Traceback" not in stderr + out.stdout.decode("utf-8", "replace")
    assert out.stdout == b""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "is locked by another process" in lines[0]
    assert f"PID {writer_held.pid}" in lines[0]  # DuckDB names the holder; we pass it on
    assert "nothing was written" in lines[0] and "retry" in lines[0]
    writer_held.kill()
    writer_held.wait()
    assert query(data_dir, "SELECT count(*) FROM labels WHERE source <> 'folder'") == [(0,)]


def test_label_set_finds_an_image_whose_name_is_not_utf8(tmp_path: Path, data_dir: Path):
    root = tmp_path / "images"
    root.mkdir()
    if not fs_supports_non_utf8(root):
        pytest.skip("this filesystem refuses file names that are not UTF-8")
    raw = os.fsencode(root) + b"/caf\xe9.png"  # Latin-1 e-acute: not valid UTF-8
    write_image(Path(os.fsdecode(raw)), seed=1)
    write_image(root / "caf.png", seed=2)  # a UTF-8 neighbour that must not be labeled
    db = DataPaths(data_dir).catalog_db
    scan_catalog(db, root)
    image_id = _id_by_bytes(data_dir, raw)

    out = _emb("label", "set", raw, "cat")  # argv as raw bytes, exactly as a shell passes it
    assert out.returncode == 0, out.stderr
    assert b"Traceback" not in out.stderr
    assert out.stdout == b"1 label added.\n"
    assert query(data_dir, "SELECT image_id, label, source FROM labels WHERE source = 'cli'") == [
        (image_id, "cat", "cli")
    ]

    # a missing non-UTF-8 name is reported (its path printed with \xNN escapes), not a crash
    missing = os.fsencode(root) + b"/nope\xff.png"
    out = _emb("label", "set", missing, "dog")
    assert out.returncode == 1
    assert b"Traceback" not in out.stderr
    assert b"unknown image " + os.fsencode(root) + b"/nope\\xff.png" in out.stderr
    assert query(data_dir, "SELECT count(*) FROM labels WHERE label = 'dog'") == [(0,)]


def _id_by_bytes(data_dir: Path, raw: bytes) -> int:
    with connect(DataPaths(data_dir).catalog_db, read_only=True) as con:
        rows = con.execute("SELECT image_id FROM images WHERE path_bytes = ?", [raw]).fetchall()
    assert len(rows) == 1, rows
    return rows[0][0]
