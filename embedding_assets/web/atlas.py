"""The /atlas page of `emb serve`: Apple's Embedding Atlas (the `embedding-atlas` package's
prebuilt viewer, MIT) over `map_points.parquet`, the file `map_export` writes.

The viewer runs its queries in DuckDB-WASM inside the browser, so the server only hands out
three things per projection (/atlas/umap/, /atlas/tsne/, /atlas/pca/): the viewer's own static
files, `data/metadata.json` (which columns are x, y, text, neighbours, the cluster names) and
`data/dataset.parquet` (the export, thumbnails as this server's URLs). It never opens the
catalog; a new export is picked up on the next page load (its mtime changes). Only the
package's static files are used: INSTALL below is enough.
"""

from __future__ import annotations

import importlib.util
import io
import threading
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from embedding_assets.analytics.map_export import METHODS
from embedding_assets.web import catalog_reads as reads
from embedding_assets.web.pages import Pages

REMEMBER_MAX = 200_000  # thumbnail paths kept in memory (about 200 bytes each)
NAMED_BY = ("label", "predicted", "tag")  # what names a cluster, in order
# The linked charts, cross-filtering each other and the map (a column with one value is left out)
CHARTS = [
    "label",
    "predicted",
    "probability",
    "cluster",
    "anomaly_score",
    "anomaly",
    "label_issue",
    "quality_flags",
    "outlier",
    "uniqueness",
    "tag",
]
# 0.24 dropped the WebGL 2 fallback: a browser without WebGPU (shader-f16) would draw nothing
INSTALL = "pip install --no-deps 'embedding-atlas>=0.22,<0.24'"


def viewer_dir() -> Path | None:
    """The viewer's static files inside the installed `embedding_atlas` package, found without
    importing it (its Python side needs libraries this page does not)."""
    spec = importlib.util.find_spec("embedding_atlas")
    if spec is None or not spec.submodule_search_locations:
        return None
    static = Path(next(iter(spec.submodule_search_locations))) / "static"
    return static if (static / "index.html").is_file() else None


@dataclass(frozen=True)
class Export:
    """One version of the export, read once: what the pages of each projection need."""

    stamp: tuple[int, int]  # (mtime_ns, size) of the file
    methods: tuple[str, ...]  # projections with coordinates
    labels: dict[str, list[dict]]  # cluster names per projection, one on each blob
    table: object  # pyarrow.Table
    colour_by: str | None  # the column the map is coloured by when it opens


def _colour_by(table) -> str | None:
    """The labels when most images have one, else the clusters (whose names the map shows),
    so that the map opens coloured rather than all one blue."""
    if table.num_rows and table.column("label").null_count <= table.num_rows / 2:
        return "label"
    return "cluster" if table.column("cluster").null_count < table.num_rows else None


def _cluster_names(table, method: str) -> list[dict]:
    """A name for each blob of each cluster on the map (a cluster k-means made of two groups
    the projection draws apart gets a name on each), at the blob's median position, kept a
    margin inside the points' extent so that the viewer does not cut it at an edge: the most
    common label there, else the most common prediction, else the backbone's most common tag
    (and the cluster's number)."""
    df = table.select(["cluster", f"{method}_x", f"{method}_y", "label", "predicted", "tag"])
    df = df.to_pandas().dropna(subset=["cluster", f"{method}_x"]).reset_index(drop=True)
    if df.empty:
        return []
    xy = df[[f"{method}_x", f"{method}_y"]].to_numpy(dtype=float)
    inside = [_inset(xy[:, 0]), _inset(xy[:, 1])]
    cells = _raster_cells(xy)
    names = []
    for cluster, rows in df.groupby("cluster", sort=True):
        for blob in _blobs(cells, rows.index.to_numpy()):
            part = rows.loc[blob]
            named = next((part[c].mode().iloc[0] for c in NAMED_BY if part[c].notna().any()), None)
            text = f"{named} ({cluster})" if named else f"cluster {cluster}"
            names.append(
                {
                    "x": inside[0](float(part[f"{method}_x"].median())),
                    "y": inside[1](float(part[f"{method}_y"].median())),
                    "text": text,
                    "content": text,  # what the viewer's label layer draws (0.22)
                    "priority": len(part),
                    "level": 0,  # shown at every zoom
                }
            )
    return names


