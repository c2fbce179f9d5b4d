"""Similarity search: FAISS indexes over the embeddings (`faiss_index`: choose, build, tune,
measure), building or updating one version per run (`builds`) and what the index assets run over
it (`indexing`), versioned index files and their publication (`versions`), what serving needs of
a version (`snapshot`), queries over it (`searcher`) and the copy a server keeps current
(`live`); text search over the backbone's ImageNet tags (`words`, `tags`, tagged by `tagging`),
or CLIP (`clip`), whichever is built (`text_search`).

`from embedding_assets.search import Searcher, search_text` works as documented; it loads FAISS
only when asked for, so importing a module of this package stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embedding_assets.search.searcher import Searcher
    from embedding_assets.search.text_search import search_text

__all__ = ["Searcher", "search_text"]


def __getattr__(name: str) -> Any:
    if name == "Searcher":
        from embedding_assets.search.searcher import Searcher

        return Searcher
    if name == "search_text":
        from embedding_assets.search.text_search import search_text

        return search_text
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
