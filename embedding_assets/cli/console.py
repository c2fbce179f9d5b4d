"""What every `emb` command shares: where the data is, and failing in one red line."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from resources.paths import DataPaths, default_data_dir


def paths() -> DataPaths:
    return DataPaths(default_data_dir())


def catalog_db() -> Path:
    return paths().catalog_db


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `message` in red on stderr and exit with `code` (2: bad input or state)."""
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)
