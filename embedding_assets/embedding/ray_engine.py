"""The `embeddings` model run on a Ray cluster: the same stream of `embedder.Batch` objects as
`embedder.embed_paths`, so the step writes the LMDB cache and the Parquet hand-off as it does
when the model runs in its own process.

What runs where: the step sends file paths (a shared folder or object-storage URLs, read by
`catalog.images` on the worker), one batch per call, to actors that each hold the model
(one per GPU, or one per CPU slot when the device is the CPU); the vectors come back to the
step as numpy arrays.

Plain Ray core (actors and a `ray.wait` loop) rather than Ray Data's `map_batches` with an actor
pool: the step keeps one batch in flight per actor and knows which batch each call carries, so
a worker that dies costs exactly that batch, which the step resubmits and counts. Ray Data
would retry inside its own executor (no count for the run's metadata) and bring a streaming
executor, block splitting and a second scheduler for what is a queue of path lists.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from embedding_assets.embedding.embedder import Batch, BatchSettings, EmbedParams

if TYPE_CHECKING:
    from embedding_assets.embedding.run_options import RunOptions

MAX_ATTEMPTS = 3  # a batch that kills its worker this often is not a chance failure
# No batch back for this long: the cluster has no room for a replacement actor (a lost node) or
# a worker hangs (a stuck mount). Far above one batch: model start plus 64 images of a large
# model on one CPU take well under a minute.
STALL_SECONDS = 600.0


def resolve_address(address: str) -> str:
    """The cluster to use: the config's `ray_address`, else `$RAY_ADDRESS`."""
    resolved = address or os.environ.get("RAY_ADDRESS", "")
    if not resolved:
        raise ValueError(
            "engine 'ray' needs a cluster: set ray_address in the embeddings config or the "
            "RAY_ADDRESS environment variable (e.g. 10.0.0.5:6379, or 'auto' on a cluster node)"
        )
    return resolved


@dataclass(frozen=True)
class RayJob:
    """One run's model on the cluster, made once by the step: what every actor builds
    (`params`; `exported`, the model as ONNX from embedding.runtime, which the actors run on
    ONNX Runtime instead of torch) and how (`options`: the device, batch size, precision,
    downloads and, in its engine, the cluster's address)."""

    params: EmbedParams
    options: RunOptions
    exported: bytes | None = None


class EmbedActor:
    """Holds the model on one worker; built once, then embeds one batch of paths per call."""

    def __init__(
        self,
        params: EmbedParams,
        allow_download: bool,
        settings: BatchSettings,
        exported: bytes | None = None,
    ) -> None:
        import torch

        from embedding_assets.embedding.runtime import OnnxModule

        if settings.device == "cpu":
            torch.set_num_threads(1)  # one CPU slot per actor: more threads would oversubscribe
        self.backbone = params.build(allow_download=allow_download)
        if exported is not None:  # the driver's export: the same graph on every worker
            self.backbone.model = OnnxModule(exported, threads=1)
        self.settings = settings

    def embed(self, paths: Sequence[str | bytes]) -> Batch:
        from embedding_assets.embedding.embedder import embed_paths

        (batch,) = embed_paths(self.backbone, paths, replace(self.settings, batch_size=len(paths)))
        return batch


