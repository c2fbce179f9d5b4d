"""Run configuration of `image_catalog`: where the images are and how a scan reads them."""

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from embedding_assets.catalog.labels import UNLABELED_FOLDERS
from embedding_assets.catalog.probe import DEFAULT_MAX_PIXELS
from embedding_assets.common.settings import default_image_dir

if TYPE_CHECKING:
    from embedding_assets.catalog.scan import ScanSettings


class CatalogConfig(dg.Config):
    image_dir: str = Field(
        default=default_image_dir(),
        description="Folder to scan recursively (PNG, JPEG, TIFF, WebP, BMP, GIF), or an "
        "object-storage URL (s3://bucket/prefix, gs://..., az://...; credentials from the "
        "standard environment variables). "
        "Defaults to $EMB_IMAGE_DIR, else the demo images in the data directory.",
    )
    max_image_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS,
        description="Images with more pixels are rejected as possible decompression bombs.",
    )
    labels_from_folders: bool = Field(
        default=True,
        description="Record each image's parent folder name as its label "
        "(folders named in unlabeled_folders give none).",
    )
    unlabeled_folders: list[str] = Field(
        default=list(UNLABELED_FOLDERS),
        description="Folder names (case-insensitive, exact) whose images get no folder label; "
        "any other folder name becomes a label class.",
    )
    workers: int = Field(default=0, description="Threads that hash and decode; 0 = automatic.")

    def scan_settings(self) -> "ScanSettings":
        from embedding_assets.catalog.scan import ScanSettings

        return ScanSettings(
            self.max_image_pixels,
            self.labels_from_folders,
            self.workers or None,
            tuple(self.unlabeled_folders),
        )
