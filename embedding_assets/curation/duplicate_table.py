"""The `near_duplicates` table as its asset writes and reports it: the rows of a
`duplicates.find_near_duplicates` result, the pairs by reason, and the counts read back from
the stored rows (what a reused result reports)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedding_assets.common import markdown, tables
from embedding_assets.curation.duplicates import (
    REASONS,
    DuplicateSettings,
    find_near_duplicates,
)
from embedding_assets.embedding.sets import EmbeddingSet
from resources.duckdb_store import connect
from resources.paths import DataPaths


@dataclass(frozen=True)
class DuplicateTable:
    rows: dict[str, np.ndarray | list]  # the table's columns but model_key
    judged_on: str
    by_reason: str  # markdown: pairs per reason, strongest first
    log: str


def duplicate_table(
    paths: DataPaths, emb_set: EmbeddingSet, settings: DuplicateSettings
) -> DuplicateTable:
    found = find_near_duplicates(paths, emb_set, settings)
    rows = {
        "image_id_a": found.a,
        "image_id_b": found.b,
        "similarity": found.similarity.astype(np.float32),
        "group_id": found.group,
        "reason": found.reason,
        "hash_distance": found.hash_distance,
    }
    counts = [[r, found.reason.count(r)] for r in REASONS if r in found.reason]
    groups = len(set(found.group.tolist()))
    log = f"{len(found.a)} near-duplicate pairs in {groups} groups"
    return DuplicateTable(rows, found.judged_on, markdown.table(["reason", "pairs"], counts), log)


def stored_counts(db: Path, model_key: str) -> dict[str, int]:
    """Pairs and groups stored for `model_key`."""
    with connect(db, read_only=True) as con:
        pairs, groups = con.execute(
            f"SELECT count(*), count(DISTINCT group_id) FROM {tables.NEAR_DUPLICATES} "
            "WHERE model_key = ?",
            [model_key],
        ).fetchall()[0]
    return {"pairs": pairs, "groups": groups}
