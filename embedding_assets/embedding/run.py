"""Embed every usable catalog image not yet cached for a model key, then hand the matrix on.

Steps: read the usable images (short read-only connection) -> find hashes missing from the LMDB
cache -> embed only those, committing each batch -> record images that fail to decode -> write
the Parquet hand-off unless it already holds exactly these images -> register the set.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from embedding_assets.catalog.images import usable_files
from embedding_assets.catalog.shards import Shard
from embedding_assets.common import tables
from embedding_assets.embedding import sets
from embedding_assets.embedding.cache import EmbeddingCache
from embedding_assets.embedding.embedder import (
    READ_ERROR,
    Batch,
    BatchSettings,
    EmbedParams,
    embed_paths,
)
from embedding_assets.embedding.run_options import RunOptions
from resources.duckdb_store import connect
from resources.paths import DataPaths

HEAD_BATCH = 4096  # cached features per head forward pass
Progress = Callable[[int, int], None]  # (files done, files to embed)


@dataclass(frozen=True)
class _Files:
    """Files to embed and their content hashes, position by position."""

    fs_paths: list[str | bytes]
    hashes: list[str]


@dataclass
class CacheFill:
    """What filling the cache for one model key found, returned for the caller to combine
    (EmbedSummary.add); `_fill_cache` builds it up as the model's batches come back."""

    from_cache: int = 0
    embedded: int = 0
    dim: int = 0  # of the vectors embedded now; 0: none were
    failed: dict[str, tuple[str, str]] = field(default_factory=dict)  # hash -> (path, error)
    embed_seconds: float = 0.0
    runtime: str = ""  # what ran the forward pass ("" when nothing needed embedding)
    retried: list[str] = field(default_factory=list)  # batches lost with a Ray worker, redone
    notes: list[str] = field(default_factory=list)  # e.g. a model that fell back to torch


@dataclass
class EmbedSummary:
    model_key: str
    dim: int = 0
    usable: int = 0
    embedded: int = 0
    from_cache: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, error)
    embed_seconds: float = 0.0
    seconds: float = 0.0
    parquet_rewritten: bool = False
    parquet_path: Path | None = None
    content: str = ""  # content_version of parquet_path ("": none written)
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float | None = None
    retried: list[str] = field(default_factory=list)  # batches lost with a Ray worker, redone
    runtime: str = ""  # what ran the forward pass ("" when nothing needed embedding)
    notes: list[str] = field(default_factory=list)  # e.g. a model that fell back to torch

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds else 0.0

    def add(self, fill: CacheFill) -> None:
        """Count what filling the cache found."""
        self.from_cache += fill.from_cache
        self.embedded += fill.embedded
        self.dim = fill.dim or self.dim
        self.failed += fill.failed.values()
        self.embed_seconds += fill.embed_seconds
        self.runtime = fill.runtime or self.runtime
        self.retried += fill.retried
        self.notes += fill.notes


def run_embeddings(
    paths: DataPaths,
    params: EmbedParams,
    options: RunOptions = RunOptions(),
    *,
    shard: Shard | None = None,
    progress: Progress | None = None,
) -> EmbedSummary:
    """Embed the usable images (of one shard) and write their hand-off; with a shard, the set is
    the folder of every shard's file, which downstream reads whole."""
    started = time.perf_counter()
    spec = params.spec()
    key = params.model_key(spec)
    summary = EmbedSummary(model_key=key)
    usable = usable_files(paths.catalog_db, shard)
    ids, fs_paths, hashes = usable.ids.tolist(), usable.fs_paths, usable.hashes
    if not ids and shard is None:
        raise ValueError(
            "No usable images in the catalog: materialize image_catalog on a folder with images "
            '(see `emb sql "select path, error from images"` for why files were rejected)'
        )
    summary.usable = len(ids)
    options = _with_exports(options, paths)
    with EmbeddingCache(paths.embeddings_lmdb) as cache:
        fill = _fill_cache(cache, params, key, _Files(fs_paths, hashes), options, progress)
        summary.add(fill)
        if fill.failed:
            _mark_failed(paths.catalog_db, summary.failed)
            keep = [i for i, h in enumerate(hashes) if h not in fill.failed]
            ids = [ids[i] for i in keep]
            hashes = [hashes[i] for i in keep]
            if not ids and shard is None:
                path, err = summary.failed[0]
                raise ValueError(
                    f"all {summary.usable} usable images failed at embedding time (the first, "
                    f"{path}: {err}); fix the cause and run again (their catalog status says "
                    "which were unreadable and which corrupt)"
                )
        target = sets.hand_off_path(paths, key, shard)
        if not ids:  # an empty shard: nothing of it in the set
            target.unlink(missing_ok=True)
        elif not _parquet_matches(target, ids, hashes):
            summary.dim = summary.dim or cache.dim(key, hashes[0], params.store_dtype)
            matrix = cache.get_matrix(key, hashes, summary.dim, params.store_dtype)
            sets.write_parquet(target, np.asarray(ids), hashes, key, matrix)
            summary.parquet_rewritten = True
    summary.parquet_path = target
    emb_set = target if shard is None else target.parent
    count, summary.dim = sets.shape(emb_set)
    content = sets.register(
        paths.catalog_db,
        sets.EmbeddingSet(key, params.model, summary.dim, count, emb_set),
        spec.weights_id,
        params.as_dict(),
    )
    if shard is None:
        summary.content = content
    elif target.exists():  # a shard's own content: its partition's data version
        summary.content = sets.content_version(target, key)
    summary.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if options.device.startswith("cuda"):  # torch is loaded: the model ran on the GPU
        import torch

        if torch.cuda.is_available():
            summary.peak_gpu_mb = torch.cuda.max_memory_allocated(options.device) / 2**20
    summary.seconds = time.perf_counter() - started
    return summary


