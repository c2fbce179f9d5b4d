"""How the model runs (device, batch size, engine, runtime...): one record passed whole through
the embedding steps, in a module of its own so that the engines it names can refer to it."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from embedding_assets.common.choices import EngineKind, Precision, Runtime
from embedding_assets.embedding.embedder import default_workers

# An export of Lite0 took 7 s (13 s in a fresh process, which imports the exporter first), and
# ONNX Runtime then embeds 173 images/s at 224 px against torch's 41 (benchmarks/results/
# embed_throughput.md): an export pays for itself from about 400-700 images at 224 px.
EXPORT_PAYS_AT = 600  # images at 224 x 224; fewer pixels per image need proportionally more


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


def worth_exporting(n_images: int, crop: int) -> bool:
    """Does exporting a model pay for itself over `n_images` images of `crop` px? For a model
    that embeds only a few images once (a fine-tune's half-training), torch is faster."""
    return n_images * (crop / 224) ** 2 >= EXPORT_PAYS_AT


def once(options: RunOptions, n_images: int, crop: int) -> RunOptions:
    """`options` for a model that embeds only these images, once (a fine-tune's half-training,
    the model a classifier is judged on): torch under `auto` where they do not pay for an
    export."""
    if options.runtime == "auto" and not worth_exporting(n_images, crop):
        return replace(options, runtime="torch")
    return options
