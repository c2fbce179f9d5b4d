"""How the model runs (device, batch size, engine, runtime...): one record passed whole through
the embedding steps, in a module of its own so that the engines it names can refer to it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from embedding_assets.common.choices import EngineKind, Precision, Runtime
from embedding_assets.embedding.embedder import default_workers


@dataclass(frozen=True)
class Engine:
    """Where the model runs: `local` (this process) or `ray` (actors on the cluster at
    `ray_address`, empty = $RAY_ADDRESS; embedding.ray_engine)."""

    kind: EngineKind = "local"
    ray_address: str = ""


@dataclass(frozen=True)
class RunOptions:
    """How the model runs, passed whole through the cache-filling steps."""

    device: str = "cpu"
    batch_size: int = 64
    workers: int | None = None  # DataLoader decode workers (local engine only)
    precision: Precision = "auto"
    allow_download: bool = True
    engine: Engine = Engine()
    runtime: Runtime = "auto"  # the forward pass: torch, or ONNX Runtime (embedding.runtime)
    threads: int = 0  # of the forward pass on the CPU; 0: automatic
    exports: Path | None = None  # where exported models are cached (the data folder's)

    def forward_threads(self) -> int:
        workers = default_workers() if self.workers is None else self.workers
        return self.threads or default_threads(workers)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(workers: int) -> int:
    """Threads of the forward pass beside `workers` decoding processes: every core. Decoding
    a batch costs a fraction of its forward pass, and measured on 2 cores the forward with both
    threads next to one decoding worker beat one thread (benchmarks/embed_throughput.py)."""
    del workers  # the measurement found no gain in leaving cores to the decoders
    return cpu_count()
