"""`clusters`, `anomaly_scores` and `projections`: what the embedding space looks like.

Thin wrappers over `analytics` (clustering, anomaly, projection, maps); results go to DuckDB
(tables of resources/ddl/040_analytics.sql, view `image_overview`), pictures to the metadata.
Each fingerprints its inputs (the embedding set's content and its config) and reuses its stored
rows when they were computed from the same ones.
"""

import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import numpy as np
from pydantic import Field

from embedding_assets.analytics import store
from embedding_assets.analytics.anomaly import AnomalyParams, placed_scores
from embedding_assets.analytics.anomaly import score as score_anomalies
from embedding_assets.analytics.clustering import (
    ClusterParams,
    cluster,
    faiss_gpu_id,
    parse_k,
    purity,
)
from embedding_assets.analytics.maps import map_figure, plot_sample, thumbnail_uris, write_html_map
from embedding_assets.analytics.projection import METHODS, Method, ProjectionParams, project
from embedding_assets.assets.reuse import Inputs, Report, materialize, previous_metadata
from embedding_assets.assets.score_tables import Scorer, Scores, score_table
from embedding_assets.catalog.images import image_info
from embedding_assets.common import markdown, tables
from embedding_assets.common.figures import histogram_markdown, png_bytes, png_markdown
from embedding_assets.common.fingerprints import (
    REUSED,
    Stored,
    fingerprint,
    labels_version,
    stored,
)
from embedding_assets.common.results import replace_rows
from embedding_assets.common.settings import page_url
from embedding_assets.embedding.sets import EmbeddingSet, current_set, read_parquet
from resources.gpu import GPU_POOL, GPUResource
from resources.paths import DataPaths
from resources.storage import StorageResource

if TYPE_CHECKING:
    import pandas as pd

    from embedding_assets.analytics.placing import Placed

MAPS_REUSED = (
    "maps reused (embeddings and settings unchanged); pictures drawn again for new labels, "
    "clusters or anomaly flags"
)
GROUP = "analytics"
OWNERS = ["team:ml-platform"]
PLOT_FIELDS = ("plot_points", "html_points", "html_thumbnails_max")  # drawing, not the maps


class ClustersConfig(dg.Config):
    k: str = Field(
        default="auto",
        description="Number of clusters, or `auto`: the best silhouette over k_min..k_max, "
        "trying no k below the number of label classes.",
    )
    k_min: int = Field(default=2, description="Smallest k tried by `auto`.")
    k_max: int = Field(default=20, description="Largest k tried by `auto`.")
    n_init: int = Field(default=3, description="k-means restarts (k-means++ init each).")
    sweep_samples: int = Field(
        default=10_000, description="`auto` fits each k on at most this many rows."
    )
    silhouette_samples: int = Field(
        default=5_000, description="Rows the silhouette is computed on (it is O(n^2))."
    )
    faiss_threshold: int = Field(
        default=200_000, description="From this many rows on, FAISS k-means replaces scikit-learn."
    )
    seed: int = Field(default=0, description="Random seed.")


class AnomalyConfig(dg.Config):
    n_estimators: int = Field(default=200, description="Isolation Forest trees.")
    max_samples: int = Field(default=256, description="Rows drawn to build each tree.")
    flag_fraction: float = Field(
        default=0.05, description="Share of images with the highest scores that get flagged."
    )
    n_jobs: int = Field(default=-1, description="Worker processes; -1 = all cores.")
    seed: int = Field(default=0, description="Random seed.")
    list_max: int = Field(
        default=100, description="Flagged images listed in the metadata (highest scores first)."
    )


class ProjectionsConfig(dg.Config):
    methods: list[Method] = Field(
        default=list(METHODS), description="Any of pca, umap, tsne (t-SNE by openTSNE)."
    )
    perplexity: float = Field(default=30.0, description="t-SNE perplexity (clamped below n/3).")
    n_neighbors: int = Field(default=15, description="UMAP neighbours (clamped below n).")
    min_dist: float = Field(default=0.1, description="UMAP min_dist.")
    pca_dims: int = Field(
        default=50, description="PCA to this many dimensions before UMAP/t-SNE; 0 = off."
    )
    max_fit_samples: int = Field(
        default=25_000,
        description="UMAP/t-SNE fit on a random sample of this size and transform the rest.",
    )
    n_jobs: int = Field(default=-1, description="Threads for UMAP/t-SNE; -1 = all cores.")
    seed: int = Field(default=0, description="Random seed.")
    plot_points: int = Field(default=50_000, description="Points drawn per PNG (a sample).")
    html_points: int = Field(default=20_000, description="Points in the HTML map (a sample).")
    html_thumbnails_max: int = Field(
        default=3_000, description="Inline thumbnails in the HTML map up to this many points."
    )


