"""What many tests need and no test owns: the Dagster resources of a data folder, small real
image files, the shared CIFAR folder. Plain functions (pytest advises against importing
conftest.py); conftest.py turns some of them into fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from resources.gpu import GPUResource
from resources.storage import StorageResource

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "test"


def resources(data_dir: Path, device: str = "cpu", **storage) -> dict:
    """The `storage` and `gpu` resources every materialization of the data folder needs; the
    GPU lock files live inside it."""
    return {
        "storage": StorageResource(data_dir=str(data_dir), **storage),
        "gpu": GPUResource(device=device, lock_dir=str(Path(data_dir) / "locks")),
    }


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


def fs_supports_non_utf8(folder: Path) -> bool:
    try:
        p = os.path.join(os.fsencode(folder), b"probe\xff.tmp")
        open(p, "wb").close()
        os.remove(p)
        return True
    except OSError:
        return False


def use_s3(monkeypatch, endpoint: str, **more: str) -> None:
    """Point botocore at `endpoint` through the standard AWS environment variables (test keys;
    `more`: other variables, e.g. AWS_MAX_ATTEMPTS), with no s3fs client cached from before
    (one would keep another endpoint)."""
    import s3fs

    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        **more,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
