"""Run configuration of the search assets: `similarity_index`, `near_duplicates`, `image_tags`
and `clip_embeddings`, and the settings records of `search.builds`, `search.tagging` and
`curation.duplicates` built from them."""

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from embedding_assets.configs.embedding import BackboneConfig

if TYPE_CHECKING:
    from embedding_assets.curation.duplicates import DuplicateSettings
    from embedding_assets.search.builds import BuildSettings
    from embedding_assets.search.faiss_index import KnnSettings
    from embedding_assets.search.tagging import TagSettings

KNN_FIELDS = ("knn_k", "knn_max_queries")  # the kNN evaluation, not the index


class SimilarityIndexConfig(dg.Config):
    index_factory: str = Field(
        default="",
        description="A FAISS index_factory string (e.g. 'HNSW32,Flat', 'IVF4096,Flat', "
        "'IVF4096,PQ16x8') to override the automatic choice by collection size and memory.",
    )
    memory_budget_gb: float = Field(
        default=4.0, description="Memory the index may take; beyond it the codes are compressed."
    )
    exact_max: int = Field(
        default=20_000,
        description="Up to this many vectors (and 4M floats, n x dimension) the index is exact "
        "(Flat).",
    )
    train_sample: int = Field(default=100_000, description="Vectors sampled to train IVF/PQ.")
    target_recall: float = Field(
        default=0.97,
        description="Tuning stops at the smallest nprobe/efSearch reaching this recall@5 "
        "(a margin over the check's 0.95, which uses another query sample).",
    )
    nprobe: int = Field(default=0, description="Fixed IVF nprobe instead of tuning (0 = tune).")
    ef_search: int = Field(
        default=0, description="Fixed HNSW efSearch instead of tuning (0 = tune)."
    )
    max_nprobe: int = Field(default=1024, description="Largest nprobe tuning may choose.")
    max_ef_search: int = Field(default=1024, description="Largest efSearch tuning may choose.")
    recall_queries: int = Field(default=500, description="Query sample for recall and latency.")
    rebuild_fraction: float = Field(
        default=0.2,
        ge=0,
        description="New, changed and removed images are added to / removed from the current "
        "index in place while they are at most this share of it; beyond it (or when the "
        "collection outgrows the index type, or the settings change) the index is rebuilt.",
    )
    knn_k: int = Field(default=5, description="Neighbours voting in the kNN classification.")
    knn_max_queries: int = Field(
        default=20_000, description="Labeled images evaluated leave-one-out (a random sample)."
    )

    def built_from(self) -> dict:
        """The settings that decide the index (as JSON), without its kNN evaluation."""
        return self.model_dump(mode="json", exclude=set(KNN_FIELDS))

    def knn_part(self) -> list:
        """The settings of the kNN evaluation (as JSON), which decide only the accuracy."""
        settings = self.model_dump(mode="json")
        return [settings[k] for k in KNN_FIELDS]

    def build_settings(self) -> "BuildSettings":
        from embedding_assets.search.builds import BuildSettings

        return BuildSettings(**self.model_dump(exclude=set(KNN_FIELDS)))

    def knn_settings(self) -> "KnnSettings":
        from embedding_assets.search.faiss_index import KnnSettings

        return KnnSettings(self.knn_k, self.knn_max_queries)


class NearDuplicatesConfig(dg.Config):
    threshold: float = Field(
        default=0.98,
        description="Pairs at cosine similarity >= this are near-duplicates; judged on "
        "mean-centred features (of the plain backbone when embeddings use a trained head).",
    )
    k: int = Field(default=10, description="Neighbours examined per image.")
    memory_budget_gb: float = Field(
        default=4.0, description="Memory the index over those features may take."
    )
    max_phash_bits: int = Field(
        default=2,
        ge=0,
        le=3,
        description="Images whose 64-bit pHash differs in at most this many bits (and whose "
        "dHash in at most max_dhash_bits) are near-duplicates: copies resized or recompressed.",
    )
    max_dhash_bits: int = Field(default=3, ge=0, le=64, description="See max_phash_bits.")

    def duplicate_settings(self) -> "DuplicateSettings":
        from embedding_assets.curation.duplicates import DuplicateSettings

        return DuplicateSettings(
            self.threshold, self.k, self.memory_budget_gb, self.max_phash_bits, self.max_dhash_bits
        )


class ImageTagsConfig(BackboneConfig):
    """The tagging backbone: the same settings as `embeddings`' (emb run --model sets both), so
    the plain features the embeddings computed serve the tags with no second backbone pass."""

    top_k: int = Field(
        default=20,
        ge=1,
        le=50,
        description="Classes kept per image (20: mAP by class name 0.612 on CIFAR-10's 10,000 "
        "test photos against 0.606 at 5 and 0.614 at 50, 0.582 on 200-photo draws against "
        "0.570 at 5, for 4x the rows of 5; benchmarks/text_search.py).",
    )
    allow_download: bool = Field(
        default=True, description="Fetch missing pretrained weights into the torch cache."
    )

    def tag_settings(self) -> "TagSettings":
        from embedding_assets.search.tagging import TagSettings

        return TagSettings(self.backbone(), self.top_k, self.allow_download)


class ClipEmbeddingsConfig(dg.Config):
    text_model: str = Field(
        default="",
        description="An open_clip model for text search at CLIP quality, as ARCH:PRETRAINED "
        "(ViT-B-32:laion2b_s34b_b79k, or ViT-B-32:/path/to/checkpoint.bin; ARCH may be a "
        "model-config JSON file). Empty: off, text search uses `image_tags`. Needs the [clip] "
        "extra.",
    )
