"""benchmarks/gpu_check.py on a machine without a GPU: one clear line, nothing measured, exit 0,
and real results are never overwritten. CUDA_VISIBLE_DEVICES="" hides any GPU, so these tests
take the no-GPU path (and stay fast) on a GPU machine too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import gpu_check

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "benchmarks" / "results"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _snapshot() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in REAL.glob(f"{gpu_check.NAME}.*")}


def test_no_gpu_writes_placeholder_once(tmp_path: Path) -> None:
    before = _snapshot()
    out = _run("--quick", "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert gpu_check.NO_GPU in out.stdout
    assert "nothing was measured" in out.stdout
    md = (tmp_path / "gpu_check.md").read_text()
    assert "Not measured on this machine (no GPU)" in md
    assert json.loads((tmp_path / "gpu_check.json").read_text())["measured"] is False
    assert _snapshot() == before  # the repository's results are untouched


def test_no_gpu_never_overwrites_results(tmp_path: Path) -> None:
    real_md = "# GPU check\n\nNVIDIA H100: real numbers\n"
    (tmp_path / "gpu_check.md").write_text(real_md)
    (tmp_path / "gpu_check.json").write_text('{"measured": true}\n')
    out = _run("--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert gpu_check.NO_GPU in out.stdout
    assert "wrote" not in out.stdout
    assert (tmp_path / "gpu_check.md").read_text() == real_md
    assert (tmp_path / "gpu_check.json").read_text() == '{"measured": true}\n'


def test_missing_library_is_reported_not_raised() -> None:
    def needs_cuml() -> dict:
        raise ModuleNotFoundError("No module named 'cuml'", name="cuml")

    def unavailable() -> dict:
        raise gpu_check.Unavailable("CUDA Tree Learner was not enabled in this build.")

    assert gpu_check.guarded(needs_cuml) == {"status": "not installed: cuml"}
    assert gpu_check.guarded(unavailable)["status"].startswith("unavailable: CUDA Tree")
    assert gpu_check.guarded(lambda: {"seconds": 1.0}) == {"status": "ok", "seconds": 1.0}
