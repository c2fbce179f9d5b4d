"""Which folder `emb run` scans, checked before any run: a folder that does not exist, or holds
no image file at all, is one line naming the folder and where it came from, and the catalog is
left as it was (a run over an empty folder would report every earlier image "from cache")."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from embedding_assets.catalog import files
from embedding_assets.common import tables
from embedding_assets.common.settings import IMAGE_DIR_ENV, default_image_dir
from resources.duckdb_store import connect

DEMO = "the demo folder"  # the origin of the folder when nothing names one


@dataclass(frozen=True)
class ImageSource:
    """A folder to scan and what named it, for the messages."""

    folder: str
    origin: str  # "--image-dir", "image_dir in run.yaml", "$EMB_IMAGE_DIR" or "the demo folder"


class SourceError(ValueError):
    """The folder cannot be scanned, or would change nothing; the message says what to do."""


def choose(flag: str | None, config_value: str | None, config_name: str) -> ImageSource:
    """The flag's folder, else the config file's, else $EMB_IMAGE_DIR, else the demo folder."""
    if flag:
        return ImageSource(flag, "--image-dir")
    if config_value:
        return ImageSource(config_value, f"image_dir in {config_name}")
    if os.environ.get(IMAGE_DIR_ENV):
        return ImageSource(os.environ[IMAGE_DIR_ENV], f"${IMAGE_DIR_ENV}")
    return ImageSource(default_image_dir(), DEMO)


def check_local(source: ImageSource, catalog_db: Path) -> Path:
    """The folder, resolved, if it exists and holds at least one image file."""
    folder = Path(source.folder).expanduser()
    if source.origin == DEMO and not folder.is_dir():
        raise SourceError(
            f"no images to run on: the demo folder {folder} does not exist yet; run `emb demo`, "
            f"or pass --image-dir FOLDER (or set ${IMAGE_DIR_ENV})"
        )
    if not folder.exists():
        hint = "" if folder.is_absolute() else f" (relative to {Path.cwd()})"
        raise SourceError(
            f"{source.origin} {folder}: no such folder{hint}; check the path (nothing ran)"
        )
    if not folder.is_dir():
        raise SourceError(
            f"{source.origin} {folder}: a file, not a folder; pass its folder (nothing ran)"
        )
    if next(files.walk_images(folder), None) is None:
        others = sum(1 for _ in itertools.islice(_any_files(folder), 10_000))
        plural = "s" if others != 1 else ""
        what = (
            f"{others}{'+' if others == 10_000 else ''} other file{plural}"
            if others
            else "no files"
        )
        raise SourceError(
            f"{source.origin} {folder}: no image files there ({what}; read: "
            f"{', '.join(sorted(files.IMAGE_EXTENSIONS))}); nothing ran and the catalog is "
            f"unchanged ({_catalog_count(catalog_db)})"
        )
    return folder.resolve()


def _any_files(folder: Path):
    for _, _, names in os.walk(folder):
        yield from names


def _catalog_count(catalog_db: Path) -> str:
    """What the catalog holds now, in words."""
    if not catalog_db.exists():
        return "no catalog yet"
    with connect(catalog_db, read_only=True) as con:
        if not tables.exists(con, tables.IMAGES):
            return "no catalog yet"
        n = con.execute(f"SELECT count(*) FROM {tables.USABLE_IMAGES}").fetchone()[0]
    return f"it holds {n} usable images from earlier runs"
