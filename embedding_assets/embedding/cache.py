"""LMDB cache of vectors keyed by (model key, image content hash).

An image is embedded once per model however often it moves or the asset re-runs. Each batch is
committed in its own write transaction, so a run killed at any moment loses at most the batch in
flight, and LMDB's copy-on-write pages mean a committed vector is never torn.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import lmdb
import numpy as np

INITIAL_MAP_SIZE = 1 << 30  # 1 GiB of address space; the file is sparse and grows on demand


class EmbeddingCache:
    def __init__(self, path: Path, readonly: bool = False) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.env = lmdb.open(
            str(path),
            map_size=INITIAL_MAP_SIZE,
            readonly=readonly,
            max_readers=512,
            lock=True,
            readahead=False,
        )

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def key(model_key: str, sha256: str) -> bytes:
        return f"{model_key}/{sha256}".encode()

    @staticmethod
    def norm_key(model_key: str, sha256: str) -> bytes:
        """Where a vector's norm before normalizing is kept (what a class head's logits scale
        with): beside the vectors, outside their key range."""
        return f"norm:{model_key}/{sha256}".encode()

    def missing(self, model_key: str, hashes: Iterable[str]) -> list[str]:
        """The hashes with no vector for this model key yet (order kept, duplicates dropped)."""
        out, seen = [], set()
        with self.env.begin(buffers=True) as txn:
            for h in hashes:
                if h not in seen and txn.get(self.key(model_key, h)) is None:
                    out.append(h)
                seen.add(h)
        return out

    def put_batch(
        self,
        model_key: str,
        hashes: list[str],
        vectors: np.ndarray,
        norms: np.ndarray | None = None,
    ) -> None:
        """Write one batch (and the vectors' norms before normalizing, when given) in one
        transaction, growing the map when it is full (or adopting the size another process grew
        it to)."""
        rows = [(self.key(model_key, h), v.tobytes()) for h, v in zip(hashes, vectors, strict=True)]
        if norms is not None:
            rows += [
                (self.norm_key(model_key, h), np.float32(n).tobytes())
                for h, n in zip(hashes, norms, strict=True)
            ]
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for k, v in rows:
                        txn.put(k, v)
                return
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
            except lmdb.MapResizedError:  # another process (a shard's run) grew the map
                self.env.set_mapsize(0)

    def get_matrix(self, model_key: str, hashes: list[str], dim: int, dtype: str) -> np.ndarray:
        """Vectors for `hashes` as one (n, dim) array, in order; KeyError names a missing hash."""
        out = np.empty((len(hashes), dim), dtype=dtype)
        with self.env.begin(buffers=True) as txn:
            for i, h in enumerate(hashes):
                buf = txn.get(self.key(model_key, h))
                if buf is None:
                    raise KeyError(f"no cached vector for {h} under {model_key}")
                out[i] = np.frombuffer(buf, dtype=dtype, count=dim)
        return out

    def get_norms(self, model_key: str, hashes: list[str]) -> np.ndarray:
        """The norms stored with `hashes`' vectors, NaN where none was (vectors cached before
        norms were kept)."""
        out = np.full(len(hashes), np.nan, dtype=np.float32)
        with self.env.begin(buffers=True) as txn:
            for i, h in enumerate(hashes):
                buf = txn.get(self.norm_key(model_key, h))
                if buf is not None:
                    out[i] = np.frombuffer(buf, dtype=np.float32, count=1)[0]
        return out

    def dim(self, model_key: str, sha256: str, dtype: str) -> int:
        """The vector length stored for this key, read off one cached entry."""
        with self.env.begin(buffers=True) as txn:
            buf = txn.get(self.key(model_key, sha256))
        if buf is None:
            raise KeyError(f"no cached vector for {sha256} under {model_key}")
        return len(buf) // np.dtype(dtype).itemsize

    def count(self, model_key: str) -> int:
        prefix = f"{model_key}/".encode()
        n = 0
        with self.env.begin() as txn:
            cursor = txn.cursor()
            if cursor.set_range(prefix):
                for k in cursor.iternext(values=False):
                    if not bytes(k).startswith(prefix):
                        break
                    n += 1
        return n
