"""A few new images go onto results fitted before (the 2-D maps, the k-means clusters) by the
fitted models themselves (`transform`, the nearest centre) instead of fitting everything again:
UMAP and t-SNE cost minutes at 10^5 images, placing 1,000 images costs seconds.

The fitted models are pickled beside the results with the image ids they cover and a checksum
of each image's vector, so results are fitted again, not placed onto, when the settings changed,
an image's vector changed, or the images placed since the last full fit pass
`MAX_PLACED_SHARE` of the set (placed images do not move a map or a centre; many of them
should).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from embedding_assets.common.ids import positions
from embedding_assets.common.neighbors import checksums, unchanged

MAX_PLACED_SHARE = 0.10


class Placeable(Protocol):
    """A fitted model that gives new rows their result (coordinates, a cluster id)."""

    def place(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Fitted:
    """A result's fitted models and what they cover."""

    settings: str  # fingerprint of the settings the result was made with
    ids: np.ndarray  # sorted image ids that have a result
    sums: np.ndarray  # `checksums` of their vectors, in the order of `ids`
    fitted: int  # images covered at the last full fit
    placers: dict[str, Placeable]  # result column (a map method, "cluster") -> its model

    @classmethod
    def of(
        cls, settings: str, ids: np.ndarray, vectors: np.ndarray, placers: dict[str, Placeable]
    ) -> Fitted:
        """Right after a full fit over `ids` (any order)."""
        order = np.argsort(ids)
        return cls(settings, ids[order], checksums(vectors)[order], len(ids), placers)

    def new_rows(self, settings: str, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray | None:
        """Rows of `ids` to place (those the maps lack), or None when the maps must be fitted
        again (other settings, a method without a model, a changed vector, too many placed)."""
        if settings != self.settings:
            return None
        pos = positions(self.ids, ids)
        known = pos >= 0
        if not unchanged(self.sums[pos[known]], vectors[known]):
            return None
        new = np.flatnonzero(~known)
        placed = len(self.ids) - self.fitted + len(new)
        return new if placed <= MAX_PLACED_SHARE * len(ids) else None

    def with_placed(self, ids: np.ndarray, vectors: np.ndarray) -> Fitted:
        """The record after the new rows of `ids` were placed: results now cover exactly `ids`
        (the others' vectors are those the record held: `new_rows` checked them)."""
        return replace(Fitted.of(self.settings, ids, vectors, self.placers), fitted=self.fitted)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Fitted | None:
        """The record at `path`; None when there is none or it does not load (another version
        of a library, a damaged file): the result is then fitted again."""
        try:
            with path.open("rb") as f:
                found = pickle.load(f)  # our own file under the data directory
        except Exception:  # noqa: BLE001 - unpickling fails in many ways; all mean "fit again"
            return None
        return found if isinstance(found, cls) else None


@dataclass(frozen=True)
class Placed:
    """Results with the new images placed: per column (a map method, "cluster") in the order
    of the ids given, how many were placed, a line saying so, and the record to store."""

    maps: dict[str, np.ndarray]
    images: int
    note: str
    fitted: Fitted


def place_new(
    fitted: Fitted | None,
    made_with: str,
    ids: np.ndarray,
    vectors: np.ndarray,
    stored: Callable[[], tuple[np.ndarray, dict[str, np.ndarray]]],
) -> Placed | None:
    """The results of `ids` from the stored ones (`stored()`: sorted ids, {column: (n, ...)})
    and the fitted models for the images they lack; None when they must be fitted again."""
    rows = None if fitted is None else fitted.new_rows(made_with, ids, vectors)
    if rows is None:
        return None
    try:
        old_ids, old_maps = stored()
    except KeyError:  # a method has no stored rows
        return None
    known = np.setdiff1d(np.arange(len(ids)), rows)
    pos = positions(old_ids, ids[known])
    if (pos < 0).any() or set(old_maps) != set(fitted.placers):
        return None
    start = time.perf_counter()
    maps = {}
    for method, placer in fitted.placers.items():
        old = old_maps[method]
        maps[method] = coords = np.empty((len(ids), *old.shape[1:]), old.dtype)
        coords[known] = old[pos]
        if len(rows):
            coords[rows] = placer.place(vectors[rows])
    note = (
        f"placed {len(rows)} new images by the models fitted on {fitted.fitted} images "
        f"({time.perf_counter() - start:.1f} s); nothing was fitted again"
    )
    return Placed(maps, len(rows), note, fitted.with_placed(ids, vectors))


@dataclass(frozen=True)
class ModelFile:
    """Where one result's fitted models are kept (under the data directory's models folder, per
    embedding set) and the settings they must have been made with to place new images."""

    path: Path
    made_with: str  # fingerprint of the settings

    @classmethod
    def under(cls, models_dir: Path, result: str, model_key: str, made_with: str) -> ModelFile:
        return cls(models_dir / result / f"{model_key}.pkl", made_with)

    def placed(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        stored: Callable[[], tuple[np.ndarray, dict[str, np.ndarray]]],
    ) -> Placed | None:
        """The results of `ids` with the new images placed (`place_new`); None: fit again."""
        return place_new(Fitted.load(self.path), self.made_with, ids, vectors, stored)

    def fitted(self, ids: np.ndarray, vectors: np.ndarray, placers: dict[str, Placeable]) -> Fitted:
        """The record of a full fit over `ids`, to `save`."""
        return Fitted.of(self.made_with, ids, vectors, placers)

    def save(self, fitted: Fitted) -> None:
        fitted.save(self.path)