def embed_paths_on_ray(
    job: RayJob,
    paths: Sequence[str | bytes],
    *,
    on_retry: Callable[[str], None] | None = None,
    stall_seconds: float = STALL_SECONDS,
) -> Iterator[Batch]:
    """Yield one Batch per `job.options.batch_size` paths (indexes are positions in `paths`),
    in the order they finish. A batch lost with its worker is resubmitted (to a new actor in its
    place) and reported to `on_retry`; after MAX_ATTEMPTS losses of one batch the run stops."""
    import ray

    address = resolve_address(job.options.engine.ray_address)
    batch_size = job.options.batch_size
    chunks = [range(s, min(s + batch_size, len(paths))) for s in range(0, len(paths), batch_size)]
    owns_connection = not ray.is_initialized()
    if owns_connection:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    actors: list = []
    try:
        shared = ray.put(job.exported) if job.exported is not None else None
        count, new_actor = _actor_factory(ray, job, shared)
        actors = [new_actor() for _ in range(min(count, len(chunks)))]
        todo = deque((n, 1) for n in range(len(chunks)))  # (chunk number, attempt)
        running: dict = {}  # ObjectRef -> (actor, chunk number, attempt)
        idle = list(actors)
        while todo or running:
            while todo and idle:
                n, attempt = todo.popleft()
                actor = idle.pop()
                call = actor.embed.remote([paths[i] for i in chunks[n]])
                running[call] = (actor, n, attempt)
            done, _ = ray.wait(list(running), num_returns=1, timeout=stall_seconds)
            if not done:
                raise TimeoutError(
                    f"no batch came back from the Ray cluster in {stall_seconds:g} s "
                    f"({len(running)} in flight on {len(actors)} actors): a lost node may have "
                    "left no room for a replacement actor, or a worker hangs; see `ray status`"
                )
            (ready,) = done
            actor, n, attempt = running.pop(ready)
            try:
                batch = ray.get(ready)
            except ray.exceptions.RayError as exc:
                if isinstance(exc, ray.exceptions.RayTaskError) or getattr(
                    exc, "actor_init_failed", False
                ):  # an exception raised by the model code: it would repeat on any worker
                    raise RuntimeError(f"embedding on Ray failed: {_last_line(exc)}") from exc
                todo.append((n, _next_attempt(n, attempt, chunks[n], paths, exc)))
                if on_retry:
                    on_retry(_lost(n, chunks[n], paths, attempt, exc))
                # a fresh actor in place of the dead one; its calls wait until the model is built
                ray.kill(actor)
                actors.remove(actor)
                actor = new_actor()
                actors.append(actor)
            else:
                start = chunks[n].start
                yield Batch(
                    [start + i for i in batch.indexes],
                    batch.vectors,
                    [(start + i, err) for i, err in batch.errors],
                    batch.norms,
                )
            idle.append(actor)
    finally:
        for actor in actors:
            ray.kill(actor)
        if owns_connection:
            ray.shutdown()


def _actor_factory(ray, job: RayJob, exported) -> tuple[int, Callable[[], Any]]:
    """(how many actors fit: one per GPU for device cuda, one per CPU slot for device cpu; a
    function that starts one). Not restarted by Ray: an actor restarting refuses calls, while
    a new one queues them, so the step replaces a dead actor itself. `exported`: the job's
    export in Ray's object store, shared by the actors rather than copied to each."""
    device = job.options.device
    resource = "CPU" if device == "cpu" else "GPU"
    slots = int(ray.cluster_resources().get(resource, 0))
    if slots == 0:
        raise ValueError(
            f"the Ray cluster has no {resource} for device {device!r}: add {resource} nodes or "
            "choose the other device in the gpu resource"
        )
    remote = ray.remote(EmbedActor).options(
        num_cpus=1 if device == "cpu" else 0,
        num_gpus=0 if device == "cpu" else 1,
        max_restarts=0,
        max_task_retries=0,
    )
    settings = BatchSettings(
        # a worker's GPU is its only visible one: "cuda", not the step's cuda:N
        device="cpu" if device == "cpu" else "cuda",
        # the actor decodes in its own process; parallelism is the number of actors
        workers=0,
        precision=job.options.precision,
        store_dtype=job.params.store_dtype,
    )
    args = (job.params, job.options.allow_download, settings, exported)
    return slots, lambda: remote.remote(*args)


def _next_attempt(n: int, attempt: int, chunk: range, paths, exc: Exception) -> int:
    if attempt >= MAX_ATTEMPTS:
        raise RuntimeError(
            f"{_lost(n, chunk, paths, attempt, exc)}, the last of {MAX_ATTEMPTS}: look for a file "
            "there that crashes the decoder, or for workers killed for memory (`ray logs`)"
        ) from exc
    return attempt + 1


def _lost(n: int, chunk: range, paths, attempt: int, exc: Exception) -> str:
    reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    return (
        f"batch {n} ({len(chunk)} images from {paths[chunk.start]!r}) lost with its Ray worker "
        f"on attempt {attempt}: {reason}"
    )


def _last_line(exc: Exception) -> str:
    """The raised exception's own `Type: message` line, the last of Ray's wrapped traceback."""
    return (str(exc).strip() or type(exc).__name__).splitlines()[-1].strip()
