"""Find similar images: versioned FAISS index files, their catalog rows, and queries over them.

An index is written to `indexes/<model_key>/<version>.faiss` and registered in `faiss_indexes`
unpublished; the `published_index` asset publishes it once its recall check passed. Search opens
the newest published index of a model key and answers queries given as an image id, a
catalog path, an image file (embedded on the fly with the set's own model and preprocessing),
an in-memory image, or a vector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
from PIL import Image

from embedding_assets import fingerprints, index_snapshot, object_store, similarity, vectors
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
        # by hand: dataclasses.asdict deep-copies, a tenth of a by-id request's time
        return {
            "rank": self.rank,
            "image_id": self.image_id,
            "path": self.path,
            "similarity": self.similarity,
            "label": self.label,
            "cluster": self.cluster,
        }


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
    """Mark a version as the one search uses (the newest published version wins), in the
    catalog and in the pointer files that running servers poll; drop older snapshots."""
    with connect(db_path) as con:
        con.execute(
            "UPDATE faiss_indexes SET published = true, published_at = ?, check_recall_at_5 = ?"
            " WHERE model_key = ? AND version = ?",
            [_now(), check_recall, model_key, version],
        )
    root = DataPaths(Path(db_path).parent)
    previous = index_snapshot.read_pointer(root, model_key)
    index_snapshot.write_pointer(root, model_key, version)
    # keep what a server may still be switching from, and what was just built
    keep = {
        version,
        previous[1] if previous else "",
        getattr(current_build(db_path, model_key), "version", ""),
    }
    index_snapshot.prune(root.indexes_dir / model_key, keep)


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


def _served_record(root: DataPaths, db_path: Path, model_key: str | None) -> IndexRecord:
    """The published version to serve: from the pointer file publication writes (no DuckDB),
    else (an index published before pointers existed, or none) from the catalog."""
    found = index_snapshot.read_pointer(root, model_key)
    if found is None:
        return published_index(db_path, model_key)
    key, version = found
    path = _with_snapshot(index_path(root.indexes_dir, key, version), key, version)
    r = index_snapshot.build_info(path)["record"]
    return IndexRecord(
        key, version, path, r["index_type"], r["vectors"], r["dim"], r["search_params"],
        r["recall_at_5"], True,
    )  # fmt: skip


def _with_snapshot(path: Path, model_key: str, version: str) -> Path:
    if not index_snapshot.exists(path):
        raise LookupError(
            f"Index {version} of {model_key} has no search snapshot (it was built by an older "
            "version): re-materialize `similarity_index` and `published_index` (emb run)."
        )
    return path


class Searcher:
    """One published index version, loaded once with its snapshot (ids, vectors, paths, labels,
    clusters, embedding parameters), so that answering never opens DuckDB. `explain` lets a
    query for an image outside the index ask the catalog why (the CLI does; the server, whose
    request path must not wait on the DuckDB writer, does not)."""

    def __init__(
        self, db_path: Path, model_key: str | None = None, *, explain: bool = True
    ) -> None:
        self.db_path = Path(db_path)
        self.explain = explain
        root = DataPaths(self.db_path.parent)
        self.record = _served_record(root, self.db_path, model_key)
        _with_snapshot(self.record.path, self.model_key, self.record.version)
        info = index_snapshot.build_info(self.record.path)
        self.params: dict = vectors.loaded_params(root, info["params"])
        self.index = faiss.read_index(str(self.record.path))
        self.dim = self.index.d
        self.ids, self.vectors = index_snapshot.stored_vectors(self.record.path)
        self.lookup = index_snapshot.Lookup(self.ids)
        self.rows = index_snapshot.read_rows(self.record.path)
        self._path_ids: dict[str, int] | None = None

    @property
    def model_key(self) -> str:
        return self.record.model_key

    def refresh_rows(self, timeout_s: float | None = None) -> None:
        """Labels and clusters as the catalog has them now (one short read-only connection;
        raises if the catalog cannot be read, and then the previous rows stay)."""
        rows = index_snapshot.catalog_rows(self.db_path, self.model_key, self.ids, timeout_s)
        self.rows, self._path_ids = rows, None

    # -- turning a query into a vector ------------------------------------------------------
    def vector_of_id(self, image_id: int) -> np.ndarray:
        row = int(self.lookup.rows(np.asarray([image_id]))[0])
        if row >= 0:
            return np.asarray(self.vectors[row], dtype=np.float32)
        if not self.explain:
            raise UnknownImageError(
                f"image id {image_id} is not in index {self.record.version} of "
                f"{self.model_key!r}: an unknown id, or an image that is new, removed or could "
                "not be embedded (new images are searchable after the next run publishes)."
            )
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

    def id_of_path(self, path: Path | str) -> int | None:
        """The catalog id of a file (or of an object by its URL), None when not catalogued."""
        if self._path_ids is None:
            rows = self.rows
            self._path_ids = {p: int(i) for i, p in zip(rows.ids, rows.paths, strict=True) if p}
        key = path if object_store.is_url(path) else str(Path(path).resolve())
        return self._path_ids.get(key)

    def embed_file(self, path: Path) -> np.ndarray:
        from embedding_assets.embedder import embed_files

        try:
            return embed_files([str(path)], self.params)[0].astype(np.float32)
        except ValueError as exc:
            raise QueryError(f"query image {path} cannot be used: {exc}") from exc

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        from embedding_assets.embedder import embed_pil

        try:
            return embed_pil(images, self.params).astype(np.float32)
        except (ValueError, OSError) as exc:
            raise QueryError(f"an uploaded image cannot be embedded: {exc}") from exc

    # -- searching --------------------------------------------------------------------------
    def by_vectors(
        self, queries: np.ndarray, k: int, exclude: list[int | None] | None = None
    ) -> list[list[Hit]]:
        """Top k per query row in one FAISS call; `exclude[i]` (the query's own id) is left out."""
        q = np.asarray(queries, dtype=np.float32)
        q = q.reshape(1, -1) if q.ndim == 1 else q
        if q.shape[1] != self.dim:
            raise QueryError(
                f"query vector has {q.shape[1]} dimensions but the index of model key "
                f"{self.model_key!r} has {self.dim}: embed the query with that model key."
            )
        if not np.isfinite(q).all():
            raise QueryError("query vector contains NaN or infinity")
        exclude = exclude or [None] * len(q)
        extra = int(any(e is not None for e in exclude))
        with similarity.single_thread():
            sims, found = similarity.search(self.index, q, k + extra, self.record.search_params)
        rows = self.rows
        positions = self.lookup.rows(found)
        out = []
        for r in range(len(q)):
            keep = (found[r] >= 0) & (found[r] != (-2 if exclude[r] is None else exclude[r]))
            picked = np.flatnonzero(keep)[:k]
            out.append(
                [
                    _hit(
                        rank,
                        int(found[r, j]),
                        float(sims[r, j]),
                        int(positions[r * found.shape[1] + j]),
                        rows,
                    )
                    for rank, j in enumerate(picked, start=1)
                ]
            )
        return out

    def by_vector(self, vector: np.ndarray, k: int, exclude: int | None = None) -> list[Hit]:
        return self.by_vectors(np.asarray(vector).reshape(1, -1), k, [exclude])[0]

    def by_id(self, image_id: int, k: int) -> list[Hit]:
        return self.by_vector(self.vector_of_id(image_id), k, exclude=image_id)

    def by_ids(self, image_ids: list[int], k: int) -> list[list[Hit] | QueryError]:
        """Many ids in one FAISS call; an id outside the index gets its error in its place."""
        rows = self.lookup.rows(np.asarray(image_ids, dtype=np.int64))
        known = [i for i, r in enumerate(rows) if r >= 0]
        answers: list[list[Hit] | QueryError] = []
        hits = (
            self.by_vectors(
                np.asarray(self.vectors[rows[known]], dtype=np.float32),
                k,
                [image_ids[i] for i in known],
            )
            if known
            else []
        )
        found = dict(zip(known, hits, strict=True))
        for i, image_id in enumerate(image_ids):
            if i in found:
                answers.append(found[i])
                continue
            try:
                self.vector_of_id(image_id)
            except QueryError as exc:
                answers.append(exc)
        return answers

    def by_file(self, path: Path | str, k: int) -> list[Hit]:
        """A catalog image uses its stored vector; any other file (or object URL) is embedded
        on the fly."""
        if not object_store.is_url(path):
            path = Path(path)
            if not path.is_file():
                raise QueryError(f"{path} is not a file; pass an image file or a catalog image id.")
        image_id = self.id_of_path(path)
        if image_id is not None:
            return self.by_id(image_id, k)
        return self.by_vector(self.embed_file(path), k)

    def by_image(self, image: Image.Image, k: int) -> list[Hit]:
        return self.by_vector(self.embed_images([image])[0], k)

    def by_images(self, images: list[Image.Image], k: int) -> list[list[Hit]]:
        return self.by_vectors(self.embed_images(images), k)

    def similar(self, query: str | int | Path, k: int = 10) -> list[Hit]:
        """An int or digits that are not a file name are an image id; anything else a path."""
        if isinstance(query, int) or (str(query).isdigit() and not Path(str(query)).exists()):
            return self.by_id(int(query), k)
        return self.by_file(query if object_store.is_url(query) else Path(query), k)


def _hit(rank: int, image_id: int, sim: float, row: int, rows: index_snapshot.Rows) -> Hit:
    if row < 0:
        return Hit(rank, image_id, None, sim, None, None)
    cluster = int(rows.clusters[row])
    return Hit(
        rank, image_id, rows.paths[row], sim, rows.labels[row], None if cluster < 0 else cluster
    )


def similar(
    db_path: Path, query: str | int | Path, k: int = 10, model_key: str | None = None
) -> list[Hit]:
    """One-off search (opens the index each call; keep a `Searcher` for many queries)."""
    return Searcher(db_path, model_key).similar(query, k)
