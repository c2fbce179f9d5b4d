"""Run configuration of `clusters`, `anomaly_scores` and `projections`, and the settings
records of the analytics functions, built from it in one place."""

import dagster as dg
from pydantic import Field

from embedding_assets.analytics.anomaly import AnomalyParams
from embedding_assets.analytics.clustering import ClusterParams
from embedding_assets.analytics.mapping import Drawing
from embedding_assets.analytics.projection import METHODS, Method, ProjectionParams

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

    def params(self, label_classes: int) -> ClusterParams:
        return ClusterParams(**self.model_dump(), label_classes=label_classes)


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

    def params(self) -> AnomalyParams:
        return AnomalyParams(**self.model_dump(exclude={"list_max"}))

    def scoring(self) -> dict:
        """The settings the scores are made with (the listing is not one of them)."""
        return self.model_dump(mode="json", exclude={"list_max"})


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

    def method_names(self) -> list[str]:
        """The methods asked for, each once, in their order; an error naming them when none."""
        methods = list(dict.fromkeys(Method(m).value for m in self.methods))
        if not methods:
            raise ValueError(f"methods=[]: name at least one of {', '.join(METHODS)}")
        return methods

    def settings(self) -> dict:
        """Every setting but the methods, as JSON (a default is not an Enum)."""
        return self.model_dump(mode="json", exclude={"methods"})

    def map_settings(self) -> dict:
        """The settings the maps are computed with; the others only draw them."""
        return {k: v for k, v in self.settings().items() if k not in PLOT_FIELDS}

    def plot_settings(self) -> list:
        settings = self.settings()
        return [settings[k] for k in PLOT_FIELDS]

    def params(self) -> ProjectionParams:
        return ProjectionParams(
            perplexity=self.perplexity,
            n_neighbors=self.n_neighbors,
            min_dist=self.min_dist,
            pca_dims=self.pca_dims,
            max_fit_samples=self.max_fit_samples,
            seed=self.seed,
            n_jobs=self.n_jobs,
        )

    def drawing(self) -> Drawing:
        return Drawing(self.plot_points, self.html_points, self.html_thumbnails_max, self.seed)
