"""Reading catalogued images: which are usable, where their bytes are, and the bytes decoded
as RGB pictures, for a local file (opened by its raw name when that is not UTF-8) or an object
in storage (fetched by URL) alike."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image, ImageOps

from embedding_assets.catalog import object_store
from embedding_assets.common import tables
from embedding_assets.common.ids import positions
from resources.duckdb_store import connect

if TYPE_CHECKING:
    import pandas as pd

    from embedding_assets.catalog.shards import Shard


def fs_path(raw: bytes) -> str | bytes:
    """The name to open a file by, from the catalog's path bytes (`tables.PATH_BYTES`)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw  # a non-UTF-8 file name: open it by its bytes


def open_source(path: str | bytes | Path) -> BinaryIO:
    """The open file, or the fetched object's bytes. A failure here (a vanished file, a store
    without credentials, a network error) says nothing about the image itself."""
    if object_store.is_url(path):
        return io.BytesIO(object_store.read_bytes(path))
    return open(path, "rb")


@contextmanager
def open_image(path: str | bytes | Path) -> Iterator[Image.Image]:
    """`PIL.Image.open` over `open_source`, closing both."""
    with open_source(path) as source, Image.open(source) as image:
        yield image


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16-bit and float images are min-max scaled, not clipped,
    so a 12-bit micrograph does not come out white; transparency goes onto black."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(scaled.astype(np.uint8))
    return img.convert("RGB")


def decode(source: BinaryIO) -> Image.Image:
    """The first frame of an opened image as RGB (closes `source`)."""
    with source, Image.open(source) as im:
        im.seek(0)
        return to_rgb(im)


def load_image(path: str | bytes) -> Image.Image:
    """A catalog image (a file, or an object by its URL) as RGB, first frame."""
    return decode(open_source(path))


@dataclass(frozen=True)
class UsableImages:
    """The usable images in image_id order: what embedding them needs (the paths to open,
    their content hashes) and what showing them needs (the catalog's paths)."""

    ids: np.ndarray  # int64, ascending
    fs_paths: list[str | bytes]  # to open (raw bytes where the name is not UTF-8)
    hashes: list[str]  # sha256 of the content
    paths: list[str]  # as the catalog shows them

    def __len__(self) -> int:
        return len(self.ids)

    def rows_of(self, image_ids: np.ndarray) -> np.ndarray:
        """Positions of `image_ids` here; -1 for an id that is not usable."""
        return positions(self.ids, image_ids)

    def subset(self, rows: np.ndarray | list[int]) -> UsableImages:
        """These images at `rows`, in that order."""
        rows = [int(r) for r in rows]
        return UsableImages(
            self.ids[rows] if rows else self.ids[:0],
            [self.fs_paths[r] for r in rows],
            [self.hashes[r] for r in rows],
            [self.paths[r] for r in rows],
        )


def usable_files(db: Path, shard: Shard | None = None) -> UsableImages:
    """The usable images, of one shard when given."""
    with connect(db, read_only=True) as con:
        rows = con.execute(
            f"SELECT image_id, {tables.PATH_BYTES}, sha256, path "
            f"FROM {tables.USABLE_IMAGES} ORDER BY image_id"
        ).fetchall()
    if shard is not None:
        rows = [rows[i] for i in np.flatnonzero(shard.mask([r[3] for r in rows]))]
    return UsableImages(
        np.asarray([r[0] for r in rows], dtype=np.int64),
        [fs_path(r[1]) for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
    )


def usable_count(db: Path, shard: Shard | None = None) -> int:
    """How many usable images there are (in one shard), counted apart from any run."""
    with connect(db, read_only=True) as con:
        if shard is None:
            return con.execute(f"SELECT count(*) FROM {tables.USABLE_IMAGES}").fetchone()[0]
        paths = [r[0] for r in con.execute(f"SELECT path FROM {tables.USABLE_IMAGES}").fetchall()]
    return int(shard.mask(paths).sum())


@dataclass(frozen=True)
class StatusCounts:
    usable: int
    unusable: int  # corrupt, too large, unreadable...: kept with their error, never embedded


def status_counts(db: Path) -> StatusCounts:
    """How many current images are usable and how many are not."""
    with connect(db, read_only=True) as con:
        usable, bad = con.execute(
            "SELECT count(*) FILTER (status = 'ok'), count(*) FILTER (status <> 'ok') "
            f"FROM {tables.IMAGES} WHERE removed_at IS NULL"
        ).fetchone()
    return StatusCounts(int(usable), int(bad))


def image_info(db_path: Path, image_ids: np.ndarray) -> pd.DataFrame:
    """path and current label for `image_ids`, in their order (label None when unlabeled)."""
    import pyarrow as pa

    ids = np.asarray(image_ids, dtype=np.int64)
    wanted = pa.table({"image_id": ids, "pos": np.arange(len(ids), dtype=np.int64)})
    with connect(db_path, read_only=True) as con:
        con.register("wanted", wanted)
        return con.execute(
            f"""
            SELECT w.image_id, i.path, l.label
            FROM wanted w
            LEFT JOIN {tables.IMAGES} i USING (image_id)
            LEFT JOIN {tables.CURRENT_LABELS} l USING (image_id)
            ORDER BY w.pos
            """
        ).df()
