"""A few new images go onto the maps fitted before, by the fitted models' `transform`, instead of
fitting every map again (UMAP and t-SNE cost minutes at 10^5 images; placing 1,000 images costs
seconds).

The fitted models are pickled beside the maps with the image ids they cover and a checksum of
each image's vector, so maps are fitted again, not placed onto, when the settings changed, an
image's vector changed, or the images placed since the last full fit pass `MAX_PLACED_SHARE` of
the set (placed images do not move the map; many of them should).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedding_assets.analytics.projection import Placer
from embedding_assets.common.ids import positions

MAX_PLACED_SHARE = 0.10


def checksums(vectors: np.ndarray) -> np.ndarray:
    """Each row's sum: tells a changed vector from an unchanged one (float64, (n,))."""
    return np.asarray(vectors, dtype=np.float64).sum(axis=1)


@dataclass(frozen=True)
class FittedMaps:
    """The maps' fitted models and what they cover."""

    settings: str  # fingerprint of the methods and settings the maps were made with
    ids: np.ndarray  # sorted image ids that have coordinates
    sums: np.ndarray  # `checksums` of their vectors, in the order of `ids`
    fitted: int  # images covered at the last full fit
    placers: dict[str, Placer]  # method -> its fitted model

    @classmethod
    def of(
        cls, settings: str, ids: np.ndarray, vectors: np.ndarray, placers: dict[str, Placer]
    ) -> FittedMaps:
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
        if not np.allclose(self.sums[pos[known]], checksums(vectors[known]), rtol=1e-5, atol=1e-3):
            return None
        new = np.flatnonzero(~known)
        placed = len(self.ids) - self.fitted + len(new)
        return new if placed <= MAX_PLACED_SHARE * len(ids) else None

    def with_placed(self, ids: np.ndarray, vectors: np.ndarray, rows: np.ndarray) -> FittedMaps:
        """The record after `rows` of `ids` were placed; maps now cover exactly `ids`."""
        pos = positions(self.ids, ids)
        sums = np.where(pos >= 0, self.sums[np.maximum(pos, 0)], 0.0)
        sums[rows] = checksums(vectors[rows])
        order = np.argsort(ids)
        return FittedMaps(self.settings, ids[order], sums[order], self.fitted, self.placers)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> FittedMaps | None:
        """The record at `path`; None when there is none or it does not load (another version
        of a library, a damaged file): the maps are then fitted again."""
        try:
            with path.open("rb") as f:
                found = pickle.load(f)  # our own file under the data directory
        except Exception:  # noqa: BLE001 - unpickling fails in many ways; all mean "fit again"
            return None
        return found if isinstance(found, cls) else None


@dataclass(frozen=True)
class Placed:
    """Maps with the new images placed: coordinates per method in the order of the ids given,
    how many were placed, a line saying so, and the record to store."""

    maps: dict[str, np.ndarray]
    images: int
    note: str
    fitted: FittedMaps


def place_new(
    fitted: FittedMaps | None,
    made_with: str,
    ids: np.ndarray,
    vectors: np.ndarray,
    stored: Callable[[], tuple[np.ndarray, dict[str, np.ndarray]]],
) -> Placed | None:
    """The maps of `ids` from the stored coordinates (`stored()`: sorted ids, {method: (n, 2)})
    and the fitted models for the images they lack; None when the maps must be fitted again."""
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
        maps[method] = coords = np.empty((len(ids), 2), np.float32)
        coords[known] = old_maps[method][pos]
        if len(rows):
            coords[rows] = placer.place(vectors[rows])
    note = (
        f"placed {len(rows)} new images on the maps fitted on {fitted.fitted} images "
        f"({time.perf_counter() - start:.1f} s); no map was fitted again"
    )
    return Placed(maps, len(rows), note, fitted.with_placed(ids, vectors, rows))
