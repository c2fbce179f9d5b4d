"""umap-learn's compiled functions are kept on disk by the first process that maps, and a later
process that loads them draws the same map (analytics/compiled_cache.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

MAP = """
import json
import numpy as np
from embedding_assets.analytics.projection import ProjectionParams, project
rng = np.random.default_rng(0)
x = rng.normal(size=(300, 16)).astype(np.float32)
made = project(x, "umap", ProjectionParams())
print(json.dumps(made.coords.tolist()))
"""


def _map_in_child(cache_dir) -> np.ndarray:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", MAP], env=env, capture_output=True, text=True, check=True
    )
    return np.array(json.loads(out.stdout.splitlines()[-1]))


def test_a_second_process_loads_umaps_compiled_code_and_draws_the_same_map(tmp_path):
    first = _map_in_child(tmp_path)
    kept = {p.name.split("-")[0] for p in tmp_path.rglob("*.nbi")}
    assert {"umap_.smooth_knn_dist", "umap_.compute_membership_strengths"} <= kept
    second = _map_in_child(tmp_path)
    np.testing.assert_array_equal(first, second)
