"""Near-duplicate images: pairs of images with the same bytes, nearly the same perceptual
hashes (which survive resizing and recompression) or nearly the same features, grouped into
connected components, each pair with its strongest reason. Features are judged mean-centred,
through a FAISS index of them; hashes (taken while the catalog decodes) through a FAISS
multi-hash index of the 64-bit pHash, then checked on the dHash."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from embedding_assets.catalog.quality import join_hash
from embedding_assets.common import tables
from embedding_assets.embedding.features import content_vectors
from embedding_assets.embedding.sets import EmbeddingSet, read_ids, read_parquet
from embedding_assets.search.faiss_index import build_index, choose_factory, search
from resources.duckdb_store import connect
from resources.paths import DataPaths

# Bits that may differ between near copies (the defaults of `near_duplicates`). On CIFAR-10 test
# with 50 copies resized 32 -> 48 px and saved as JPEG q70 (benchmarks/curation.py), every copy
# is within pHash 2 and dHash 3 of its original; the other pairs that close are the dataset's
# own near-duplicates (the same photo with its colours shifted).
MAX_PHASH_BITS = 2
MAX_DHASH_BITS = 3
SEARCH_BATCH = 8192  # queries per FAISS search call
REASONS = ("same_bytes", "same_hash", "embedding")  # strongest first


def centred(vectors: np.ndarray) -> np.ndarray:
    """Mean removed, then L2-normalized. Backbone features share a large common component
    (random-init ReLU features of any two images sit near cosine 0.99), so a raw cosine
    threshold calls everything a duplicate; after centring only near-copies stay close."""
    X = np.asarray(vectors, dtype=np.float32)
    X = X - X.mean(axis=0, keepdims=True)
    return np.ascontiguousarray(X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12))


def near_duplicate_pairs(
    index: faiss.Index,
    vectors: np.ndarray,
    ids: np.ndarray,
    threshold: float,
    params: dict[str, int] | None = None,
    *,
    k: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(id_a, id_b, similarity) with id_a < id_b for neighbours at cosine >= threshold.

    Each image's k nearest neighbours come from the index, so a group larger than k is still
    connected through its members' overlapping neighbour lists.
    """
    a_parts, b_parts, s_parts = [], [], []
    ids = np.asarray(ids, dtype=np.int64)
    for start in range(0, len(vectors), SEARCH_BATCH):
        sims, found = search(index, vectors[start : start + SEARCH_BATCH], k + 1, params)
        own = ids[start : start + SEARCH_BATCH, None]
        keep = (found >= 0) & (found != own) & (sims >= threshold)
        src = np.broadcast_to(own, found.shape)[keep]
        dst = found[keep]
        a_parts.append(np.minimum(src, dst))
        b_parts.append(np.maximum(src, dst))
        s_parts.append(sims[keep])
    if not a_parts:
        return (np.empty(0, np.int64),) * 2 + (np.empty(0, np.float32),)
    a, b, s = np.concatenate(a_parts), np.concatenate(b_parts), np.concatenate(s_parts)
    _, first = np.unique(np.stack([a, b], axis=1), axis=0, return_index=True)
    return a[first], b[first], s[first].astype(np.float32)