@dg.asset(
    deps=["embeddings"],
    group_name=GROUP,
    kinds={"scikitlearn", "faiss", "duckdb"},
    owners=OWNERS,
    pool=GPU_POOL,
)
def clusters(
    context: dg.AssetExecutionContext,
    config: ClustersConfig,
    storage: StorageResource,
    gpu: GPUResource,
) -> dg.MaterializeResult:
    """k-means cluster id per image (table `clusters`): mini-batch k-means with k-means++ and
    restarts, FAISS k-means for large inputs; `k: auto` picks k by a silhouette sweep."""
    parse_k(config.k)  # a bad k fails before any data is read
    db = storage.paths.catalog_db
    n_classes = _label_classes(db)

    def compute(emb_set: EmbeddingSet) -> Scores:
        ids, vectors = read_parquet(emb_set.parquet_path)
        known = image_info(db, ids)["label"].to_numpy(dtype=object)
        labels = np.array([lab if isinstance(lab, str) else None for lab in known], dtype=object)
        made_with = fingerprint(config.model_dump(mode="json"), n_classes)
        models = _Placing(storage.paths, tables.CLUSTERS, "cluster", emb_set.model_key, made_with)
        placed = models.placed(ids, vectors)
        if placed is not None:
            return _placed_clusters(ids, placed, labels)
        params = ClusterParams(**config.model_dump(), label_classes=n_classes)
        with gpu.acquire(context.log) as choice:
            result = cluster(vectors, params, faiss_gpu_id(choice.faiss_gpu_id))
        models.keep(ids, vectors, result.centres)
        metadata = {
            "images": len(ids),
            "k": result.k,
            "k_from": "silhouette sweep" if result.sweep else "config",
            "label_classes": n_classes,
            "purity": _float_or_none(purity(result.labels, labels)),
            "backend": result.backend,
            "device": choice.describe(),
            "silhouette": _float_or_none(result.silhouette),
            "sizes": dg.MetadataValue.json({str(k): v for k, v in result.sizes.items()}),
            "cluster_seconds": round(result.seconds, 3),
        }
        if result.sweep:
            metadata["silhouette_sweep"] = dg.MetadataValue.md(
                markdown.table(["k", "silhouette"], [[k, s] for k, s in result.sweep.items()])
            )
        return Scores(
            rows={"image_id": ids, "cluster": result.labels.astype(np.int32)},
            metadata=metadata,
            log=f"{len(ids)} images in {result.k} clusters ({result.backend}, "
            f"silhouette {result.silhouette}) in {result.seconds:.2f} s",
        )

    return score_table(
        context,
        storage,
        tables.CLUSTERS,
        config,
        Scorer(compute, lambda emb_set: {"clusters": _cluster_table(db, emb_set.model_key)}),
        more=(n_classes,),
    )


@dataclass(frozen=True)
class _Placing:
    """Where the fitted model of one per-image result of the current set is kept (k-means
    centres, the Isolation Forest), and what it was fitted with: while the set only gained a
    few images, they get their result from it and the others keep theirs
    (analytics/placing.py)."""

    paths: DataPaths
    table: str
    column: str
    key: str
    made_with: str

    @property
    def file(self) -> Path:
        return self.paths.models_dir / self.table / f"{self.key}.pkl"

    def placed(self, ids: np.ndarray, vectors: np.ndarray) -> "Placed | None":
        from embedding_assets.analytics.placing import Fitted, place_new

        def stored() -> tuple[np.ndarray, dict[str, np.ndarray]]:
            db = self.paths.catalog_db
            rows = store.rows_with_labels(db, self.table, self.key, [self.column])
            return rows["image_id"].to_numpy(np.int64), {self.column: rows[self.column].to_numpy()}

        placed = place_new(Fitted.load(self.file), self.made_with, ids, vectors, stored)
        if placed is not None:
            placed.fitted.save(self.file)
        return placed

    def keep(self, ids: np.ndarray, vectors: np.ndarray, model: object) -> None:
        from embedding_assets.analytics.placing import Fitted

        Fitted.of(self.made_with, ids, vectors, {self.column: model}).save(self.file)


