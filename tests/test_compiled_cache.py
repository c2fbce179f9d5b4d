"""umap-learn's compiled functions are kept on disk by the first process that maps, and a later
process that loads them draws the same map; a process that only places new rows on a stored
map keeps its code too (analytics/compiled_cache.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

MAP = """
import json, pickle, sys
import numpy as np
from embedding_assets.analytics.projection import ProjectionParams, project
rng = np.random.default_rng(0)
x = rng.normal(size=(300, 16)).astype(np.float32)
made = project(x, "umap", ProjectionParams())
with open(sys.argv[1], "wb") as f:
    pickle.dump(made.placer, f)
print(json.dumps(made.coords.tolist()))
"""
PLACE = """
import pickle, sys
import numpy as np
with open(sys.argv[1], "rb") as f:
    placer = pickle.load(f)
print(placer.place(np.random.default_rng(1).normal(size=(5, 16)).astype(np.float32)).shape)
"""


def _child(script: str, cache_dir: Path, placer: Path) -> str:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", script, str(placer)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()[-1]


def _kept(cache_dir: Path) -> set[str]:
    return {p.name.split("-")[0] for p in cache_dir.rglob("*.nbi")}


def test_a_second_process_loads_umaps_compiled_code_and_draws_the_same_map(tmp_path):
    cache, placer = tmp_path / "cache", tmp_path / "placer.pkl"
    first = np.array(json.loads(_child(MAP, cache, placer)))
    assert {"umap_.smooth_knn_dist", "umap_.compute_membership_strengths"} <= _kept(cache)
    second = np.array(json.loads(_child(MAP, cache, placer)))
    np.testing.assert_array_equal(first, second)
    placing_only = tmp_path / "placing-cache"  # a later run that only places new images
    assert _child(PLACE, placing_only, placer) == "(5, 2)"
    assert {"umap_.smooth_knn_dist", "umap_.compute_membership_strengths"} <= _kept(placing_only)
