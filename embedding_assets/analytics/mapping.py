"""The 2-D maps of an embedding set end to end: the new images placed on the maps fitted before
(`placing`) or every map fitted with its method (`projection`), stored in table `projections`,
and drawn (`maps`: a PNG per map and the HTML map) coloured by what is stored now, so the
pictures can be drawn again for new labels, clusters or flags without computing the maps."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedding_assets.analytics import store
from embedding_assets.analytics.maps import map_figure, plot_sample, thumbnail_uris, write_html_map
from embedding_assets.analytics.placing import ModelFile
from embedding_assets.analytics.projection import Projection, ProjectionParams, project
from embedding_assets.catalog.images import image_info
from embedding_assets.common import tables
from embedding_assets.common.figures import png_bytes, png_markdown
from embedding_assets.common.markdown import Markdown
from embedding_assets.embedding.sets import EmbeddingSet, read_parquet
from resources.paths import DataPaths

if TYPE_CHECKING:
    import pandas as pd

    from resources.gpu import DeviceChoice  # its module loads Dagster


@dataclass(frozen=True)
class MapSettings:
    """What the maps are computed with."""

    methods: list[str]
    params: ProjectionParams
    made_with: str  # fingerprint of the methods and settings, kept beside the fitted models


@dataclass(frozen=True)
class Drawing:
    """How the maps are drawn (points sampled per picture), not how they are computed."""

    plot_points: int  # per PNG
    html_points: int
    html_thumbnails_max: int  # inline thumbnails in the HTML map up to this many points
    seed: int


@dataclass(frozen=True)
class Maps:
    """The maps of a set: image ids, {method: float32 (n, 2)} in their order, and what their
    computation reports (empty when they were read back)."""

    ids: np.ndarray
    coords: dict[str, np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def stored(cls, db_path: Path, model_key: str, methods: list[str]) -> Maps:
        return cls(*store.read_projections(db_path, model_key, methods))


@dataclass(frozen=True)
class MapFiles:
    """Where the maps of one embedding set are drawn."""

    plot_dir: Path  # a PNG per method
    html_path: Path  # the interactive map
    model_key: str

    @classmethod
    def of(cls, paths: DataPaths, model_key: str) -> MapFiles:
        plot_dir = paths.ensure(paths.plots_dir / model_key)
        return cls(plot_dir, paths.plots_dir / f"map_{model_key}.html", model_key)

    def drawn(self, methods: list[str]) -> bool:
        files = [self.plot_dir / f"{m}.png" for m in methods] + [self.html_path]
        return all(f.is_file() for f in files)


@dataclass(frozen=True)
class Drawn:
    """What the drawing reports: a picture per map (`{method}_map`), the HTML map, what the
    points are coloured by, and the seconds it took (with reading the colours)."""

    pictures: dict[str, Markdown]
    html: Path
    coloured_by: str
    seconds: float


def compute_maps(
    emb_set: EmbeddingSet,
    paths: DataPaths,
    settings: MapSettings,
    device: Callable[[], AbstractContextManager[DeviceChoice]],
    log: Callable[[str], None],
) -> Maps:
    """Place the new images on the maps fitted before, else fit every map (`device`: acquired
    only to fit; `log`: a line per map as it is done), and store the rows."""
    ids, vectors = read_parquet(emb_set.parquet_path)
    key = emb_set.model_key
    models = ModelFile.under(paths.models_dir, "maps", key, settings.made_with)
    stored = partial(store.read_projections, paths.catalog_db, key, settings.methods)
    placed = models.placed(ids, vectors, stored)
    if placed is not None:
        coords, fitted = placed.maps, placed.fitted
        metadata: dict[str, Any] = {"placed": placed.note, "placed_images": placed.images}
        log(placed.note)
    else:
        projections, metadata = _fit(vectors, settings, device, log)
        placers = {m: p.placer for m, p in projections.items() if p.placer is not None}
        coords = {m: p.coords for m, p in projections.items()}
        whole = len(placers) == len(settings.methods)
        fitted = models.fitted(ids, vectors, placers) if whole else None
    start = time.perf_counter()
    store.write_projections(paths.catalog_db, key, ids, coords)
    if fitted is not None:  # after the rows: a record never covers rows that are not there
        models.save(fitted)
    metadata["write_seconds"] = round(time.perf_counter() - start, 3)
    return Maps(ids, coords, metadata)


def _fit(
    vectors: np.ndarray,
    settings: MapSettings,
    device: Callable[[], AbstractContextManager[DeviceChoice]],
    log: Callable[[str], None],
) -> tuple[dict[str, Projection], dict[str, Any]]:
    """Fit every map: ({method: Projection}, metadata)."""
    results = {}
    metadata: dict[str, Any] = {}
    with device() as choice:
        for method in settings.methods:
            r = project(vectors, method, settings.params, use_cuml=choice.cuml_available)
            results[method] = r
            log(f"{method}: {r.backend}, {r.seconds:.2f} s, fitted on {r.fitted_on}; {r.notes}")
            metadata[f"{method}_seconds"] = round(r.seconds, 3)
            metadata[f"{method}_details"] = {
                "backend": r.backend,
                "fitted_on": r.fitted_on,
                "notes": r.notes,
                **r.params,
            }
    metadata["device"] = choice.describe()
    return results, metadata


@dataclass(frozen=True)
class _Colours:
    """What the maps are coloured by, per image, as stored now."""

    info: pd.DataFrame  # path and current label
    clusters: np.ndarray | None  # int or None per image; None: no clusters stored
    scores: np.ndarray | None  # anomaly scores
    flagged: np.ndarray | None  # anomaly flags

    @classmethod
    def read(cls, db: Path, model_key: str, ids: np.ndarray) -> _Colours:
        cluster_ids = store.read_column(db, tables.CLUSTERS, "cluster", model_key, ids)
        scores = store.read_column(db, tables.ANOMALY_SCORES, "score", model_key, ids)
        flags = store.read_column(db, tables.ANOMALY_SCORES, "flagged", model_key, ids)
        return cls(
            image_info(db, ids),
            None if cluster_ids is None else _ints_or_none(cluster_ids),
            scores,
            None if flags is None else flags == 1.0,
        )


def draw_maps(db_path: Path, maps: Maps, files: MapFiles, drawing: Drawing) -> Drawn:
    """A PNG per map and the HTML map, coloured by what is stored now."""
    start = time.perf_counter()
    colours = _Colours.read(db_path, files.model_key, maps.ids)
    clusters, flagged = colours.clusters, colours.flagged
    pictures = {}
    drawn = plot_sample(len(maps.ids), drawing.plot_points, drawing.seed)
    for method, coords in maps.coords.items():
        fig = map_figure(
            coords[drawn],
            colours.info["label"].to_numpy(dtype=object)[drawn],
            None if clusters is None else clusters[drawn],
            None if flagged is None else flagged[drawn],
            f"{method.upper()} of {len(drawn)} images",
        )
        (files.plot_dir / f"{method}.png").write_bytes(png_bytes(fig))
        # The UI's metadata dialog is about 900 px wide: a lighter copy fits it uncropped.
        pictures[f"{method}_map"] = Markdown(png_markdown(fig, f"{method} map", dpi=55))
    html = _html_map(files, maps.coords, colours, drawing)
    coloured_by = ["label"] + (["cluster"] if clusters is not None else [])
    coloured_by += ["anomaly flag"] if flagged is not None else []
    return Drawn(pictures, html, ", ".join(coloured_by), round(time.perf_counter() - start, 3))


def _html_map(
    files: MapFiles, maps: dict[str, np.ndarray], colours: _Colours, drawing: Drawing
) -> Path:
    info = colours.info
    idx = plot_sample(len(info), drawing.html_points, drawing.seed)
    points = {
        "path": info["path"].to_numpy(dtype=object)[idx],
        "label": info["label"].to_numpy(dtype=object)[idx],
    }
    if colours.clusters is not None:
        points["cluster"] = colours.clusters[idx]
    if colours.scores is not None:
        points["anomaly score"] = colours.scores[idx]
        points["anomaly flag"] = colours.flagged[idx]
    thumbs = thumbnail_uris(points["path"]) if len(idx) <= drawing.html_thumbnails_max else None
    sampled = {method: coords[idx] for method, coords in maps.items()}
    title = f"Embedding maps ({files.model_key})"
    return write_html_map(files.html_path, sampled, points, title, thumbs)


def _ints_or_none(values: np.ndarray) -> np.ndarray:
    """Float column with NaN for missing -> object array of int / None (for categorical use)."""
    return np.array([None if np.isnan(v) else int(v) for v in values], dtype=object)
