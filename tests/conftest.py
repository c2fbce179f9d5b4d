"""Shared fixtures: an isolated data directory per test and real image files to scan."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "test"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh data directory, also exported as EMB_DATA_DIR for code that reads the env."""
    root = tmp_path / "data"
    monkeypatch.setenv("EMB_DATA_DIR", str(root))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    return root


def write_image(path: Path, size=(16, 16), mode="RGB", fmt: str | None = None, seed=0) -> Path:
    """A small real image with random pixels (so each seed gives different content)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        arr = rng.integers(0, 65535, size=(size[1], size[0]), dtype=np.uint16)
        img = Image.fromarray(arr)
        assert img.mode == "I;16"
        img.save(path, format=fmt)
        return path
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    arr = rng.integers(0, 255, size=(size[1], size[0], channels), dtype=np.uint8)
    img = Image.fromarray(arr.squeeze())
    img.save(path, format=fmt)
    return path


@pytest.fixture
def labeled_folder(tmp_path: Path) -> Path:
    """Three classes of distinguishable images (dark/mid/bright), 8 each, plus unlabeled ones."""
    root = tmp_path / "images"
    for c, level in enumerate((30, 128, 220)):
        for i in range(8):
            rng = np.random.default_rng(c * 100 + i)
            arr = np.clip(rng.normal(level, 20, size=(24, 24, 3)), 0, 255).astype(np.uint8)
            path = root / f"class_{c}" / f"img_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
    for i in range(4):
        write_image(root / "unlabeled" / f"u_{i}.png", size=(24, 24), seed=1000 + i)
    return root


@pytest.fixture
def cifar_dir() -> Path:
    if not SHARED_CIFAR.is_dir():
        pytest.skip("../shared/data/cifar10/test is absent (a fresh clone has no ../shared)")
    return SHARED_CIFAR


def fs_supports_non_utf8(folder: Path) -> bool:
    try:
        p = os.path.join(os.fsencode(folder), b"probe\xff.tmp")
        open(p, "wb").close()
        os.remove(p)
        return True
    except OSError:
        return False


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the process once pytest has reported, with its exit status: a native thread pool
    (seen after the search-service tests) can abort the interpreter's own shutdown with
    "terminate called ... exception not rethrown", turning a passed run into exit code 134."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(getattr(config, "_exit_status", 0)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config._exit_status = exitstatus


@pytest.fixture
def one_thread():
    """torch on one thread for the test. Random-init ResNet-18 features of 32 px digits sit so
    close together that the threads' float rounding flips near-tied neighbours, and with them
    the head's best epoch and whether the gate promotes it: one thread makes it repeatable."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