def _raster_cells(xy):
    """Each point's cell (row, column) in a grid x grid raster over the whole map, finer with
    more points, so that a sparse cluster's gaps do not split it."""
    import numpy as np

    grid = int(np.clip(np.sqrt(len(xy)) / 2, 3, 24))
    lo, span = xy.min(axis=0), np.ptp(xy, axis=0)
    return np.minimum((grid * (xy - lo) / np.where(span > 0, span, 1)).astype(int), grid - 1)


def _blobs(cells, members, share: float = 0.2) -> list:
    """The groups of `members` (row positions in `cells`) that lie apart on the map: their
    occupied raster cells, joined when they touch; groups with at least `share` of the members
    (the largest always), largest first."""
    import numpy as np
    from scipy import ndimage

    mine = cells[members]
    occupied = np.zeros(cells.max(axis=0) + 1, dtype=bool)
    occupied[mine[:, 0], mine[:, 1]] = True
    regions, _ = ndimage.label(occupied, structure=np.ones((3, 3)))
    of_member = regions[mine[:, 0], mine[:, 1]]
    sizes = np.bincount(of_member)
    order = [r for r in np.argsort(-sizes, kind="stable") if r > 0 and sizes[r]]
    keep = [r for r in order if sizes[r] >= share * len(members)] or order[:1]
    return [members[of_member == r] for r in keep]


def _inset(values, margin: float = 0.08):
    """Clamps a coordinate to the values' range less `margin` of it at each end."""
    lo, hi = float(values.min()), float(values.max())
    pad = (hi - lo) * margin
    return lambda v: min(max(v, lo + pad), hi - pad)


def read_export(path: Path) -> Export:
    import pyarrow.parquet as pq

    stat = path.stat()
    table = pq.read_table(path)
    methods = tuple(
        m
        for m in METHODS
        if f"{m}_x" in table.column_names and table.column(f"{m}_x").null_count < table.num_rows
    )
    return Export(
        stamp=(stat.st_mtime_ns, stat.st_size),
        methods=methods,
        labels={m: _cluster_names(table, m) for m in methods},
        table=table,
        colour_by=_colour_by(table),
    )


