"""Loading the Dagster definitions (webserver, daemon, every step process) and the CLI stays
cheap: the heavy libraries load inside the functions that use them, never at import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.import_time import HEAVY  # one list: what the benchmark reports, this forbids


def loaded_after(module: str) -> set[str]:
    """Top-level packages in sys.modules after importing `module` in a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize("module", ["embedding_assets.definitions", "embedding_assets.cli.app"])
def test_import_loads_no_heavy_library(module: str):
    assert loaded_after(module) & set(HEAVY) == set()


def test_cli_does_not_load_dagster():
    assert "dagster" not in loaded_after("embedding_assets.cli.app")