def cached_features(
    paths: DataPaths,
    params: EmbedParams,
    fs_paths: list[str | bytes],
    hashes: list[str],
    options: RunOptions = RunOptions(),
    progress: Progress | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Vectors of these files for `params`, from the LMDB cache after embedding what is missing
    there: (matrix, positions of the files that decoded). Training and evaluation read features
    through here, so they share the cache with the `embeddings` asset."""
    key = params.model_key()
    options = _with_exports(options, paths)
    with EmbeddingCache(paths.embeddings_lmdb) as cache:
        fill = _fill_cache(cache, params, key, _Files(fs_paths, hashes), options, progress)
        keep = [i for i, h in enumerate(hashes) if h not in fill.failed]
        if not keep:
            raise ValueError(f"none of the {len(hashes)} images could be decoded for {key}")
        kept = [hashes[i] for i in keep]
        dim = fill.dim or cache.dim(key, kept[0], params.store_dtype)
        return cache.get_matrix(key, kept, dim, params.store_dtype).astype(np.float32), keep


def cached_features_and_norms(
    paths: DataPaths,
    params: EmbedParams,
    fs_paths: list[str | bytes],
    hashes: list[str],
    options: RunOptions = RunOptions(),
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """`cached_features` with each vector's norm before normalizing (what a class head needs:
    logits = norm * (vector @ W.T) + b), embedding again the images whose vectors were cached
    before norms were kept."""
    X, keep = cached_features(paths, params, fs_paths, hashes, options, progress)
    key = params.model_key()
    kept = [hashes[i] for i in keep]
    with EmbeddingCache(paths.embeddings_lmdb) as cache:
        norms = cache.get_norms(key, kept)
        lacking = np.flatnonzero(np.isnan(norms))
        if len(lacking):
            todo = [fs_paths[keep[i]] for i in lacking]
            for batch in _batches(_with_exports(options, paths), params, key, todo, CacheFill()):
                rows = [kept[lacking[i]] for i in batch.indexes]
                cache.put_batch(key, rows, batch.vectors, batch.norms)
            norms = cache.get_norms(key, kept)
    return X, norms, keep


def _with_exports(options: RunOptions, paths: DataPaths) -> RunOptions:
    """Exported models are cached in the data folder unless the caller put them elsewhere."""
    return options if options.exports else replace(options, exports=paths.exports_dir)


def _fill_cache(
    cache: EmbeddingCache,
    params: EmbedParams,
    key: str,
    files: _Files,
    options: RunOptions,
    progress: Progress | None,
) -> CacheFill:
    """Embed one file per hash missing from the cache under `key` (the model key of `params`);
    return what that found, the hashes whose file failed to decode among it."""
    missing = set(cache.missing(key, files.hashes))
    from_cache = sum(h not in missing for h in files.hashes)
    if not missing:
        return CacheFill(from_cache=from_cache)
    if params.head:
        pick = [i for i, h in enumerate(files.hashes) if h in missing]
        picked = _Files([files.fs_paths[i] for i in pick], [files.hashes[i] for i in pick])
        fill = _fill_from_base(cache, params, key, picked, options, progress)
        return replace(fill, from_cache=from_cache)
    todo: dict[str, int] = {}
    for i, h in enumerate(files.hashes):
        if h in missing and h not in todo:
            todo[h] = i
    todo_hashes = list(todo)
    todo_paths = [files.fs_paths[i] for i in todo.values()]
    fill = CacheFill(from_cache=from_cache)
    t0 = time.perf_counter()
    done = 0
    for batch in _batches(options, params, key, todo_paths, fill):
        fill.dim = batch.vectors.shape[1]
        cache.put_batch(key, [todo_hashes[i] for i in batch.indexes], batch.vectors, batch.norms)
        for i, err in batch.errors:
            fill.failed[todo_hashes[i]] = (_display(todo_paths[i]), err)
        done += len(batch.indexes) + len(batch.errors)
        fill.embedded += len(batch.indexes)
        if progress:
            progress(done, len(todo_paths))
    fill.embed_seconds = time.perf_counter() - t0
    return fill


def _batches(
    options: RunOptions, params: EmbedParams, key: str, paths: list[str | bytes], fill: CacheFill
) -> Iterator[Batch]:
    """The model's batches from this process or from actors on a Ray cluster (which decode in
    their own processes, so `workers` applies only here); how the model runs goes to `fill`."""
    from embedding_assets.embedding import runtime

    o = options
    if o.engine.kind == "ray":
        from embedding_assets.embedding.ray_engine import RayJob, embed_paths_on_ray

        wanted = runtime.resolve(o.runtime, o.device)
        exported = _exported_bytes(params, key, o, fill.notes.append) if wanted != "torch" else None
        fill.runtime = "onnxruntime" if exported else "torch"
        return embed_paths_on_ray(RayJob(params, o, exported), paths, on_retry=fill.retried.append)
    backbone, fill.runtime = runtime.on_runtime(
        lambda: params.build(allow_download=o.allow_download),
        params.spec(),
        key,
        o,
        fill.notes.append,
    )
    settings = BatchSettings(o.device, o.batch_size, o.workers, o.precision, params.store_dtype)
    return embed_paths(backbone, paths, settings)


def _exported_bytes(
    params: EmbedParams, key: str, options: RunOptions, note: Callable[[str], None]
) -> bytes | None:
    """The exported model for Ray's actors, made here once (None: they run torch)."""
    from embedding_assets.embedding import runtime

    if options.exports is None:
        return None
    backbone = params.build(allow_download=options.allow_download)
    path = runtime.try_export(backbone, key, options.exports, note)
    return path.read_bytes() if path else None