class Atlas:
    """The current export, reloaded when the file changes, and its Parquet bytes per origin."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.path = pages.data.map_points
        self._export: Export | None = None
        self._bytes: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def current(self) -> Export:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            raise HTTPException(
                503, "no map export yet: materialize `map_export` (emb run does)"
            ) from None
        with self._lock:
            if self._export is None or self._export.stamp != (stat.st_mtime_ns, stat.st_size):
                try:
                    export = read_export(self.path)
                except (OSError, ValueError, KeyError) as exc:  # damaged, or not an export
                    raise HTTPException(
                        503,
                        f"{self.path.name} is not a readable map export ({exc}); "
                        "materialize `map_export` again",
                    ) from None
                self._export, self._bytes = export, {}
                if export.table.num_rows <= REMEMBER_MAX:  # thumbnails without a catalog read
                    ids = export.table.column("image_id").to_pylist()
                    paths = export.table.column("path").to_pylist()
                    shas = export.table.column("sha256").to_pylist()
                    self.pages.remember(
                        {i: reads.ImageRef(p, s) for i, p, s in zip(ids, paths, shas, strict=True)}
                    )
            return self._export

    def parquet(self, origin: str) -> bytes:
        """The export with each thumbnail as an absolute URL on `origin` (the viewer shows a
        value as an image only when it is a data: or http(s): URL)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        export = self.current()
        with self._lock:
            found = self._bytes.get(origin)
            if found is not None:
                return found
            table = export.table.drop_columns(["sha256"])
            at = table.column_names.index("thumbnail")
            urls = pc.binary_join_element_wise(
                pa.scalar(origin), table.column("thumbnail").cast(pa.string()), pa.scalar("")
            )
            table = table.set_column(at, "thumbnail", urls)
            sink = io.BytesIO()
            pq.write_table(table, sink, compression="zstd")
            self._bytes = {origin: sink.getvalue()}  # one origin at a time: bounded memory
            return self._bytes[origin]

    def metadata(self, method: str) -> dict:
        if method not in METHODS:  # not echoed back: the path is the caller's text
            raise HTTPException(404, f"no such projection: use one of {', '.join(METHODS)}")
        export = self.current()
        if method not in export.methods:
            raise HTTPException(
                404,
                f"no {method} map in the export (have: {', '.join(export.methods) or 'none'}); "
                f"add it to projections' methods",
            )
        data = {
            "id": "image_id",
            "projection": {"x": f"{method}_x", "y": f"{method}_y"},
            "text": "text",
            "image": "thumbnail",
        }
        if "neighbors" in export.table.column_names:
            data["neighbors"] = "neighbors"
        view = {"x": data["projection"]["x"], "y": data["projection"]["y"], "text": "text"}
        view |= {"image": "thumbnail", "neighbors": data.get("neighbors")}
        charts = {"include": CHARTS}
        if export.colour_by:  # the map chart's own spec, as the viewer builds it, plus a colour
            charts["embedding"] = {"data": {**view, "category": export.colour_by}}
        return {
            "props": {
                "data": data,
                "embeddingViewLabels": export.labels[method],
                "defaultChartsConfig": charts,
                "initialState": {"columnStyles": {"thumbnail": {"renderer": "image"}}},
            },
            "database": {"type": "wasm", "load": True},
        }


def _origin(request: Request) -> str:
    """This server as the browser reached it (HostGuard has already vetted the Host)."""
    return f"{request.url.scheme}://{request.headers.get('host', '127.0.0.1')}"


def mount_atlas(app: FastAPI, pages: Pages) -> Atlas:
    """Add /atlas and its data endpoints to `app`; without the viewer installed, /atlas says
    how to install it."""
    atlas = Atlas(pages)
    static = viewer_dir()

    @app.get("/atlas", include_in_schema=False)
    @app.get("/atlas/", include_in_schema=False)
    def atlas_home() -> Response:
        if static is None:
            return JSONResponse(
                {"detail": f"the Embedding Atlas viewer is not installed: {INSTALL}"},
                status_code=501,
            )
        methods = atlas.current().methods
        if not methods:
            raise HTTPException(503, "the map export has no coordinates: run `projections`")
        return RedirectResponse(f"/atlas/{methods[0]}/", status_code=307)

    @app.get("/atlas/{method}/data/metadata.json", tags=["pages"])
    def atlas_metadata(method: str) -> JSONResponse:
        """Which columns the viewer shows, and the cluster names, for one projection."""
        return JSONResponse(atlas.metadata(method), headers={"Cache-Control": "no-store"})

    @app.get("/atlas/{method}/data/dataset.parquet", tags=["pages"])
    def atlas_dataset(method: str, request: Request) -> Response:
        """The map export as Parquet (all projections; the metadata says which is x/y)."""
        atlas.metadata(method)  # 404 for a projection the export lacks
        return Response(
            atlas.parquet(_origin(request)),
            media_type="application/octet-stream",
            headers={"Cache-Control": "no-store"},
        )

    @app.get("/atlas/{method}/data/cache/{name}", include_in_schema=False)
    def atlas_cache(method: str, name: str) -> Response:
        return Response(status_code=404)  # the viewer then computes its layout itself

    if static is not None:
        for method in METHODS:
            app.mount(
                f"/atlas/{method}",
                StaticFiles(directory=static, html=True),
                name=f"atlas_{method}",
            )

    return atlas
