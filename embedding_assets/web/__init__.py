"""Browser pages served by `emb serve` beside the search API: `/label` (answer the open label
requests), `/map` (the projections as a WebGL scatter, lasso to label or search) and
`/search/page` (search by an uploaded image or an image id), with thumbnails by image id."""

from embedding_assets.web.pages import mount_pages

__all__ = ["mount_pages"]
