"""What the curation assets show beside their tables: the top rows, with paths, as markdown
tables read back from DuckDB. Metadata comes back as plain values, which Dagster shows as they
are, and `Markdown`, which the asset layer hands over as markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedding_assets.common import markdown, tables
from embedding_assets.common.markdown import Markdown
from embedding_assets.common.settings import page_url

if TYPE_CHECKING:
    import pandas as pd

TOP_ROWS = 10  # rows of each top table


def cell(value: object) -> object:
    """A table cell: floats to 4 decimals, the rest as it is."""
    return round(float(value), 4) if isinstance(value, float | np.floating) else value


def top_table(df: pd.DataFrame, columns: list[str]) -> Markdown:
    """The first TOP_ROWS rows of `df`'s `columns`."""
    rows = [[cell(v) for v in r] for r in df[columns].head(TOP_ROWS).itertuples(index=False)]
    return Markdown(markdown.table(columns, rows))


def read(db: Path, sql: str, params: list | None = None) -> pd.DataFrame:
    from resources.duckdb_store import connect

    with connect(db, read_only=True) as con:
        return con.execute(sql, params or []).df()


def most_unique(db: Path, model_key: str) -> dict[str, Markdown]:
    """The most unique images of the set, from the stored `uniqueness` rows."""
    top = read(
        db,
        "SELECT u.image_id, u.uniqueness, u.representativeness, i.path "
        f"FROM {tables.UNIQUENESS} u JOIN {tables.IMAGES} i USING (image_id) "
        "WHERE u.model_key = ? ORDER BY u.uniqueness DESC",
        [model_key],
    )
    return {"most_unique": top_table(top, ["image_id", "uniqueness", "representativeness", "path"])}


def furthest(db: Path, model_key: str) -> dict[str, Markdown]:
    """The images furthest from their neighbours, from the stored `outliers` rows, each with
    its thumbnail as `emb serve` shows it."""
    top = read(
        db,
        "SELECT o.image_id, o.distance, o.flagged, i.path "
        f"FROM {tables.OUTLIERS} o JOIN {tables.IMAGES} i USING (image_id) "
        "WHERE o.model_key = ? ORDER BY o.distance DESC",
        [model_key],
    )
    rows = [
        [
            f"![{r.image_id}]({page_url(f'thumb/{r.image_id}')})",
            r.image_id,
            cell(r.distance),
            bool(r.flagged),
            r.path,
        ]
        for r in top.head(TOP_ROWS).itertuples(index=False)
    ]
    columns = ["thumbnail (emb serve)", "image_id", "distance", "flagged", "path"]
    return {"furthest": Markdown(markdown.table(columns, rows))}


@dataclass(frozen=True)
class SplitLeaks:
    """Near-duplicate pairs across train / val / test splits, and the images per split."""

    pairs: int
    images_per_split: dict[str, int]
    top: Markdown  # the most similar pairs with their paths

    @property
    def description(self) -> str | None:
        if not self.pairs:
            return None
        return (
            f"{self.pairs} near-duplicate pairs cross splits: see "
            '`emb sql "select * from split_leaks"` and remove or move one of each pair.'
        )


def split_leaks(db: Path, model_key: str) -> SplitLeaks:
    """The set's near-duplicate pairs that cross splits (view `split_leaks`)."""
    leaks = read(
        db,
        f"SELECT l.*, ia.path AS path_a, ib.path AS path_b FROM {tables.SPLIT_LEAKS} l "
        f"JOIN {tables.IMAGES} ia ON ia.image_id = l.image_id_a "
        f"JOIN {tables.IMAGES} ib ON ib.image_id = l.image_id_b "
        "WHERE l.model_key = ? ORDER BY l.similarity DESC",
        [model_key],
    )
    splits = read(db, f"SELECT split, count(*) AS n FROM {tables.SPLITS} GROUP BY 1 ORDER BY 1")
    return SplitLeaks(
        len(leaks),
        {str(s): int(n) for s, n in zip(splits["split"], splits["n"], strict=True)},
        top_table(leaks, ["split_a", "split_b", "similarity", "path_a", "path_b"]),
    )
