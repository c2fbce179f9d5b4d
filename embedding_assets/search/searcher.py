"""Queries over one published index version: by image id, catalog path, image file (embedded
on the fly with the set's own model and preprocessing), in-memory image or vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from PIL import Image

from embedding_assets.catalog import object_store
from embedding_assets.common import tables
from embedding_assets.embedding import sets
from embedding_assets.search import faiss_index, snapshot
from embedding_assets.search.versions import served_record, with_snapshot
from resources.duckdb_store import connect
from resources.paths import DataPaths


class QueryError(ValueError):
    """The query itself is bad (undecodable image, no embedding, wrong model key): a 4xx."""


class UnknownImageError(QueryError):
    """The query names an image id the catalog does not have: a 404."""


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
        self.record = served_record(root, self.db_path, model_key)
        with_snapshot(self.record.path, self.model_key, self.record.version)
        info = snapshot.build_info(self.record.path)
        self.params: dict = sets.loaded_params(root, info["params"])
        self.index = faiss.read_index(str(self.record.path))
        self.dim = self.index.d
        self.ids, self.vectors = snapshot.stored_vectors(self.record.path)
        self.lookup = snapshot.Lookup(self.ids)
        self.rows = snapshot.read_rows(self.record.path)
        self._path_ids: dict[str, int] | None = None

    @property
    def model_key(self) -> str:
        return self.record.model_key

    def refresh_rows(self, timeout_s: float | None = None) -> None:
        """Labels and clusters as the catalog has them now (one short read-only connection;
        raises if the catalog cannot be read, and then the previous rows stay)."""
        rows = snapshot.catalog_rows(self.db_path, self.model_key, self.ids, timeout_s)
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
                f"SELECT status, error, removed_at FROM {tables.IMAGES} WHERE image_id = ?",
                [image_id],
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
        from embedding_assets.embedding.embedder import embed_files

        try:
            return embed_files([str(path)], self.params)[0].astype(np.float32)
        except ValueError as exc:
            raise QueryError(f"query image {path} cannot be used: {exc}") from exc

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        from embedding_assets.embedding.embedder import embed_pil

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
        with faiss_index.single_thread():
            sims, found = faiss_index.search(self.index, q, k + extra, self.record.search_params)
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

    def describe(self, image_id: int) -> str:
        """What a catalog image is, for a heading: its id, path and label."""
        row = int(self.lookup.rows(np.asarray([image_id], dtype=np.int64))[0])
        if row < 0:
            return f"#{image_id}"
        label = self.rows.labels[row]
        return f"#{image_id} {self.rows.paths[row]} ({f'label {label}' if label else 'unlabeled'})"

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


def _hit(rank: int, image_id: int, sim: float, row: int, rows: snapshot.Rows) -> Hit:
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
