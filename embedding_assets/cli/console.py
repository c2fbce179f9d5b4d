"""What every `emb` command shares: where the data is, and failing in one red line."""

from __future__ import annotations

import shutil
import sys
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


def emb_command() -> str:
    """How to call `emb` again from here, for the next steps a command prints: `emb` when the
    shell finds this one on PATH, else its path (the venv is not activated), relative to the
    working directory where it lies below it (`.venv/bin/emb`)."""
    beside = Path(sys.executable).with_name("emb")
    found = shutil.which("emb")
    if not beside.exists() or (found and Path(found).resolve() == beside.resolve()):
        return "emb"
    try:
        return str(beside.relative_to(Path.cwd()))
    except ValueError:
        return str(beside)
