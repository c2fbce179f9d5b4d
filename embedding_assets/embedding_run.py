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
import torch

from embedding_assets import vectors
from embedding_assets.backbones import BackboneSpec
from embedding_assets.choices import EngineKind, Precision
from embedding_assets.embedder import READ_ERROR, Batch, EmbedParams, embed_paths
from embedding_assets.embedding_cache import EmbeddingCache
from embedding_assets.heads import check_fits, embed_features, load_head
from embedding_assets.shards import Shard
from resources.duckdb_store import connect
from resources.paths import DataPaths

HEAD_BATCH = 4096  # cached features per head forward pass


@dataclass(frozen=True)
class Engine:
    """Where the model runs: `local` (this process) or `ray` (actors on the cluster at
    `ray_address`, empty = $RAY_ADDRESS; embedding_assets.ray_engine)."""

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
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float | None = None
    retried: list[str] = field(default_factory=list)  # batches lost with a Ray worker, redone

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds else 0.0


def run_embeddings(
    paths: DataPaths,
    params: EmbedParams,
    *,
    shard: Shard | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    workers: int | None = None,
    precision: Precision = "auto",
    allow_download: bool = True,
    progress: Callable[[int, int], None] | None = None,
    engine: Engine = Engine(),
) -> EmbedSummary:
    """Embed the usable images (of one shard) and write their hand-off; with a shard, the set is
    the folder of every shard's file, which downstream reads whole."""
    started = time.perf_counter()
    spec = params.spec()
    key = params.model_key(spec)
    summary = EmbedSummary(model_key=key)
    ids, fs_paths, hashes = usable_images(paths.catalog_db, shard)
    if not ids and shard is None:
        raise ValueError(
            "No usable images in the catalog: materialize image_catalog on a folder with images "
            '(see `emb sql "select path, error from images"` for why files were rejected)'
        )
    summary.usable = len(ids)
    with EmbeddingCache(paths.embeddings_lmdb) as cache:
        options = RunOptions(device, batch_size, workers, precision, allow_download, engine)
        failed_hashes = _fill_cache(
            cache, params, spec, fs_paths, hashes, summary, options, progress
        )
        if failed_hashes:
            _mark_failed(paths.catalog_db, summary.failed)
            keep = [i for i, h in enumerate(hashes) if h not in failed_hashes]
            ids = [ids[i] for i in keep]
            hashes = [hashes[i] for i in keep]
            if not ids and shard is None:
                path, err = summary.failed[0]
                raise ValueError(
                    f"all {summary.usable} usable images failed at embedding time (the first, "
                    f"{path}: {err}); fix the cause and run again (their catalog status says "
                    "which were unreadable and which corrupt)"
                )
        target = hand_off_path(paths, key, shard)
        if not ids:  # an empty shard: nothing of it in the set
            target.unlink(missing_ok=True)
        elif not _parquet_matches(target, ids, hashes):
            summary.dim = summary.dim or cache.dim(key, hashes[0], params.store_dtype)
            matrix = cache.get_matrix(key, hashes, summary.dim, params.store_dtype)
            vectors.write_parquet(target, np.asarray(ids), hashes, key, matrix)
            summary.parquet_rewritten = True
    summary.parquet_path = target
    emb_set = target if shard is None else target.parent
    count, summary.dim = vectors.shape(emb_set)
    vectors.register(
        paths.catalog_db,
        vectors.EmbeddingSet(key, params.model, summary.dim, count, emb_set),
        spec.weights_id,
        params.as_dict(),
    )
    summary.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available() and device.startswith("cuda"):
        summary.peak_gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20
    summary.seconds = time.perf_counter() - started
    return summary


