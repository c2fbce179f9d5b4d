"""Text queries over whichever index is built: the CLIP index when `clip_embeddings` wrote
one, else the backbone's ImageNet tags (`image_tags`); and the copy a server keeps current."""

from __future__ import annotations

import time
from pathlib import Path

from embedding_assets.search.clip import POINTER as CLIP_POINTER
from embedding_assets.search.clip import ClipIndex
from embedding_assets.search.tags import POINTER as TAGS_POINTER
from embedding_assets.search.tags import TagIndex
from embedding_assets.search.text_answers import TextAnswer
from resources.paths import DataPaths


def text_index(paths: DataPaths) -> TagIndex | ClipIndex:
    """What answers text queries: the CLIP index when `clip_embeddings` wrote one, else the
    tags; LookupError saying what to run while there are neither."""
    return ClipIndex.current(paths) or TagIndex.current(paths)


class LiveText:
    """The text index a server answers from: loaded on first use, and again when
    `image_tags` or `clip_embeddings` writes a newer one (checked by a stat of their pointers at
    most every `reload_seconds`), so requests never read DuckDB."""

    def __init__(self, paths: DataPaths, reload_seconds: float = 1.0) -> None:
        self.pointers = (paths.root / "clip" / CLIP_POINTER, paths.root / "tags" / TAGS_POINTER)
        self.paths = paths
        self.reload_seconds = reload_seconds
        self._index: TagIndex | ClipIndex | None = None
        self._seen: tuple | None = None
        self._checked = 0.0

    def current(self) -> TagIndex | ClipIndex:
        now = time.monotonic()
        if self._index is not None and now - self._checked < self.reload_seconds:
            return self._index
        self._checked = now
        stamps = tuple(_stamp(p) for p in self.pointers)
        gone = all(s is None for s in stamps)  # keep serving what is in memory
        if self._index is None or (stamps != self._seen and not gone):
            self._index, self._seen = text_index(self.paths), stamps
        return self._index


def _stamp(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def search_text(paths: DataPaths, query: str, k: int = 10) -> TextAnswer:
    """One-off text search (keep a LiveText for many queries): CLIP where its index exists,
    else the tags; NoMatch when no word names a class, LookupError when nothing is built."""
    return text_index(paths).answer(query, k)
