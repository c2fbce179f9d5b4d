"""Every kind of bad input gets a row with a clear error, and the run goes on."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import duckdb
import pytest

from embedding_assets.catalog.scan import ScanSettings, scan_catalog
from tests.helpers import fs_supports_non_utf8, write_image


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares huge dimensions in its header: a decompression bomb's signature."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    root = tmp_path / "messy"
    good = write_image(root / "good" / "a.png", seed=1)
    write_image(root / "good" / "b.jpg", fmt="JPEG", seed=2)
    write_image(root / "good" / "c.webp", fmt="WEBP", seed=3)
    write_image(root / "good" / "d.bmp", fmt="BMP", seed=4)
    write_image(root / "good" / "e.gif", mode="L", fmt="GIF", seed=5)
    write_image(root / "good" / "f16.tif", mode="I;16", fmt="TIFF", seed=6)
    (root / "dup").mkdir()
    (root / "dup" / "a_copy.png").write_bytes(good.read_bytes())
    bad = root / "bad"
    bad.mkdir()
    (bad / "truncated.png").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (bad / "zero.png").write_bytes(b"")
    (bad / "text.png").write_text("hello, I am not a picture\n")
    (bad / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))
    (bad / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    os.symlink("loop_b.png", bad / "loop_a.png")
    os.symlink("loop_a.png", bad / "loop_b.png")
    os.symlink("/nonexistent/target.png", bad / "dangling.png")
    os.symlink("..", bad / "parent_loop")  # a directory symlink back up: must not recurse forever
    os.mkfifo(bad / "pipe.png")
    (root / "notes.txt").write_text("not an image extension: ignored")
    if fs_supports_non_utf8(root):
        name = os.path.join(os.fsencode(root / "good"), b"caf\xe9.png")
        with open(name, "wb") as fh:
            fh.write((root / "good" / "a.png").read_bytes()[:0] or _small_png())
    return root


def _small_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (5, 5), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _rows(db: Path) -> dict[str, tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT path, status, error, mode, format, sha256, path_bytes FROM images"
        ).fetchall()
    return {Path(r[0]).name: r[1:] for r in rows}


def test_every_bad_kind_is_recorded_with_a_clear_error(messy_folder: Path, tmp_path: Path):
    db = tmp_path / "catalog.duckdb"
    summary = scan_catalog(db, messy_folder)
    rows = _rows(db)

    for name in ("a.png", "b.jpg", "c.webp", "d.bmp", "e.gif", "f16.tif", "a_copy.png"):
        assert rows[name][0] == "ok", (name, rows[name])
    assert rows["f16.tif"][2] == "I;16" and rows["f16.tif"][3] == "TIFF"
    assert rows["e.gif"][3] == "GIF"

    assert rows["truncated.png"][0] == "corrupt" and "truncated" in rows["truncated.png"][1]
    assert rows["zero.png"][0] == "corrupt" and "empty file" in rows["zero.png"][1]
    assert rows["text.png"][0] == "corrupt" and "not an image" in rows["text.png"][1]
    assert rows["bomb.png"][0] == "unsupported"
    assert "max_image_pixels" in rows["bomb.png"][1]
    assert rows["photo.heic"][0] == "unsupported" and "convert" in rows["photo.heic"][1]
    for name in ("loop_a.png", "loop_b.png", "dangling.png"):
        assert rows[name][0] == "unreadable" and "symlink" in rows[name][1], rows[name]
    assert rows["pipe.png"][0] == "unreadable" and "not a regular file" in rows["pipe.png"][1]
    assert "notes.txt" not in rows

    assert rows["a.png"][4] == rows["a_copy.png"][4], "duplicate content shares one hash"
    assert summary.duplicate_groups == 1
    assert summary.by_status["ok"] == summary.usable

    if fs_supports_non_utf8(messy_folder):
        name = "caf\\xe9.png"
        assert (
            rows[name][0] == "ok"
            and rows[name][5] == os.fsencode(messy_folder / "good") + b"/caf\xe9.png"
        )


def test_pixel_limit_is_configurable(tmp_path: Path):
    root = tmp_path / "imgs"
    write_image(root / "big.png", size=(64, 64))
    write_image(root / "small.png", size=(8, 8))
    db = tmp_path / "c.duckdb"
    scan_catalog(db, root, ScanSettings(max_pixels=1000))
    rows = _rows(db)
    assert rows["big.png"][0] == "unsupported" and "4,096 pixels" in rows["big.png"][1]
    assert rows["small.png"][0] == "ok"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_permissions(tmp_path: Path):
    root = tmp_path / "imgs"
    p = write_image(root / "secret.png")
    p.chmod(0)
    db = tmp_path / "c.duckdb"
    scan_catalog(db, root)
    assert _rows(db)["secret.png"][0] == "unreadable"


def test_missing_folder_names_the_input_and_the_fix(tmp_path: Path):
    with pytest.raises(NotADirectoryError, match="image_dir"):
        scan_catalog(tmp_path / "c.duckdb", tmp_path / "does-not-exist")
