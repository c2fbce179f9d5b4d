"""Defaults read from the environment once, so the CLI, the assets and the UI agree."""

from __future__ import annotations

import os
from pathlib import Path

from resources.paths import DataPaths, default_data_dir

IMAGE_DIR_ENV = "EMB_IMAGE_DIR"
SERVE_URL_ENV = "EMB_SERVE_URL"


def default_image_dir() -> str:
    """`$EMB_IMAGE_DIR`, else the demo folder inside the data directory."""
    return os.environ.get(IMAGE_DIR_ENV) or str(DataPaths(default_data_dir()).demo_images)


def default_dagster_home() -> Path:
    """Where runs are recorded when DAGSTER_HOME is unset: inside the data directory, so the
    UI started by `emb ui` shows the runs `emb demo` made."""
    return Path(os.environ.get("DAGSTER_HOME") or DataPaths(default_data_dir()).root / "dagster")


def page_url(page: str) -> str:
    """Where `emb serve` shows a page (`$EMB_SERVE_URL`, else its default address), for links
    in the Dagster UI's asset metadata."""
    base = os.environ.get(SERVE_URL_ENV, "http://127.0.0.1:8000").rstrip("/")
    return f"{base}/{page}"
