"""Device selection, CPU fallback and the per-GPU lock, testable without a GPU."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from resources.gpu import GPUResource, choose_device, gpu_lock


def test_cpu_when_asked_or_when_no_gpu():
    assert choose_device("cpu", gpu_count=2).torch_device == "cpu"
    auto = choose_device("auto", gpu_count=0)
    assert auto.torch_device == "cpu" and auto.reason.startswith("fallback")
    fallback = choose_device("cuda:1", gpu_count=0)
    assert fallback.torch_device == "cpu" and "cuda:1" in fallback.reason
    assert fallback.faiss_gpu_id is None and fallback.lightgbm_device == "cpu"
    assert not fallback.cuml_available


def test_auto_picks_the_gpu_with_most_free_memory():
    free = {0: 10, 1: 70, 2: 40}
    choice = choose_device("auto", gpu_count=3, free_bytes=free.__getitem__)
    assert (choice.torch_device, choice.faiss_gpu_id, choice.lightgbm_device) == (
        "cuda:1",
        1,
        "gpu",
    )


def test_explicit_index_and_out_of_range():
    assert choose_device("cuda:1", gpu_count=2).torch_device == "cuda:1"
    assert choose_device("cuda:3", gpu_count=2).torch_device == "cpu"


def test_bad_spec_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N"):
        choose_device("gpu0", gpu_count=1)
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N"):
        GPUResource(device="tpu")


def test_resource_on_this_machine_reports_its_device(tmp_path: Path):
    import torch

    with GPUResource(device="auto", lock_dir=str(tmp_path)).acquire() as choice:
        expected = "cuda" if torch.cuda.is_available() else "cpu"
        assert choice.kind == expected


def _try_lock(lock_dir: str, queue) -> None:
    with gpu_lock(Path(lock_dir), 0, blocking=False) as got:
        queue.put(got)


def test_gpu_lock_excludes_another_process(tmp_path: Path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with gpu_lock(tmp_path, 0, blocking=False) as got:
        assert got
        p = ctx.Process(target=_try_lock, args=(str(tmp_path), queue))
        p.start()
        p.join(60)
        assert queue.get(timeout=5) is False
    p = ctx.Process(target=_try_lock, args=(str(tmp_path), queue))
    p.start()
    p.join(60)
    assert queue.get(timeout=5) is True