def group_pairs(a: np.ndarray, b: np.ndarray) -> dict[int, int]:
    """Connected components of the duplicate graph: image id -> group id (its smallest id)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    return {x: find(x) for x in parent}


@dataclass(frozen=True)
class Fingerprints:
    """What the catalog measured of each image's content: SHA-256 and the perceptual hashes
    (None where an older catalog has no hashes for it)."""

    sha256: list[str]
    phash: np.ndarray  # uint64
    dhash: np.ndarray  # uint64
    hashed: np.ndarray  # bool: the image has hashes


def fingerprints_of(db: Path, ids: np.ndarray) -> Fingerprints:
    with connect(db, read_only=True) as con:
        rows = con.execute(
            f"SELECT i.image_id, i.sha256, m.phash_hi, m.phash_lo, m.dhash_hi, m.dhash_lo "
            f"FROM {tables.IMAGES} i LEFT JOIN {tables.IMAGE_QUALITY_MEASURES} m USING (image_id) "
            "WHERE i.image_id IN (SELECT unnest(?::BIGINT[]))",
            [np.asarray(ids).tolist()],
        ).fetchall()
    found = {r[0]: r[1:] for r in rows}
    sha, ph, dh, hashed = [], [], [], []
    for i in np.asarray(ids).tolist():
        digest, p_hi, p_lo, d_hi, d_lo = found.get(i, ("", None, None, None, None))
        sha.append(digest)
        ok = None not in (p_hi, p_lo, d_hi, d_lo)
        hashed.append(ok)
        ph.append(join_hash(p_hi, p_lo) if ok else 0)
        dh.append(join_hash(d_hi, d_lo) if ok else 0)
    return Fingerprints(
        sha, np.array(ph, np.uint64), np.array(dh, np.uint64), np.array(hashed, bool)
    )


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int32)


def hash_pairs(
    ids: np.ndarray,
    prints: Fingerprints,
    max_phash: int = MAX_PHASH_BITS,
    max_dhash: int = MAX_DHASH_BITS,
) -> tuple[np.ndarray, np.ndarray]:
    """(id_a, id_b), a < b, of images within `max_phash` pHash bits and `max_dhash` dHash
    bits. A multi-hash index of four 16-bit pieces finds every pair within 3 bits exactly
    (one piece must then be equal), in about a second per 200,000 images."""
    if not 0 <= max_phash <= 3:
        raise ValueError(f"max_phash={max_phash}: use 0 to 3 bits")
    rows = np.flatnonzero(prints.hashed)
    if len(rows) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    codes = np.ascontiguousarray(prints.phash[rows]).view(np.uint8).reshape(-1, 8)
    index = faiss.IndexBinaryMultiHash(64, 4, 16)
    index.add(codes)
    lims, _, found = index.range_search(codes, max_phash + 1)  # distances below the radius
    src = np.repeat(np.arange(len(rows)), np.diff(lims.astype(np.int64)))
    keep = src < found
    src, dst = rows[src[keep]], rows[found[keep]]
    close = hamming(prints.dhash[src], prints.dhash[dst]) <= max_dhash
    ids = np.asarray(ids, dtype=np.int64)
    a, b = ids[src[close]], ids[dst[close]]
    return np.minimum(a, b), np.maximum(a, b)


@dataclass(frozen=True)
class NearDuplicates:
    """Pairs (a < b) with the same bytes, close perceptual hashes or cosine >= the threshold;
    per pair its cosine, strongest reason and pHash distance (-1 without hashes), its group
    (the smallest image id of its connected component), and what the features were."""

    a: np.ndarray
    b: np.ndarray
    similarity: np.ndarray
    reason: list[str]
    hash_distance: np.ndarray
    group: np.ndarray
    judged_on: str


@dataclass(frozen=True)
class DuplicateSettings:
    """What counts as a near-duplicate (the near_duplicates asset's config)."""

    threshold: float  # cosine at or above which two images are near-duplicates
    k: int = 10  # neighbours searched per image
    memory_budget_gb: float = 4.0  # of the index the search builds
    max_phash: int = MAX_PHASH_BITS  # perceptual-hash distance of a resized or recompressed copy
    max_dhash: int = MAX_DHASH_BITS


def find_near_duplicates(
    paths: DataPaths, emb_set: EmbeddingSet, settings: DuplicateSettings
) -> NearDuplicates:
    """Near-duplicates of an embedding set, judged on its mean-centred vectors, or on those of
    the plain backbone when the set was made with a trained head (a metric-learning head pulls a
    whole class together, which says nothing about duplicated content). One matrix is read:
    the plain features or the set's."""
    content = content_vectors(paths, emb_set.model_key, read_ids(emb_set.parquet_path))
    dup_ids, dup_vectors = content if content is not None else read_parquet(emb_set.parquet_path)
    judged_on = "plain backbone features" if content is not None else "the embeddings"
    dup_vectors = centred(dup_vectors)
    threshold, max_phash, max_dhash = settings.threshold, settings.max_phash, settings.max_dhash
    budget = int(settings.memory_budget_gb * 2**30)
    factory = choose_factory(len(dup_ids), dup_vectors.shape[1], budget)
    built = build_index(dup_vectors, dup_ids, factory)
    a, b, _ = near_duplicate_pairs(
        built.index, dup_vectors, dup_ids, threshold, built.search_params, k=settings.k
    )
    prints = fingerprints_of(paths.catalog_db, dup_ids)
    ha, hb = hash_pairs(dup_ids, prints, max_phash, max_dhash)
    pairs = np.unique(np.stack([np.r_[a, ha], np.r_[b, hb]], axis=1).reshape(-1, 2), axis=0)
    a, b = pairs[:, 0], pairs[:, 1]
    row = {int(i): r for r, i in enumerate(dup_ids.tolist())}
    ra = np.array([row[int(x)] for x in a], dtype=np.int64)
    rb = np.array([row[int(x)] for x in b], dtype=np.int64)
    similarity = np.einsum("ij,ij->i", dup_vectors[ra], dup_vectors[rb]).astype(np.float32)
    sha = np.asarray(prints.sha256, dtype=object)
    both = prints.hashed[ra] & prints.hashed[rb]
    distance = np.where(both, hamming(prints.phash[ra], prints.phash[rb]), -1)
    by_hash = both & (distance <= max_phash)
    by_hash &= hamming(prints.dhash[ra], prints.dhash[rb]) <= max_dhash
    reason = np.where(sha[ra] == sha[rb], REASONS[0], np.where(by_hash, REASONS[1], REASONS[2]))
    groups = group_pairs(a, b)
    group = np.array([groups[int(x)] for x in a], dtype=np.int64)
    return NearDuplicates(
        a,
        b,
        similarity,
        reason.tolist(),
        distance.astype(np.int32),
        group,
        f"{judged_on}, mean-centred ({factory}); pHash <= {max_phash} and dHash <= "
        f"{max_dhash} bits",
    )
