"""Find similar images: versioned FAISS index files, their catalog rows, and queries over them.

An index is written to `indexes/<model_key>/<version>.faiss` and registered in `faiss_indexes`
unpublished; the `published_index` asset publishes it once its recall check passed. Search opens
the newest published index of a model key and answers queries given as an image id, a
catalog path, an image file (embedded on the fly with the set's own model and preprocessing),
an in-memory image, or a vector.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import faiss
import numpy as np
from PIL import Image

from embedding_assets import fingerprints, similarity, vectors
from resources.duckdb_store import connect
from resources.paths import DataPaths

ASSET = "similarity_index"  # the asset whose builds these are (its row in asset_fingerprints)


class QueryError(ValueError):
    """The query itself is bad (undecodable image, no embedding, wrong model key): a 4xx."""


class UnknownImageError(QueryError):
    """The query names an image id the catalog does not have: a 404."""


@dataclass(frozen=True)
class IndexRecord:
    model_key: str
    version: str
    path: Path
    index_type: str
    vectors: int
    dim: int
    search_params: dict
    recall_at_5: float | None
    published: bool


@dataclass(frozen=True)
class Hit:
    rank: int
    image_id: int
    path: str | None
    similarity: float
    label: str | None
    cluster: int | None

    def as_dict(self) -> dict:
        return asdict(self)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_version() -> str:
    """Sortable and unique per build: UTC time to the microsecond."""
    return _now().strftime("%Y%m%dT%H%M%S%f")


def index_path(indexes_dir: Path, model_key: str, version: str) -> Path:
    return Path(indexes_dir) / model_key / f"{version}.faiss"


def save_index(index: faiss.Index, path: Path) -> int:
    """Write atomically (temp file + rename) so a reader never opens half a file; returns bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".faiss.tmp")
    faiss.write_index(index, str(tmp))
    tmp.replace(path)
    return path.stat().st_size


def register_index(
    db_path: Path,
    record: IndexRecord,
    *,
    nbytes: int,
    build_seconds: float,
    fingerprint: str,
) -> None:
    """Insert the build unpublished, as the current build of its model key, with the
    `fingerprint` of the inputs it was built from."""
    with connect(db_path) as con:
        con.begin()
        con.execute(
            "INSERT INTO faiss_indexes (model_key, version, path, index_type, vectors, dim, bytes,"
            " search_params, build_seconds, recall_at_5, published, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, false, ?)",
            [
                record.model_key,
                record.version,
                DataPaths(Path(db_path).parent).relative(record.path),
                record.index_type,
                record.vectors,
                record.dim,
                nbytes,
                json.dumps(record.search_params),
                build_seconds,
                record.recall_at_5,
                _now(),
            ],
        )
        fingerprints.record(con, ASSET, fingerprint, scope=record.model_key, result=record.version)
        con.commit()


def publish(db_path: Path, model_key: str, version: str, check_recall: float) -> None:
    """Mark a version as the one search uses (the newest published version wins)."""
    with connect(db_path) as con:
        con.execute(
            "UPDATE faiss_indexes SET published = true, published_at = ?, check_recall_at_5 = ?"
            " WHERE model_key = ? AND version = ?",
            [_now(), check_recall, model_key, version],
        )


_RECORD_COLUMNS = (
    "model_key, version, path, index_type, vectors, dim, search_params, recall_at_5, published"
)


def _record(row: tuple, db_path: Path) -> IndexRecord:
    path = DataPaths(Path(db_path).parent).resolve(row[2])
    return IndexRecord(
        row[0], row[1], path, row[3], row[4], row[5], json.loads(row[6] or "{}"), row[7], row[8]
    )  # fmt: skip


def latest_index(db_path: Path, model_key: str, *, published_only: bool) -> IndexRecord | None:
    """The newest build (or newest published build) of a model key."""
    where = " AND published" if published_only else ""
    with connect(db_path, read_only=True) as con:
        row = con.execute(
            f"SELECT {_RECORD_COLUMNS} FROM faiss_indexes WHERE model_key = ?{where}"
            " ORDER BY version DESC LIMIT 1",
            [model_key],
        ).fetchone()
    return _record(row, db_path) if row else None


