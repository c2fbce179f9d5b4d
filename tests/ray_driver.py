"""Runs inside the test cluster's network namespace (tests/test_ray_engine.py): embeds a list of
files with `ray_engine.embed_paths_on_ray` and writes what came back for the test to compare.

    python -m tests.ray_driver FILE_LIST OUT_DIR [--die-on PATH --marker PATH]

With --die-on, the first worker that opens PATH exits at once (os._exit, as a crash or the OOM
killer would end it); the marker file makes that happen exactly once in the whole cluster.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

DIE_ON = "EMB_TEST_DIE_ON"
MARKER = "EMB_TEST_DIE_MARKER"
REPO = Path(__file__).resolve().parents[1]


def die_once() -> None:
    """Ray worker setup hook: wrap the image reader so that opening $EMB_TEST_DIE_ON kills the
    worker process, the first time only."""
    from embedding_assets.embedding import embedder

    read = embedder.open_source

    def read_or_die(path):
        if str(path) == os.environ[DIE_ON]:
            try:
                os.close(os.open(os.environ[MARKER], os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return read(path)
            os._exit(1)
        return read(path)

    embedder.open_source = read_or_die


def main() -> None:
    import ray

    from embedding_assets.embedding.embedder import EmbedParams
    from embedding_assets.embedding.ray_engine import RayJob, embed_paths_on_ray
    from embedding_assets.embedding.run import RunOptions

    parser = argparse.ArgumentParser()
    parser.add_argument("file_list", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--die-on", default="")
    parser.add_argument("--marker", default="")
    parser.add_argument("--stall-seconds", type=float, default=None)
    args = parser.parse_args()
    paths = args.file_list.read_text().splitlines()
    if args.die_on:
        hook = {
            "worker_process_setup_hook": "tests.ray_driver.die_once",
            # the workers import this module for the hook
            "env_vars": {DIE_ON: args.die_on, MARKER: args.marker, "PYTHONPATH": str(REPO)},
        }
        ray.init(logging_level="WARNING", log_to_driver=False, runtime_env=hook)
    retried: list[str] = []
    vectors: dict[int, np.ndarray] = {}
    failed: dict[int, str] = {}
    returned = 0  # indexes that came back, doubles included (the dict would hide them)
    stall = {} if args.stall_seconds is None else {"stall_seconds": args.stall_seconds}
    job = RayJob(EmbedParams(), RunOptions(batch_size=args.batch_size))
    for batch in embed_paths_on_ray(job, paths, on_retry=retried.append, **stall):
        vectors.update(zip(batch.indexes, batch.vectors, strict=True))
        failed.update(batch.errors)
        returned += len(batch.indexes) + len(batch.errors)
    args.out.mkdir(parents=True, exist_ok=True)
    order = sorted(vectors)
    np.save(args.out / "vectors.npy", np.stack([vectors[i] for i in order]))
    summary = {"indexes": order, "failed": failed, "retried": retried, "returned": returned}
    (args.out / "summary.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