def cached_features(
    paths: DataPaths,
    params: EmbedParams,
    fs_paths: list[str | bytes],
    hashes: list[str],
    *,
    device: str = "cpu",
    batch_size: int = 64,
    workers: int | None = None,
    allow_download: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Vectors of these files for `params`, from the LMDB cache after embedding what is missing
    there: (matrix, positions of the files that decoded). Training and evaluation read features
    through here, so they share the cache with the `embeddings` asset."""
    spec = params.spec()
    key = params.model_key(spec)
    summary = EmbedSummary(model_key=key)
    with EmbeddingCache(paths.embeddings_lmdb) as cache:
        options = RunOptions(device, batch_size, workers, allow_download=allow_download)
        failed = _fill_cache(cache, params, spec, fs_paths, hashes, summary, options, progress)
        keep = [i for i, h in enumerate(hashes) if h not in failed]
        if not keep:
            raise ValueError(f"none of the {len(hashes)} images could be decoded for {key}")
        kept = [hashes[i] for i in keep]
        dim = summary.dim or cache.dim(key, kept[0], params.store_dtype)
        return cache.get_matrix(key, kept, dim, params.store_dtype).astype(np.float32), keep


def plain_params(db: Path, model_key: str) -> EmbedParams | None:
    """The plain-backbone settings behind an embedding set made with a trained head, else None
    (float32: the plain-feature cache that the embeddings' own backbone pass filled)."""
    params = vectors.stored_set_params(db, model_key)
    if not params.get("head"):
        return None
    # a fine-tuned trunk is stored relative to the data folder: resolve it like the Searcher does
    stored = vectors.loaded_params(DataPaths(db.parent), params)
    return replace(EmbedParams(**stored), head=None, store_dtype="float32")


def content_vectors(
    paths: DataPaths, model_key: str, ids: np.ndarray, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, plain-backbone vectors) behind an embedding set made with a trained head, else
    None. Near-duplicates are judged on these: a metric-learning head pulls a whole class
    together (same-class cosine near 1), which says nothing about duplicated content."""
    params = plain_params(paths.catalog_db, model_key)
    return None if params is None else _plain_vectors(paths, params, ids, device)


def _plain_vectors(
    paths: DataPaths, params: EmbedParams, ids: np.ndarray, device: str
) -> tuple[np.ndarray, np.ndarray]:
    with connect(paths.catalog_db, read_only=True) as con:
        files = {
            r[0]: (fs_path(r[1]), r[2])
            for r in con.execute(
                "SELECT image_id, coalesce(path_bytes, encode(path)), sha256 FROM usable_images"
            ).fetchall()
        }
    present = [int(i) for i in ids.tolist() if int(i) in files]
    X, keep = cached_features(
        paths,
        params,
        [files[i][0] for i in present],
        [files[i][1] for i in present],
        device=device,
    )
    return np.asarray([present[k] for k in keep], dtype=np.int64), X


def classifier_features(
    paths: DataPaths, device: str = "cpu"
) -> tuple[vectors.EmbeddingSet, str, np.ndarray, np.ndarray]:
    """(current set, feature key, image_ids, vectors) that the classifier learns from: the
    plain backbone features of the current embedding set. A head trained on the same labels
    would flatter the classifier's held-out score (the head has seen those labels) and, on
    real photos, generalized worse to unlabeled images (0.61 vs 0.66 accuracy measured with
    500 labels of CIFAR-10)."""
    emb_set, ids, X = vectors.load_current(paths.catalog_db)
    params = plain_params(paths.catalog_db, emb_set.model_key)
    if params is None:
        return emb_set, emb_set.model_key, ids, X
    plain_ids, plain = _plain_vectors(paths, params, ids, device)
    return emb_set, params.model_key(), plain_ids, plain


def hand_off_path(paths: DataPaths, model_key: str, shard: Shard | None) -> Path:
    """The Parquet file of a set, or of one shard in the set's folder (one folder per shard
    count, so a changed count never mixes with files of the old one)."""
    folder = paths.parquet_dir / "embeddings"
    if shard is None:
        return folder / f"{model_key}.parquet"
    return folder / f"{model_key}.shards-{shard.count}" / f"{shard.name}.parquet"


def usable_images(
    db: Path, shard: Shard | None = None
) -> tuple[list[int], list[str | bytes], list[str]]:
    """(image_ids, paths to open, sha256) of the usable images, of one shard when given."""
    with connect(db, read_only=True) as con:
        rows = con.execute(
            "SELECT image_id, coalesce(path_bytes, encode(path)), sha256, path "
            "FROM usable_images ORDER BY image_id"
        ).fetchall()
    if shard is not None:
        rows = [rows[i] for i in np.flatnonzero(shard.mask([r[3] for r in rows]))]
    ids = [r[0] for r in rows]
    fs_paths = [fs_path(r[1]) for r in rows]
    return ids, fs_paths, [r[2] for r in rows]


def usable_count(db: Path, shard: Shard | None = None) -> int:
    """How many usable images there are (in one shard), counted apart from any run."""
    with connect(db, read_only=True) as con:
        if shard is None:
            return con.execute("SELECT count(*) FROM usable_images").fetchone()[0]
        paths = [r[0] for r in con.execute("SELECT path FROM usable_images").fetchall()]
    return int(shard.mask(paths).sum())


def fs_path(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw  # a non-UTF-8 file name: open it by its bytes


def _fill_cache(
    cache: EmbeddingCache,
    params: EmbedParams,
    spec: BackboneSpec,
    fs_paths: list[str | bytes],
    hashes: list[str],
    summary: EmbedSummary,
    options: RunOptions,
    progress: Callable[[int, int], None] | None,
) -> set[str]:
    """Embed one file per hash missing from the cache under the model key; return the hashes
    whose file failed to decode."""
    key = summary.model_key
    missing = set(cache.missing(key, hashes))
    summary.from_cache = sum(h not in missing for h in hashes)
    if not missing:
        return set()
    if params.head:
        pick = [i for i, h in enumerate(hashes) if h in missing]
        pick_paths, pick_hashes = [fs_paths[i] for i in pick], [hashes[i] for i in pick]
        return _fill_from_base(cache, params, pick_paths, pick_hashes, summary, options, progress)
    todo: dict[str, int] = {}
    for i, h in enumerate(hashes):
        if h in missing and h not in todo:
            todo[h] = i
    todo_hashes = list(todo)
    todo_paths = [fs_paths[i] for i in todo.values()]
    failed: set[str] = set()
    t0 = time.perf_counter()
    done = 0
    for batch in _batches(options, params, todo_paths, summary):
        summary.dim = batch.vectors.shape[1]
        cache.put_batch(key, [todo_hashes[i] for i in batch.indexes], batch.vectors)
        for i, err in batch.errors:
            failed.add(todo_hashes[i])
            summary.failed.append((_display(todo_paths[i]), err))
        done += len(batch.indexes) + len(batch.errors)
        summary.embedded += len(batch.indexes)
        if progress:
            progress(done, len(todo_paths))
    summary.embed_seconds = time.perf_counter() - t0
    return failed


def _batches(
    options: RunOptions, params: EmbedParams, paths: list[str | bytes], summary: EmbedSummary
) -> Iterator[Batch]:
    """The model's batches from this process or from actors on a Ray cluster (which decode in
    their own processes, so `workers` applies only here)."""
    o = options
    if o.engine.kind == "ray":
        from embedding_assets.ray_engine import embed_paths_on_ray

        return embed_paths_on_ray(
            params,
            paths,
            address=o.engine.ray_address,
            batch_size=o.batch_size,
            device=o.device,
            precision=o.precision,
            store_dtype=params.store_dtype,
            allow_download=o.allow_download,
            on_retry=summary.retried.append,
        )
    return embed_paths(
        params.build(allow_download=o.allow_download),
        paths,
        device=o.device,
        batch_size=o.batch_size,
        workers=o.workers,
        precision=o.precision,
        store_dtype=params.store_dtype,
    )


def _fill_from_base(
    cache: EmbeddingCache,
    params: EmbedParams,
    fs_paths: list[str | bytes],
    hashes: list[str],
    summary: EmbedSummary,
    options: RunOptions,
    progress: Callable[[int, int], None] | None,
) -> set[str]:
    """A trained head over the backbone: run the backbone once into the plain-feature cache
    (which training, evaluation and near-duplicates read too), then apply the head to the
    cached features. One backbone pass per content, however many heads follow."""
    base = replace(params, head=None, store_dtype="float32")
    base_spec = base.spec()
    base_summary = EmbedSummary(model_key=base.model_key(base_spec))
    failed = _fill_cache(cache, base, base_spec, fs_paths, hashes, base_summary, options, progress)
    summary.failed += base_summary.failed
    summary.retried += base_summary.retried
    t0 = time.perf_counter()
    todo = [h for h in dict.fromkeys(hashes) if h not in failed]
    head = load_head(params.head)
    summary.dim = head.dims[2]
    if todo:
        dim = base_summary.dim or cache.dim(base_summary.model_key, todo[0], "float32")
        check_fits(head, params.head, params.model, dim)
    for start in range(0, len(todo), HEAD_BATCH):
        chunk = todo[start : start + HEAD_BATCH]
        x = cache.get_matrix(base_summary.model_key, chunk, dim, "float32")
        y = embed_features(head, x)
        cache.put_batch(summary.model_key, chunk, y.astype(params.store_dtype))
    summary.embedded = len(todo)
    summary.embed_seconds = base_summary.embed_seconds + time.perf_counter() - t0
    return failed


def _display(path: str | bytes) -> str:
    return path if isinstance(path, str) else path.decode("utf-8", "backslashreplace")


def _mark_failed(db: Path, failed: list[tuple[str, str]]) -> None:
    """Files that decoded at catalog time but not now (changed since, or a codec edge case)
    become `corrupt` with the error, so they are visible and left out of the math; files that
    could not even be read (gone, no access to the store) become `unreadable`, which the
    catalog's next scan reads again."""
    with connect(db) as con:
        con.executemany(
            "UPDATE images SET status = ?, error = ? WHERE path = ?",
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
