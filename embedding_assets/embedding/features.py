"""Which backbone features other domains read: the plain backbone's vectors behind an embedding
set made with a trained head. The classifier learns from them and near-duplicates are judged on
them, both read through the LMDB cache that the embeddings' own backbone pass filled."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from embedding_assets.catalog.images import usable_files
from embedding_assets.embedding import sets
from embedding_assets.embedding.embedder import EmbedParams
from embedding_assets.embedding.run import RunOptions, cached_features
from resources.paths import DataPaths


def plain_params(paths: DataPaths, model_key: str) -> EmbedParams | None:
    """The plain-backbone settings behind an embedding set made with a trained head, else None
    (float32: the plain-feature cache that the embeddings' own backbone pass filled)."""
    params = sets.stored_set_params(paths.catalog_db, model_key)
    if not params.get("head"):
        return None
    # a fine-tuned trunk is stored relative to the data folder: resolve it like the Searcher does
    stored = sets.loaded_params(paths, params)
    return replace(EmbedParams(**stored), head=None, store_dtype="float32")


def content_vectors(
    paths: DataPaths, model_key: str, ids: np.ndarray, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, plain-backbone vectors) behind an embedding set made with a trained head, else
    None. Near-duplicates are judged on these: a metric-learning head pulls a whole class
    together (same-class cosine near 1), which says nothing about duplicated content."""
    params = plain_params(paths, model_key)
    return None if params is None else _plain_vectors(paths, params, ids, device)


def _plain_vectors(
    paths: DataPaths, params: EmbedParams, ids: np.ndarray, device: str
) -> tuple[np.ndarray, np.ndarray]:
    usable = usable_files(paths.catalog_db)
    rows = usable.rows_of(ids)
    present = usable.subset(rows[rows >= 0])
    X, keep = cached_features(
        paths, params, present.fs_paths, present.hashes, RunOptions(device=device)
    )
    return present.ids[keep], X


@dataclass(frozen=True)
class Features:
    """The vectors a classifier learns from, with where they came from."""

    emb_set: sets.EmbeddingSet  # the current set
    key: str  # the model key of the vectors: the set's, or its plain backbone's
    ids: np.ndarray  # image ids, in the order of the rows of `matrix`
    matrix: np.ndarray  # (n, d) float32


def classifier_feature_key(paths: DataPaths) -> str:
    """The model key of the features `classifier_features` reads: what, with the labels,
    decides a classifier (new unlabeled images do not)."""
    key = sets.current_set(paths.catalog_db).model_key
    params = plain_params(paths, key)
    return key if params is None else params.model_key()


def classifier_features(paths: DataPaths, device: str = "cpu") -> Features:
    """The plain backbone features of the current embedding set's images, read once: a head
    trained on the same labels would flatter the classifier's held-out score (the head has
    seen those labels) and, on real photos, generalized worse to unlabeled images (0.61 vs 0.66
    accuracy measured with 500 labels of CIFAR-10). A set made without a head is its own plain
    features; with one, only its image ids are read from the Parquet."""
    emb_set = sets.current_set(paths.catalog_db)
    params = plain_params(paths, emb_set.model_key)
    if params is None:
        ids, matrix = sets.read_parquet(emb_set.parquet_path)
        return Features(emb_set, emb_set.model_key, ids, matrix)
    plain_ids, plain = _plain_vectors(paths, params, sets.read_ids(emb_set.parquet_path), device)
    return Features(emb_set, params.model_key(), plain_ids, plain)
