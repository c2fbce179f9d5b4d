"""Embedding sets: the hand-off between `embeddings` and every asset downstream of it.

An embedding set is one Parquet file per model key (image_id, sha256, model_key, vector as a
fixed-size list of float32), or a folder of such files, one per shard (`$EMB_SHARDS`),
registered in the DuckDB table `embedding_sets`; readers take either. The most recently
updated set is the current one. Downstream code calls `load_current` and gets NumPy arrays.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedding_assets.common import tables
from embedding_assets.common.clock import utc_now
from resources.duckdb_store import connect
from resources.paths import DataPaths

if TYPE_CHECKING:
    from embedding_assets.catalog.shards import Shard


@dataclass(frozen=True)
class EmbeddingSet:
    model_key: str
    model: str
    dim: int
    count: int
    parquet_path: Path
    content: str | None = None  # content_version, as registered (None: not known yet)

    def content_version(self) -> str:
        """What the vectors are (`content_version`): as registered, else from the Parquet."""
        return self.content or content_version(self.parquet_path, self.model_key)


def hand_off_path(paths: DataPaths, model_key: str, shard: Shard | None) -> Path:
    """The Parquet file of a set, or of one shard in the set's folder (one folder per shard
    count, so a changed count never mixes with files of the old one)."""
    folder = paths.parquet_dir / "embeddings"
    if shard is None:
        return folder / f"{model_key}.parquet"
    return folder / f"{model_key}.shards-{shard.count}" / f"{shard.name}.parquet"


def write_parquet(
    path: Path, image_ids: np.ndarray, sha256: list[str], model_key: str, vectors: np.ndarray
) -> Path:
    """Write vectors (n, d) as a fixed-size-list column, atomically (temp file + rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, d = vectors.shape
    flat = pa.array(np.ascontiguousarray(vectors).reshape(-1))
    table = pa.table(
        {
            "image_id": pa.array(np.asarray(image_ids, dtype=np.int64)),
            "sha256": pa.array(sha256, pa.string()),
            "model_key": pa.array([model_key] * n, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, d),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # hidden: a reader of the folder skips it
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def shape(path: Path) -> tuple[int, int]:
    """(rows, dim) of a set's file or folder, from the Parquet footers; (0, 0) when empty."""
    import pyarrow.parquet as pq

    files = sorted(path.glob("[!._]*.parquet")) if path.is_dir() else [path]
    rows = dim = 0
    for f in files:
        meta = pq.ParquetFile(f)
        rows += meta.metadata.num_rows
        dim = meta.schema_arrow.field("vector").type.list_size
    return rows, dim


def read_parquet(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(image_ids int64 (n,), vectors float32 (n, d)); the matrix is a view of Arrow's buffer
    when the file has one row group, so it is copied at most once."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["image_id", "vector"])
    ids = table.column("image_id").to_numpy()
    col = table.column("vector").combine_chunks()
    d = col.type.list_size
    values = col.values.to_numpy(zero_copy_only=False)
    return ids, values.reshape(-1, d).astype(np.float32, copy=False)


def read_ids(path: Path) -> np.ndarray:
    """The image ids of a hand-off (file or shard folder), without its vectors."""
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["image_id"]).column("image_id").to_numpy()


def register(db_path: Path, emb_set: EmbeddingSet, weights: str | None, params: dict) -> str:
    """Record the set with its content version, which it returns. Files under the data
    directory are stored relative to it (see `stored_params`)."""
    root = DataPaths(Path(db_path).parent)
    content = content_version(emb_set.parquet_path, emb_set.model_key)
    with connect(db_path) as con:
        con.execute(
            f"INSERT OR REPLACE INTO {tables.EMBEDDING_SETS} (model_key, model, weights, dim, "
            "count, parquet_path, params, updated_at, content_version) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                emb_set.model_key,
                emb_set.model,
                stored_params(root, {"weights": weights})["weights"],
                emb_set.dim,
                emb_set.count,
                root.relative(emb_set.parquet_path),
                json.dumps(stored_params(root, params)),
                utc_now(),
                content,
            ],
        )
    return content


def content_version(parquet_path: Path, model_key: str) -> str:
    """What the vectors are, without reading them: the model key (which fixes the vector of each
    image content) and the set of (image_id, sha256) in the hand-off. Independent of file times,
    so re-writing the same set keeps it; the `embeddings` data version and the start of every
    downstream fingerprint."""
    import pyarrow.parquet as pq

    table = pq.read_table(parquet_path, columns=["image_id", "sha256"])
    ids = table.column("image_id").to_numpy()
    order = np.argsort(ids, kind="stable")
    hashes = table.column("sha256").to_pylist()
    digest = hashlib.sha256(model_key.encode())
    digest.update(ids[order].astype("<i8").tobytes())
    digest.update("\n".join(hashes[i] for i in order).encode())
    return digest.hexdigest()[:16]


def current_set(db_path: Path) -> EmbeddingSet:
    """The most recently written embedding set; a clear error when there is none yet."""
    with connect(db_path, read_only=True) as con:
        row = con.execute(
            "SELECT model_key, model, dim, count, parquet_path, content_version "
            f"FROM {tables.EMBEDDING_SETS} WHERE model_key = {tables.CURRENT_MODEL_KEY}"
        ).fetchone()
    if row is None:
        raise LookupError("No embeddings yet: materialize the `embeddings` asset first.")
    path = DataPaths(Path(db_path).parent).resolve(row[4])
    return EmbeddingSet(row[0], row[1], row[2], row[3], path, row[5])


def stored_set_params(db_path: Path, model_key: str) -> dict:
    """The parameters an embedding set was made with, as the catalog stores them (files of
    ours relative to the data directory: see `loaded_params`); {} for an unknown set."""
    with connect(db_path, read_only=True) as con:
        row = con.execute(
            f"SELECT params FROM {tables.EMBEDDING_SETS} WHERE model_key = ?", [model_key]
        ).fetchone()
    return json.loads(row[0]) if row and row[0] else {}


_PARAM_FILES = ("head", "weights")  # EmbedParams fields that may name a file of ours


def stored_params(root: DataPaths, params: dict) -> dict:
    """`params` with a trained head / fine-tuned trunk under the data directory made relative."""
    out = dict(params)
    for k in _PARAM_FILES:
        v = out.get(k)
        if isinstance(v, str) and Path(v).is_absolute():
            out[k] = root.relative(v)
    return out


def loaded_params(root: DataPaths, params: dict) -> dict:
    """The inverse of `stored_params`: relative head / trunk resolved against `root`."""
    out = dict(params)
    for k in _PARAM_FILES:
        v = out.get(k)
        if isinstance(v, str) and not Path(v).is_absolute() and (root.root / v).is_file():
            out[k] = str(root.resolve(v))
    return out


def load_current(db_path: Path) -> tuple[EmbeddingSet, np.ndarray, np.ndarray]:
    """(set, image_ids, vectors) of the current embedding set."""
    emb_set = current_set(db_path)
    ids, vectors = read_parquet(emb_set.parquet_path)
    return emb_set, ids, vectors


@dataclass(frozen=True)
class VectorStats:
    rows: int
    dim: int
    nonfinite_rows: int
    min_norm: float
    max_norm: float


def stats(path: Path) -> VectorStats:
    """Row count, dimension, non-finite rows and norm range, one row group at a time so a
    million-row file is checked in bounded memory."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    dim = pf.schema_arrow.field("vector").type.list_size
    rows = bad = 0
    lo, hi = np.inf, -np.inf
    for batch in pf.iter_batches(columns=["vector"], batch_size=65536):
        m = batch.column(0).values.to_numpy(zero_copy_only=False).reshape(-1, dim)
        m = m.astype(np.float32, copy=False)
        finite = np.isfinite(m).all(axis=1)
        bad += int((~finite).sum())
        if finite.any():
            norms = np.linalg.norm(m[finite], axis=1)
            lo, hi = min(lo, float(norms.min())), max(hi, float(norms.max()))
        rows += len(m)
    return VectorStats(rows, dim, bad, lo, hi)