def current_build(db_path: Path, model_key: str) -> IndexRecord | None:
    """The build that `similarity_index` last materialized for a model key (built or reused):
    what its recall check checks and `published_index` publishes."""
    found = fingerprints.stored(db_path, ASSET, model_key)
    if found is None or found.result is None:
        return None
    with connect(db_path, read_only=True) as con:
        row = con.execute(
            f"SELECT {_RECORD_COLUMNS} FROM faiss_indexes WHERE model_key = ? AND version = ?",
            [model_key, found.result],
        ).fetchone()
    return _record(row, db_path) if row else None


def current_model_key(db_path: Path) -> str:
    with connect(db_path, read_only=True) as con:
        row = con.execute(
            "SELECT model_key FROM embedding_sets ORDER BY updated_at DESC LIMIT 1"
        ).fetchone()
    if row is None:
        raise LookupError("No embeddings yet: materialize the `embeddings` asset first.")
    return row[0]


def published_index(db_path: Path, model_key: str | None = None) -> IndexRecord:
    """The newest published index of `model_key` (default: the current embedding set's)."""
    key = model_key or current_model_key(db_path)
    record = latest_index(db_path, key, published_only=True)
    if record is not None:
        return record
    with connect(db_path, read_only=True) as con:
        keys = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT model_key FROM faiss_indexes WHERE published ORDER BY 1"
            ).fetchall()
        ]
    hint = f" Published indexes exist for: {', '.join(keys)} (pass --model-key)." if keys else ""
    raise LookupError(
        f"No published similarity index for model key {key!r}: materialize `published_index` "
        f"(after `similarity_index` and its recall check; emb run does all).{hint}"
    )


