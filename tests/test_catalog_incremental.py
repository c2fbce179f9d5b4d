"""Re-runs rehash only what changed, mark what vanished, and never duplicate rows."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from embedding_assets.catalog.scan import scan_catalog
from tests.helpers import write_image


def _count(db: Path, sql: str) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchone()[0]


def test_rerun_is_incremental(labeled_folder: Path, tmp_path: Path):
    db = tmp_path / "c.duckdb"
    first = scan_catalog(db, labeled_folder)
    assert (first.new, first.probed, first.usable) == (28, 28, 28)
    assert first.labels_added == 24  # 3 folders x 8; `unlabeled/` gives none
    labels_after_first = _count(db, "SELECT count(*) FROM labels")

    again = scan_catalog(db, labeled_folder)
    assert (again.new, again.changed, again.probed, again.removed) == (0, 0, 0, 0)
    assert again.unchanged == 28 and again.labels_added == 0
    assert _count(db, "SELECT count(*) FROM images") == 28
    assert _count(db, "SELECT count(*) FROM labels") == labels_after_first

    changed = labeled_folder / "class_0" / "img_0.png"
    old_hash = _hash_of(db, changed)
    write_image(changed, size=(24, 24), seed=999)
    os.utime(changed, ns=(1, 1))  # a new mtime even on coarse-timestamp filesystems
    (labeled_folder / "class_1" / "img_0.png").unlink()
    write_image(labeled_folder / "class_2" / "new.png", seed=5)

    third = scan_catalog(db, labeled_folder)
    assert (third.new, third.changed, third.removed, third.probed) == (1, 1, 1, 2)
    assert _hash_of(db, changed) != old_hash
    assert _count(db, "SELECT count(*) FROM images") == 29, "removed rows are kept, not deleted"
    assert _count(db, "SELECT count(*) FROM images WHERE removed_at IS NOT NULL") == 1
    assert _count(db, "SELECT count(*) FROM usable_images") == 28
    assert third.labels_added == 1

    write_image(labeled_folder / "class_1" / "img_0.png", size=(24, 24), seed=101)
    fourth = scan_catalog(db, labeled_folder)
    assert fourth.changed == 1 and fourth.new == 0, "a file that comes back reuses its row"
    assert _count(db, "SELECT count(*) FROM images WHERE removed_at IS NOT NULL") == 0


def test_latest_label_wins_and_log_is_append_only(labeled_folder: Path, tmp_path: Path):
    db = tmp_path / "c.duckdb"
    scan_catalog(db, labeled_folder)
    with duckdb.connect(str(db)) as con:
        image_id = con.execute(
            "SELECT image_id FROM images WHERE path LIKE '%class_0/img_1.png'"
        ).fetchone()[0]
        con.execute(
            "INSERT INTO labels (image_id, label, source) VALUES (?, 'relabeled', 'cli')",
            [image_id],
        )
        label = con.execute(
            "SELECT label FROM current_labels WHERE image_id = ?", [image_id]
        ).fetchone()[0]
    assert label == "relabeled"
    assert scan_catalog(db, labeled_folder).labels_added == 0, (
        "a rescan does not undo a human label"
    )


def _hash_of(db: Path, path: Path) -> str:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT sha256 FROM images WHERE path = ?", [str(path.resolve())]
        ).fetchone()[0]
