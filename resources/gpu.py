"""Where compute runs: `auto`, `cpu`, `cuda` or `cuda:N`, handed to each library in its own form.

The choice is a plain function (`choose_device`) so it can be tested without a GPU; the
resource adds what needs the machine: probing CUDA, a per-GPU lock so two Dagster steps do not
land on one GPU by accident, and an optional memory cap.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field, field_validator

from resources.paths import DataPaths, default_data_dir

GPU_POOL = "gpu"  # Dagster concurrency pool of every asset that may use a GPU
_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceChoice:
    """The device a step runs on, in the form each library wants it."""

    kind: str  # "cpu" or "cuda"
    index: int | None
    reason: str

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    @property
    def torch_device(self) -> str:
        return f"cuda:{self.index}" if self.is_cuda else "cpu"

    @property
    def faiss_gpu_id(self) -> int | None:
        return self.index if self.is_cuda else None

    @property
    def lightgbm_device(self) -> str:
        return "gpu" if self.is_cuda else "cpu"

    @property
    def cuml_available(self) -> bool:
        return self.is_cuda and importlib.util.find_spec("cuml") is not None

    def describe(self) -> str:
        return f"{self.torch_device} ({self.reason})"


def choose_device(
    spec: str, gpu_count: int, free_bytes: Callable[[int], int] | None = None
) -> DeviceChoice:
    """Resolve a device spec against what the machine has.

    `auto` picks the visible GPU with the most free memory, else the CPU. An explicit `cuda`
    request on a machine without CUDA falls back to the CPU rather than failing a long run;
    the reason says so and is logged once.
    """
    if not _SPEC.match(spec):
        raise ValueError(f"device={spec!r} is not one of auto, cpu, cuda, cuda:N")
    if spec == "cpu":
        return DeviceChoice("cpu", None, "requested")
    if gpu_count == 0:
        reason = "no CUDA device visible" + ("" if spec == "auto" else f"; asked for {spec}")
        return DeviceChoice("cpu", None, f"fallback: {reason}")
    if spec.startswith("cuda:"):
        index = int(spec.split(":")[1])
        if index >= gpu_count:
            return DeviceChoice(
                "cpu", None, f"fallback: {spec} requested but only {gpu_count} GPU(s) visible"
            )
        return DeviceChoice("cuda", index, "requested")
    ranked = rank_gpus(gpu_count, free_bytes)
    return DeviceChoice("cuda", ranked[0], "most free memory" if len(ranked) > 1 else "only GPU")


def rank_gpus(gpu_count: int, free_bytes: Callable[[int], int] | None) -> list[int]:
    """GPU indexes, most free memory first (ties keep index order)."""
    if free_bytes is None:
        return list(range(gpu_count))
    return sorted(range(gpu_count), key=lambda i: -free_bytes(i))


def nvidia_driver_present() -> bool:
    """Whether this machine could have a CUDA GPU at all, asked without torch (importing it
    costs seconds that a run with nothing to compute would spend only on this question): the
    NVIDIA kernel driver's files on Linux, WSL's GPU device; elsewhere torch is asked."""
    if sys.platform != "linux":
        return sys.platform != "darwin"  # macOS has no CUDA; on Windows let torch answer
    return (
        Path("/proc/driver/nvidia").exists()
        or Path("/dev/dxg").exists()
        or any(Path("/dev").glob("nvidia[0-9]*"))
    )


def _cuda_probe() -> tuple[int, Callable[[int], int] | None]:
    if not nvidia_driver_present():
        return 0, None
    try:
        import torch
    except ImportError:  # torch is a dependency, but the resource should still say "cpu"
        return 0, None
    if not torch.cuda.is_available():
        return 0, None
    return torch.cuda.device_count(), lambda i: torch.cuda.mem_get_info(i)[0]


@contextmanager
def gpu_lock(lock_dir: Path, index: int, blocking: bool) -> Iterator[bool]:
    """An exclusive cross-process lock on one GPU; yields whether it was acquired."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"gpu-{index}.lock", "w") as fh:
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fh, flags)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class GPUResource(dg.ConfigurableResource):
    """Decides where a step's compute runs and keeps concurrent steps off the same GPU."""

    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    memory_fraction: float | None = Field(
        default=None, description="Cap this process's share of the GPU's memory (0-1]."
    )
    lock_dir: str = Field(
        default_factory=lambda: str(DataPaths(default_data_dir()).locks_dir),
        description="Folder for the per-GPU lock files shared by all processes.",
    )

    @field_validator("device")
    @classmethod
    def _valid_device(cls, value: str) -> str:
        if not _SPEC.match(value):
            raise ValueError(f"device={value!r} is not one of auto, cpu, cuda, cuda:N")
        return value

    def choose(self) -> DeviceChoice:
        count, free = _cuda_probe()
        choice = choose_device(self.device, count, free)
        if choice.reason.startswith("fallback"):
            log.warning("GPU resource: running on the CPU (%s)", choice.reason)
        return choice

    @contextmanager
    def acquire(self, logger: logging.Logger | None = None) -> Iterator[DeviceChoice]:
        """Choose a device and hold its lock for the duration of the block.

        With `auto` and several GPUs, a GPU whose lock is free is preferred over a busier one;
        only when all are taken does the step wait for the one with the most free memory.
        """
        logger = logger or log
        count, free = _cuda_probe()
        choice = choose_device(self.device, count, free)
        if not choice.is_cuda:
            logger.info(f"Compute device: {choice.describe()}")
            yield choice
            return
        candidates: Sequence[int] = (
            rank_gpus(count, free) if self.device in ("auto", "cuda") else [choice.index]
        )
        lock_dir = Path(self.lock_dir)
        for index in candidates:
            with gpu_lock(lock_dir, index, blocking=False) as got:
                if got:
                    yield self._activate(DeviceChoice("cuda", index, choice.reason), logger)
                    return
        with gpu_lock(lock_dir, candidates[0], blocking=True):
            yield self._activate(DeviceChoice("cuda", candidates[0], "waited for lock"), logger)

    def _activate(self, choice: DeviceChoice, logger: logging.Logger) -> DeviceChoice:
        import torch

        if self.memory_fraction is not None:
            torch.cuda.set_per_process_memory_fraction(self.memory_fraction, choice.index)
        logger.info(f"Compute device: {choice.describe()}")
        return choice