def _placed_clusters(ids: np.ndarray, placed: "Placed", labels: np.ndarray) -> Scores:
    found = placed.maps["cluster"]
    return Scores(
        rows={"image_id": ids, "cluster": found.astype(np.int32)},
        metadata={
            "images": len(ids),
            "placed": placed.note,
            "placed_images": placed.images,
            "purity": _float_or_none(purity(found, labels)),
        },
        log=placed.note,
    )


@dg.asset(deps=["embeddings"], group_name=GROUP, kinds={"scikitlearn", "duckdb"}, owners=OWNERS)
def anomaly_scores(
    context: dg.AssetExecutionContext, config: AnomalyConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """Isolation Forest score per image (table `anomaly_scores`, higher = more unusual) and the
    top `flag_fraction` flagged; the flagged images are listed in the metadata."""
    db = storage.paths.catalog_db

    def compute(emb_set: EmbeddingSet) -> Scores:
        ids, vectors = read_parquet(emb_set.parquet_path)
        params = AnomalyParams(**config.model_dump(exclude={"list_max"}))
        made_with = fingerprint(config.model_dump(mode="json", exclude={"list_max"}))
        forest = _Placing(
            storage.paths, tables.ANOMALY_SCORES, "score", emb_set.model_key, made_with
        )
        placed = forest.placed(ids, vectors)
        if placed is None:
            result = score_anomalies(vectors, params)
            forest.keep(ids, vectors, result.forest)
        else:  # the new images scored by the stored forest; the top fraction taken again
            result = placed_scores(placed.maps["score"], params.flag_fraction)
            context.log.info(placed.note)
        flagged = int(result.flagged.sum())
        return Scores(
            rows={"image_id": ids, "score": result.scores, "flagged": result.flagged},
            metadata={
                "images": len(ids),
                "flagged": flagged,
                "flag_fraction": config.flag_fraction,
                "threshold": _float_or_none(result.threshold),
                "score_mean": round(float(result.scores.mean()), 4),
                "score_max": round(float(result.scores.max()), 4),
                "score_histogram": dg.MetadataValue.md(
                    histogram_markdown(
                        result.scores,
                        "scores",
                        result.threshold,
                        "anomaly score (higher = more unusual)",
                    )
                ),
                "fit_seconds": round(result.fit_seconds, 3),
                "score_seconds": round(result.score_seconds, 3),
                **({"placed": placed.note, "placed_images": placed.images} if placed else {}),
            },
            log=f"Scored {len(ids)} images (fit {result.fit_seconds:.2f} s, "
            f"score {result.score_seconds:.2f} s); flagged {flagged}",
        )

    return score_table(
        context,
        storage,
        tables.ANOMALY_SCORES,
        config,
        Scorer(
            compute,
            lambda emb_set: {
                "flagged_images": _flagged_table(db, emb_set.model_key, config.list_max)
            },
        ),
    )


@dg.asset(
    deps=["embeddings", clusters, anomaly_scores],
    group_name=GROUP,
    kinds={"scikitlearn", "duckdb", "html"},
    owners=OWNERS,
    pool=GPU_POOL,
)
def projections(
    context: dg.AssetExecutionContext,
    config: ProjectionsConfig,
    storage: StorageResource,
    gpu: GPUResource,
) -> dg.MaterializeResult:
    """2-D maps (PCA, UMAP, t-SNE) of the embeddings in table `projections`, each drawn as a
    PNG coloured by label, cluster and anomaly flag, plus one interactive HTML map. The maps
    are computed again only when the embeddings or their settings change; the pictures are
    drawn again when labels, clusters or anomaly flags change."""
    methods = list(dict.fromkeys(Method(m).value for m in config.methods))
    if not methods:
        raise ValueError(f"methods=[]: name at least one of {', '.join(METHODS)}")
    paths = storage.paths
    db = paths.catalog_db
    emb_set = current_set(db)
    key = emb_set.model_key
    settings = config.model_dump(mode="json", exclude={"methods"})  # a default is not an Enum
    computed_from = {k: v for k, v in settings.items() if k not in PLOT_FIELDS}
    content = emb_set.content_version()
    inputs = Inputs(tables.PROJECTIONS, (content, methods, computed_from), scope=key)
    drawn_from = [stored(db, table, key) for table in (tables.CLUSTERS, tables.ANOMALY_SCORES)]
    version = fingerprint(
        inputs.fingerprint,
        [settings[k] for k in PLOT_FIELDS],
        labels_version(db),
        [s.fingerprint if s else None for s in drawn_from],
    )
    files = _MapFiles(paths.ensure(paths.plots_dir / key), paths.plots_dir / f"map_{key}.html", key)
    coords_kept = inputs.unchanged(db) is not None

    def kept(_: Stored) -> Report | None:
        drawn_files = [files.plot_dir / f"{m}.png" for m in methods] + [files.html_path]
        drawn = previous_metadata(context, version) and all(f.is_file() for f in drawn_files)
        return Report(version=version) if drawn else None

    def compute() -> Report:
        if coords_kept:
            ids, maps = store.read_projections(db, key, methods)
            metadata: dict = {REUSED: MAPS_REUSED}
        else:
            ids, maps, metadata = _compute_maps(context, config, methods, emb_set, gpu, paths)
        start = time.perf_counter()
        metadata.update(
            _draw_maps(ids, maps, _Colours.read(db, key, ids), files, config),
            model_key=key,
            images=len(ids),
            plot_seconds=round(time.perf_counter() - start, 3),
        )
        return Report(metadata, version)

    return materialize(context, db, inputs, compute, kept)


def _compute_maps(
    context: dg.AssetExecutionContext,
    config: ProjectionsConfig,
    methods: list[str],
    emb_set: EmbeddingSet,
    gpu: GPUResource,
    paths: DataPaths,
) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """Place the new images on the maps fitted before (analytics/placing.py) or project with
    each method, and store the rows: (ids, {method: coords}, metadata)."""
    import pyarrow as pa

    from embedding_assets.analytics.placing import Fitted, place_new

    ids, vectors = read_parquet(emb_set.parquet_path)
    settings = config.model_dump(mode="json", exclude={"methods"})
    made_with = fingerprint(methods, {k: v for k, v in settings.items() if k not in PLOT_FIELDS})
    fitted_file = paths.models_dir / "maps" / f"{emb_set.model_key}.pkl"
    stored = partial(store.read_projections, paths.catalog_db, emb_set.model_key, methods)
    placed = place_new(Fitted.load(fitted_file), made_with, ids, vectors, stored)
    if placed is not None:
        maps, fitted = placed.maps, placed.fitted
        metadata = {"placed": placed.note, "placed_images": placed.images}
        context.log.info(placed.note)
    else:
        maps, metadata, choice = _fit_maps(context, config, methods, vectors, gpu)
        metadata["device"] = choice.describe()
        placers = {m: maps[m].placer for m in methods if maps[m].placer is not None}
        maps = {m: r.coords for m, r in maps.items()}
        whole = len(placers) == len(methods)
        fitted = Fitted.of(made_with, ids, vectors, placers) if whole else None
    start = time.perf_counter()
    n = len(ids)
    rows = pa.table(
        {
            "image_id": pa.array(np.tile(ids, len(maps)), pa.int64()),
            "model_key": pa.array([emb_set.model_key] * (n * len(maps)), pa.string()),
            "method": pa.array(np.repeat(list(maps), n), pa.string()),
            "x": pa.array(np.concatenate([c[:, 0] for c in maps.values()]), pa.float32()),
            "y": pa.array(np.concatenate([c[:, 1] for c in maps.values()]), pa.float32()),
        }
    )
    replace_rows(paths.catalog_db, tables.PROJECTIONS, emb_set.model_key, rows)
    if fitted is not None:
        fitted.save(fitted_file)
    metadata["write_seconds"] = round(time.perf_counter() - start, 3)
    return ids, maps, metadata


def _fit_maps(
    context: dg.AssetExecutionContext,
    config: ProjectionsConfig,
    methods: list[str],
    vectors: np.ndarray,
    gpu: GPUResource,
) -> tuple[dict, dict, Any]:
    """Fit every map: ({method: Projection}, metadata, the device choice)."""
    params = ProjectionParams(
        perplexity=config.perplexity,
        n_neighbors=config.n_neighbors,
        min_dist=config.min_dist,
        pca_dims=config.pca_dims,
        max_fit_samples=config.max_fit_samples,
        seed=config.seed,
        n_jobs=config.n_jobs,
    )
    results = {}
    metadata: dict = {}
    with gpu.acquire(context.log) as choice:
        for method in methods:
            results[method] = r = project(vectors, method, params, use_cuml=choice.cuml_available)
            context.log.info(
                f"{method}: {r.backend}, {r.seconds:.2f} s, fitted on {r.fitted_on}; {r.notes}"
            )
            metadata[f"{method}_seconds"] = round(r.seconds, 3)
            metadata[f"{method}_details"] = dg.MetadataValue.json(
                {"backend": r.backend, "fitted_on": r.fitted_on, "notes": r.notes, **r.params}
            )
    return results, metadata, choice


@dataclass(frozen=True)
class _Colours:
    """What the maps are coloured by, per image, as stored now."""

    info: "pd.DataFrame"  # path and current label
    clusters: np.ndarray | None  # int or None per image; None: no clusters stored
    scores: np.ndarray | None  # anomaly scores
    flagged: np.ndarray | None  # anomaly flags

    @classmethod
    def read(cls, db: Path, model_key: str, ids: np.ndarray) -> "_Colours":
        cluster_ids = store.read_column(db, tables.CLUSTERS, "cluster", model_key, ids)
        scores = store.read_column(db, tables.ANOMALY_SCORES, "score", model_key, ids)
        flags = store.read_column(db, tables.ANOMALY_SCORES, "flagged", model_key, ids)
        return cls(
            image_info(db, ids),
            None if cluster_ids is None else _ints_or_none(cluster_ids),
            scores,
            None if flags is None else flags == 1.0,
        )


@dataclass(frozen=True)
class _MapFiles:
    """Where the maps of one embedding set are drawn."""

    plot_dir: Path  # a PNG per method
    html_path: Path  # the interactive map
    model_key: str


def _draw_maps(
    ids: np.ndarray,
    maps: dict[str, np.ndarray],
    colours: _Colours,
    files: _MapFiles,
    config: ProjectionsConfig,
) -> dict:
    """A PNG per map and the HTML map, coloured by what is stored now; their metadata."""
    clusters_col, flagged = colours.clusters, colours.flagged
    metadata: dict = {}
    drawn = plot_sample(len(ids), config.plot_points, config.seed)
    for method, coords in maps.items():
        fig = map_figure(
            coords[drawn],
            colours.info["label"].to_numpy(dtype=object)[drawn],
            None if clusters_col is None else clusters_col[drawn],
            None if flagged is None else flagged[drawn],
            f"{method.upper()} of {len(drawn)} images",
        )
        (files.plot_dir / f"{method}.png").write_bytes(png_bytes(fig))
        # The UI's metadata dialog is about 900 px wide: a lighter copy fits it uncropped.
        metadata[f"{method}_map"] = dg.MetadataValue.md(png_markdown(fig, f"{method} map", dpi=55))
    html = _html_map(files, maps, colours, config)
    metadata.update(
        {
            "html_map": dg.MetadataValue.path(str(html)),
            "map_in_browser": dg.MetadataValue.url(page_url("map")),
            "atlas_in_browser": dg.MetadataValue.url(page_url("atlas/")),  # after map_export
            "png_dir": dg.MetadataValue.path(str(files.plot_dir)),
            "coloured_by": ", ".join(
                ["label"]
                + (["cluster"] if clusters_col is not None else [])
                + (["anomaly flag"] if flagged is not None else [])
            ),
        }
    )
    return metadata


def _html_map(
    files: _MapFiles, maps: dict[str, np.ndarray], colours: _Colours, config: ProjectionsConfig
) -> Path:
    info = colours.info
    idx = plot_sample(len(info), config.html_points, config.seed)
    points = {
        "path": info["path"].to_numpy(dtype=object)[idx],
        "label": info["label"].to_numpy(dtype=object)[idx],
    }
    if colours.clusters is not None:
        points["cluster"] = colours.clusters[idx]
    if colours.scores is not None:
        points["anomaly score"] = colours.scores[idx]
        points["anomaly flag"] = colours.flagged[idx]
    thumbs = thumbnail_uris(points["path"]) if len(idx) <= config.html_thumbnails_max else None
    sampled = {method: coords[idx] for method, coords in maps.items()}
    title = f"Embedding maps ({files.model_key})"
    return write_html_map(files.html_path, sampled, points, title, thumbs)


def _label_classes(db: Path) -> int:
    """How many classes the current labels of usable images name."""
    from resources.duckdb_store import connect

    with connect(db, read_only=True) as con:
        return con.execute(
            f"SELECT count(DISTINCT l.label) FROM {tables.CURRENT_LABELS} l "
            f"JOIN {tables.USABLE_IMAGES} USING (image_id)"
        ).fetchone()[0]


def _ints_or_none(values: np.ndarray) -> np.ndarray:
    """Float column with NaN for missing -> object array of int / None (for categorical use)."""
    return np.array([None if np.isnan(v) else int(v) for v in values], dtype=object)


def _cluster_table(db: Path, model_key: str) -> dg.MetadataValue:
    """Per stored cluster: size, labeled images, most common current label and its share."""
    df = store.rows_with_labels(db, tables.CLUSTERS, model_key, ["cluster"])
    rows = []
    for cid, group in df.groupby("cluster", sort=True):
        known = group["label"].dropna()
        top = known.value_counts()
        top_label, share = (top.index[0], top.iloc[0] / len(known)) if len(top) else ("", math.nan)
        rows.append(
            [cid, len(group), len(known), top_label, "" if math.isnan(share) else f"{share:.0%}"]
        )
    header = ["cluster", "size", "labeled", "top label", "top label share"]
    return dg.MetadataValue.md(markdown.table(header, rows))


def _flagged_table(db: Path, model_key: str, list_max: int) -> dg.MetadataValue:
    """The stored flagged images, highest score first, with their current labels."""
    import pandas as pd

    df = store.rows_with_labels(db, tables.ANOMALY_SCORES, model_key, ["score", "flagged"])
    flagged = df[df["flagged"]].sort_values("score", ascending=False, kind="stable")
    listed = [
        [r.image_id, r.path, "" if pd.isna(r.label) else r.label, f"{r.score:.4f}"]
        for r in flagged.head(list_max).itertuples()
    ]
    table = markdown.table(["image_id", "path", "label", "score"], listed)
    if len(flagged) > len(listed):
        more = len(flagged) - len(listed)
        table += f"\n\n…and {more} more: `select * from image_overview where anomaly_flag`"
    return dg.MetadataValue.md(table)


def _float_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def _one_good_row_per_image(storage: StorageResource, table: str) -> dg.AssetCheckResult:
    """Passes when `table` holds exactly one row without NULL/NaN values per image of the
    current embedding set."""
    db = storage.paths.catalog_db
    emb_set = current_set(db)
    c = store.row_counts(db, table, emb_set.model_key)
    passed = c["rows"] == c["images"] == emb_set.count and c["bad_values"] == 0
    return dg.AssetCheckResult(passed=passed, metadata={"embedded_images": emb_set.count, **c})


@dg.asset_check(
    asset=clusters, blocking=True, description="Every embedded image has exactly one cluster."
)
def clusters_cover_all_images(storage: StorageResource) -> dg.AssetCheckResult:
    return _one_good_row_per_image(storage, tables.CLUSTERS)


@dg.asset_check(
    asset=anomaly_scores, blocking=True, description="One finite score per embedded image."
)
def anomaly_scores_are_finite(storage: StorageResource) -> dg.AssetCheckResult:
    return _one_good_row_per_image(storage, tables.ANOMALY_SCORES)


@dg.asset_check(
    asset=projections, description="Each method has one finite (x, y) per embedded image."
)
def projection_rows_match(storage: StorageResource) -> dg.AssetCheckResult:
    db = storage.paths.catalog_db
    emb_set = current_set(db)
    with storage.connect(read_only=True) as con:
        per_method = dict(
            con.execute(
                "SELECT method, count(DISTINCT image_id) FILTER (NOT isnan(x) AND NOT isnan(y)) "
                f"= count(*) AND count(*) = ? FROM {tables.PROJECTIONS} WHERE model_key = ? "
                "GROUP BY 1",
                [emb_set.count, emb_set.model_key],
            ).fetchall()
        )
    passed = bool(per_method) and all(per_method.values())
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "embedded_images": emb_set.count,
            "methods_ok": dg.MetadataValue.json(per_method),
        },
    )
