"""The catalog's tables and views by name, and the queries several modules share.

The DDL in `resources/ddl/` creates them. Code spells a table through these names, so every
reader of one is found by searching for its constant (tests/test_layout.py keeps table names
out of SQL written elsewhere).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

# -- catalog: images and labels (010_catalog.sql, 120_object_storage.sql)
IMAGES = "images"  # one row per file or object ever seen
USABLE_IMAGES = "usable_images"  # view: status ok and not removed
LABELS = "labels"  # the append-only labels log
CURRENT_LABELS = "current_labels"  # view: the latest label per image
IMAGE_QUALITY_MEASURES = "image_quality_measures"  # measured while the catalog decodes
IMAGE_SPLITS = "image_splits"  # splits set by hand
SPLITS = "splits"  # view: each image's split (by hand, else its top-level folder)
SCHEMA_INFO = "schema_info"
# -- embeddings (020_embeddings.sql, 070_embedding_models.sql)
EMBEDDING_SETS = "embedding_sets"
EMBEDDING_MODELS = "embedding_models"
# -- search (050_search.sql)
FAISS_INDEXES = "faiss_indexes"
IMAGE_TAGS = "image_tags"  # the backbone's ImageNet classes per image (150_text_search.sql)
IMAGENET_TERMS = "imagenet_terms"  # WordNet words naming each class or a synset above it
IMAGE_TAGS_EXPANDED = "image_tags_expanded"  # view: tags with every term, and the path
NEAR_DUPLICATES = "near_duplicates"
# -- analytics (040_analytics.sql)
PROJECTIONS = "projections"
CLUSTERS = "clusters"
ANOMALY_SCORES = "anomaly_scores"
IMAGE_OVERVIEW = "image_overview"  # view: everything known per usable image
# -- learning (060_active_learning.sql, 080_classifier_candidates.sql)
MODEL_VERSIONS = "model_versions"
CLASSIFIER_CANDIDATES = "classifier_candidates"
CLASSIFIER_TRIALS = "classifier_trials"
PREDICTIONS = "predictions"
LABEL_REQUESTS = "label_requests"
LEARNING_CURVE = "learning_curve"
OPEN_LABEL_REQUESTS = "open_label_requests"  # view: the latest round minus images labeled since
# -- curation (110_curation.sql)
IMAGE_QUALITY = "image_quality"
LABEL_ISSUES = "label_issues"
UNIQUENESS = "uniqueness"
SPLIT_LEAKS = "split_leaks"  # view: near-duplicates across splits
BATCH_DRIFT = "batch_drift"
OOD_SCORES = "ood_scores"
# -- reuse (090_asset_fingerprints.sql)
ASSET_FINGERPRINTS = "asset_fingerprints"
# -- the state a complete `emb run` left (170_run_states.sql)
RUN_STATES = "run_states"

# The model key of the current embedding set (the most recently updated), as a scalar subquery.
CURRENT_MODEL_KEY = f"(SELECT model_key FROM {EMBEDDING_SETS} ORDER BY updated_at DESC LIMIT 1)"
# A file's name as the bytes to open it by (`path_bytes` holds names that are not UTF-8).
PATH_BYTES = "coalesce(path_bytes, encode(path))"


def exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether `table` is in the catalog yet: a catalog only ever opened read-only since a DDL
    file was added lacks that file's tables."""
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]
        ).fetchall()[0][0]
    )


def current_model_key(db_path: Path) -> str:
    """The current embedding set's model key; LookupError when nothing is embedded yet."""
    from resources.duckdb_store import connect

    with connect(db_path, read_only=True) as con:
        row = con.execute(f"SELECT {CURRENT_MODEL_KEY}").fetchone()
    if row is None or row[0] is None:
        raise LookupError("No embeddings yet: materialize the `embeddings` asset first.")
    return row[0]


# -- curation peers (140_curation_peers.sql)
OUTLIERS = "outliers"
DATASET_CHECKS = "dataset_checks"