def _fill_from_base(
    cache: EmbeddingCache,
    params: EmbedParams,
    key: str,
    files: _Files,
    options: RunOptions,
    progress: Progress | None,
) -> CacheFill:
    """A trained head over the backbone: run the backbone once into the plain-feature cache
    (which training, evaluation and near-duplicates read too), then apply the head to the
    cached features. One backbone pass per content, however many heads follow."""
    from embedding_assets.embedding.heads import check_fits, embed_features, load_head

    base = replace(params, head=None, store_dtype="float32")
    base_key = base.model_key()
    fill = _fill_cache(cache, base, base_key, files, options, progress)
    t0 = time.perf_counter()
    todo = [h for h in dict.fromkeys(files.hashes) if h not in fill.failed]
    head = load_head(params.head)
    if todo:
        dim = fill.dim or cache.dim(base_key, todo[0], "float32")
        check_fits(head, params.head, params.model, dim)
    for start in range(0, len(todo), HEAD_BATCH):
        chunk = todo[start : start + HEAD_BATCH]
        x = cache.get_matrix(base_key, chunk, dim, "float32")
        y = embed_features(head, x)
        cache.put_batch(key, chunk, y.astype(params.store_dtype))
    return replace(
        fill,
        embedded=len(todo),
        dim=head.dims[2],
        embed_seconds=fill.embed_seconds + time.perf_counter() - t0,
    )


def _display(path: str | bytes) -> str:
    return path if isinstance(path, str) else path.decode("utf-8", "backslashreplace")


def _mark_failed(db: Path, failed: list[tuple[str, str]]) -> None:
    """Files that decoded at catalog time but not now (changed since, or a codec edge case)
    become `corrupt` with the error, so they are visible and left out of the math; files that
    could not even be read (gone, no access to the store) become `unreadable`, which the
    catalog's next scan reads again."""
    with connect(db) as con:
        con.executemany(
            f"UPDATE {tables.IMAGES} SET status = ?, error = ? WHERE path = ?",
            [
                ("unreadable" if err.startswith(READ_ERROR) else "corrupt", err, path)
                for path, err in failed
            ],
        )


def _parquet_matches(target: Path, ids: list[int], hashes: list[str]) -> bool:
    """True when the hand-off file already holds exactly these images with this content."""
    if not target.exists():
        return False
    table = pq.read_table(target, columns=["image_id", "sha256"])
    return (
        table.column("image_id").to_pylist() == ids and table.column("sha256").to_pylist() == hashes
    )
