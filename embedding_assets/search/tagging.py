"""Tagging every usable image, as the `image_tags` asset runs it: the backbone's own ImageNet
head over its cached features (after `embeddings`, no second backbone pass), the tags written
where DuckDB and serving read them (`tags`), and the figures the asset reports."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from embedding_assets.catalog.images import usable_files
from embedding_assets.common import markdown
from embedding_assets.embedding.backbones import imagenet_head
from embedding_assets.embedding.embedder import EmbedParams
from embedding_assets.embedding.run import cached_features_and_norms
from embedding_assets.embedding.run_options import RunOptions
from embedding_assets.search import tags
from embedding_assets.search.tags import Tagged
from resources.paths import DataPaths

GRAPH = f"neighbours-{tags.NEIGHBOURS}-pca{tags.SPACE_DIMS}"  # the tags' neighbour graph
SEARCH_HINT = (
    'emb search --text "cat"   ·   emb sql "select path, score from image_tags_expanded '
    "where term = 'cat' order by score desc\""
)
# How the forward pass runs, with its device held only while it runs (a GPU from the pool).
Inference = Callable[[], AbstractContextManager[RunOptions]]


@dataclass(frozen=True)
class TagSettings:
    """The tagging backbone and how many classes each image keeps."""

    params: EmbedParams
    top_k: int
    allow_download: bool = True


def tag_images(paths: DataPaths, settings: TagSettings, inference: Inference) -> Tagged | str:
    """Tag every usable image and write the tags (DuckDB and the served copy); why not, for a
    backbone without an ImageNet-1k head."""
    params = settings.params
    head = imagenet_head(params.spec(), settings.allow_download)
    if isinstance(head, str):
        return head
    usable = usable_files(paths.catalog_db)
    with inference() as options:
        X, norms, keep = cached_features_and_norms(
            paths, params, usable.fs_paths, usable.hashes, options
        )
    tagged = Tagged.of(usable.ids[keep], X, norms, head, settings.top_k)
    tags.write_tags(paths, params.model_key(), tagged, usable.subset(keep).paths)
    return tagged


@dataclass(frozen=True)
class TagSummary:
    images: int
    mean_top1: float  # probability of each image's first class, averaged
    most_common: str  # markdown: the classes most often first, with their image counts


def summary(tagged: Tagged) -> TagSummary:
    images = len(tagged.image_ids)
    mean_top1 = round(float(tagged.probs[:, 0].mean()), 4) if images else 0.0
    common = markdown.table(["images (top 1)", "class"], tags.most_common(tagged))
    return TagSummary(images, mean_top1, common)
