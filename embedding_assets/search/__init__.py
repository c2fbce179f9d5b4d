"""Similarity search: FAISS indexes over the embeddings (`faiss_index`: choose, build, tune,
measure), building or updating one version per run (`builds`), versioned index files and their
publication (`versions`), what serving needs of a version (`snapshot`), queries over it
(`searcher`) and the copy a server keeps current (`live`).

`from embedding_assets.search import Searcher` works as documented; it loads FAISS only when
asked for, so importing a module of this package stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embedding_assets.search.searcher import Searcher

__all__ = ["Searcher"]


def __getattr__(name: str) -> Any:
    if name == "Searcher":
        from embedding_assets.search.searcher import Searcher

        return Searcher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