class Searcher:
    """One published index, loaded once, with what it takes to answer any kind of query."""

    def __init__(self, db_path: Path, model_key: str | None = None) -> None:
        self.db_path = Path(db_path)
        self.record = published_index(self.db_path, model_key)
        with connect(self.db_path, read_only=True) as con:
            row = con.execute(
                "SELECT parquet_path, params, dim FROM embedding_sets WHERE model_key = ?",
                [self.record.model_key],
            ).fetchone()
        if row is None:
            raise LookupError(
                f"Embedding set {self.record.model_key!r} is gone from embedding_sets; "
                "re-materialize `embeddings` and `published_index`."
            )
        root = DataPaths(self.db_path.parent)
        self.parquet_path = root.resolve(row[0])
        self.params: dict = vectors.loaded_params(root, json.loads(row[1] or "{}"))
        self.index = faiss.read_index(str(self.record.path))
        self.dim = self.index.d

    @property
    def model_key(self) -> str:
        return self.record.model_key

    # -- turning a query into a vector ------------------------------------------------------
    def vector_of_id(self, image_id: int) -> np.ndarray:
        with duckdb.connect() as con:
            row = con.execute(
                "SELECT vector FROM read_parquet(?) WHERE image_id = ?",
                [str(self.parquet_path), image_id],
            ).fetchone()
        if row is not None:
            return np.asarray(row[0], dtype=np.float32)
        with connect(self.db_path, read_only=True) as con:
            info = con.execute(
                "SELECT status, error, removed_at FROM images WHERE image_id = ?", [image_id]
            ).fetchone()
        if info is None:
            raise UnknownImageError(f"image id {image_id} is not in the catalog (see `emb sql`).")
        why = f"status {info[0]}" + (f": {info[1]}" if info[1] else "")
        why += ", removed" if info[2] else ""
        raise QueryError(
            f"image id {image_id} has no embedding under model key {self.model_key!r} ({why}); "
            "re-run `embeddings` if it is new, or query with the image file instead."
        )

    def id_of_path(self, path: Path) -> int | None:
        with connect(self.db_path, read_only=True) as con:
            row = con.execute(
                "SELECT image_id FROM images WHERE path = ? AND removed_at IS NULL",
                [str(path.resolve())],
            ).fetchone()
        return row[0] if row else None

    def embed_file(self, path: Path) -> np.ndarray:
        from embedding_assets.embedder import embed_files

        try:
            return embed_files([str(path)], self.params)[0].astype(np.float32)
        except ValueError as exc:
            raise QueryError(f"query image {path} cannot be used: {exc}") from exc

    def embed_image(self, image: Image.Image) -> np.ndarray:
        from embedding_assets.embedder import embed_pil

        try:
            return embed_pil([image], self.params)[0].astype(np.float32)
        except (ValueError, OSError) as exc:
            raise QueryError(f"the uploaded image cannot be embedded: {exc}") from exc

    # -- searching --------------------------------------------------------------------------
    def by_vector(self, vector: np.ndarray, k: int, exclude: int | None = None) -> list[Hit]:
        vec = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if vec.shape[1] != self.dim:
            raise QueryError(
                f"query vector has {vec.shape[1]} dimensions but the index of model key "
                f"{self.model_key!r} has {self.dim}: embed the query with that model key."
            )
        if not np.isfinite(vec).all():
            raise QueryError("query vector contains NaN or infinity")
        with similarity.single_thread():
            sims, found = similarity.search(
                self.index, vec, k + (exclude is not None), self.record.search_params
            )
        pairs = [
            (int(i), float(s))
            for i, s in zip(found[0], sims[0], strict=True)
            if i >= 0 and i != exclude
        ][:k]
        return self._hits(pairs)

    def by_id(self, image_id: int, k: int) -> list[Hit]:
        return self.by_vector(self.vector_of_id(image_id), k, exclude=image_id)

    def by_file(self, path: Path, k: int) -> list[Hit]:
        """A catalog image uses its stored vector; any other file is embedded on the fly."""
        path = Path(path)
        if not path.is_file():
            raise QueryError(f"{path} is not a file; pass an image file or a catalog image id.")
        image_id = self.id_of_path(path)
        if image_id is not None:
            try:
                return self.by_id(image_id, k)
            except QueryError:
                pass  # e.g. the file changed since the embedding run: embed it now instead
        return self.by_vector(self.embed_file(path), k)

    def by_image(self, image: Image.Image, k: int) -> list[Hit]:
        return self.by_vector(self.embed_image(image), k)

    def similar(self, query: str | int | Path, k: int = 10) -> list[Hit]:
        """An int or digits that are not a file name are an image id; anything else a path."""
        if isinstance(query, int) or (str(query).isdigit() and not Path(str(query)).exists()):
            return self.by_id(int(query), k)
        return self.by_file(Path(query), k)

    def _hits(self, pairs: list[tuple[int, float]]) -> list[Hit]:
        if not pairs:
            return []
        ids = [i for i, _ in pairs]
        with connect(self.db_path, read_only=True) as con:
            has_clusters = con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'clusters'"
            ).fetchone()[0]
            cluster_sql = (
                "LEFT JOIN clusters c ON c.image_id = i.image_id AND c.model_key = ?"
                if has_clusters
                else "LEFT JOIN (SELECT NULL::BIGINT AS image_id, NULL::INTEGER AS cluster) c"
                " ON false"
            )
            args = ([self.model_key] if has_clusters else []) + [ids]
            rows = con.execute(
                f"SELECT i.image_id, i.path, l.label, c.cluster FROM images i "
                f"LEFT JOIN current_labels l ON l.image_id = i.image_id {cluster_sql} "
                f"WHERE i.image_id IN (SELECT unnest(?::BIGINT[]))",
                args,
            ).fetchall()
        info = {r[0]: r[1:] for r in rows}
        hits = []
        for rank, (image_id, sim) in enumerate(pairs, start=1):
            path, label, cluster = info.get(image_id, (None, None, None))
            hits.append(Hit(rank, image_id, path, sim, label, cluster))
        return hits


def similar(
    db_path: Path, query: str | int | Path, k: int = 10, model_key: str | None = None
) -> list[Hit]:
    """One-off search (opens the index each call; keep a `Searcher` for many queries)."""
    return Searcher(db_path, model_key).similar(query, k)
